"""Portable runs and `genrec export`: a run or its export moved to another place (original run,
dataset and, for merged exports, base model gone) loads and ranks as before."""

import json
import shutil

import pytest
import torch

from genrec import run_dir as layout
from genrec.cli import main as cli
from genrec.errors import DataError
from genrec.inference.recommender import GenRecommender
from genrec.testing import make_tiny_run

HISTORIES = [["m1", "m3", "m5"], ["m0", "m2"], ["m7", "m9", "m11", "m13"]]
ITEM_ADAPTER = ["tasks.mix={sequence: 1.0, item2index: 0.5}", "model.item_embeddings=[behavior]",
                "training.learning_rate=0.05"]


def top10(rec):
    return [[r.item_id for r in rec.recommend(h, k=10)] for h in HISTORIES]


def scores(rec):
    return [[r.score for r in rec.recommend(h, k=10)] for h in HISTORIES]


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_lora")
    make_tiny_run(root, steps=4)
    return root


def test_run_card_keeps_peft_metadata_and_records_base_and_catalog(lora_root):
    run = lora_root / "runs" / "tiny"
    meta, body = layout.split_card((run / layout.CARD).read_text())
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert {"lora", "genrec", "recommendation"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local path is no hub id
    assert body.startswith("# genrec recommender: tiny") and "- PEFT " in body
    assert (run / layout.CATALOG).read_bytes() == (lora_root / "data" / "items.jsonl").read_bytes()
    base = json.loads((run / layout.BASE_MODEL).read_text())
    assert base["kind"] == "local" and base["path"] == str((lora_root / "base").resolve())


def test_export_refuses_bad_inputs(lora_root, tmp_path, capsys):
    assert cli(["export", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a finished genrec run" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert cli(["export", str(lora_root / "runs" / "tiny"), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary directory left behind


def test_exports_move_and_load_without_run_dataset_or_base(lora_root, tmp_path):
    """Deletes the module's run, dataset and base model: keep it the last test using ``lora_root``."""
    run = lora_root / "runs" / "tiny"
    original = GenRecommender.from_pretrained(run, device="cpu")
    want, want_scores = top10(original), scores(original)
    assert cli(["export", str(run), "--out", str(tmp_path / "a")]) == 0
    assert cli(["export", str(run), "--out", str(tmp_path / "m"), "--merge"]) == 0
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file() and not (tmp_path / "a" / "config.json").exists()
    assert (tmp_path / "m" / "model.safetensors").is_file() and not (tmp_path / "m" / layout.ADAPTER_CONFIG).exists()
    moved = tmp_path / "elsewhere"
    for name in ("a", "m"):
        shutil.copytree(tmp_path / name, moved / name)
        shutil.rmtree(tmp_path / name)
    shutil.copytree(run, moved / "run", ignore=shutil.ignore_patterns(layout.CHECKPOINTS))  # a plain copy moves too
    shutil.rmtree(lora_root / "runs")
    shutil.rmtree(lora_root / "data")
    shutil.rmtree(lora_root / "tok")
    assert top10(GenRecommender.from_pretrained(moved / "run", device="cpu")) == want  # catalog from the run
    adapter = GenRecommender.from_pretrained(moved / "a", device="cpu")  # base still at its recorded path
    assert top10(adapter) == want and adapter.data_dir is None
    assert torch.allclose(torch.tensor(scores(adapter)), torch.tensor(want_scores), atol=1e-4)
    shutil.rmtree(lora_root / "base")
    merged = GenRecommender.from_pretrained(moved / "m", device="cpu")
    assert top10(merged) == want
    assert torch.allclose(torch.tensor(scores(merged)), torch.tensor(want_scores), atol=1e-4)
    # Plain transformers loads the merged export: same logits as genrec's merged model.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(moved / "m")
    plain = AutoModelForCausalLM.from_pretrained(moved / "m").eval()
    prompt = torch.tensor([merged.prepare({"history": HISTORIES[0]}).prompt])
    assert len(tok) == merged.model.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=prompt).logits, merged.model(input_ids=prompt).logits, atol=1e-5)
    meta, body = layout.split_card((moved / "m" / layout.CARD).read_text())
    assert meta["library_name"] == "transformers" and "genrec" in meta["tags"] and "(export)" in body
    assert json.loads((moved / "m" / layout.EXPORT).read_text())["config"]["merge"] is True
    # genrec recommend needs no dataset directory.
    assert cli(["recommend", "--model", str(moved / "m"), "--history", *HISTORIES[0], "--json"]) == 0


def test_old_run_without_catalog_loads_with_data(tmp_path, capsys):
    root = tmp_path / "old"
    make_tiny_run(root, steps=2)
    run = root / "runs" / "tiny"
    (run / layout.CATALOG).unlink()  # as runs were written before the catalog travelled with them
    (run / layout.BASE_MODEL).unlink()
    want = top10(GenRecommender.from_pretrained(run, device="cpu"))  # recorded dataset path still there
    shutil.move(root / "data", tmp_path / "data")
    with pytest.raises(DataError, match="--data DIR"):
        GenRecommender.from_pretrained(run, device="cpu")
    assert top10(GenRecommender.from_pretrained(run, device="cpu", data_dir=tmp_path / "data")) == want
    assert cli(["recommend", "--model", str(run), "--history", "m1", "m3", "--data", str(tmp_path / "data")]) == 0
    assert cli(["export", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "--data DIR" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert cli(["export", str(run), "--out", str(tmp_path / "x"), "--data", str(tmp_path / "data"), "--merge"]) == 0
    shutil.rmtree(tmp_path / "data")
    assert top10(GenRecommender.from_pretrained(tmp_path / "x", device="cpu")) == want


def test_item_adapter_run_exports_merged(tmp_path):
    run = make_tiny_run(tmp_path / "seq", steps=4, overrides=ITEM_ADAPTER)
    want = top10(GenRecommender.from_pretrained(run, device="cpu"))
    assert cli(["export", str(run), "--out", str(tmp_path / "m"), "--merge"]) == 0
    shutil.rmtree(tmp_path / "seq")
    merged = GenRecommender.from_pretrained(tmp_path / "m", device="cpu")
    assert merged.item_adapter is not None and top10(merged) == want


def test_qlora_merge_dequantizes_the_4bit_base_it_trained_on(tmp_path):
    from bitsandbytes.nn import Linear4bit
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from genrec.hub import load_causal_lm

    run = make_tiny_run(tmp_path / "q", steps=2, mode="qlora")
    assert cli(["export", str(run), "--out", str(tmp_path / "m"), "--merge"]) == 0
    assert json.loads((tmp_path / "m" / layout.EXPORT).read_text())["config"]["dequantized"] is True
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert not any(isinstance(m, Linear4bit) for m in merged.modules())
    quantized, _ = load_causal_lm(tmp_path / "q" / "base", quantization="4bit", device="cpu")
    for m in quantized.modules():  # the layout training keeps (see genrec.training.model.keep_cpu_4bit_layout)
        if isinstance(m, Linear4bit):
            m.support_avx512bf16_for_cpu = False
    quantized.resize_token_embeddings(merged.get_input_embeddings().weight.shape[0], mean_resizing=False)
    trained = PeftModel.from_pretrained(quantized, str(run)).eval()
    ids = torch.tensor([[1, 5, 9, merged.config.vocab_size - 1]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-4)
    assert top10(GenRecommender.from_pretrained(tmp_path / "m", device="cpu"))[0]


def test_base_record_names_the_canonical_id_and_resolves_it_elsewhere(monkeypatch, tmp_path):
    from genrec import hub, registry
    from genrec.errors import ConfigError

    monkeypatch.setattr(registry, "fetch", lambda entry, download=None: tmp_path / entry.name)
    monkeypatch.setattr(hub, "_weights_location", lambda src: (
        str(tmp_path / "converted") if src.kind == "embedded" else src.path, None))
    rec = hub.base_record("smollm2-135m")
    assert (rec["kind"], rec["canonical"], rec["path"]) == (
        "embedded", "HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path / "converted"))
    # Elsewhere the cached path is gone: the canonical id finds the embedded copy (offline).
    src = hub.resolve_base({**rec, "embedded": None})
    assert (src.kind, src.embedded) == ("embedded", "smollm2-135m")
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text("{}")
    assert hub.resolve_base({**rec, "path": str(local)}).kind == "local"  # an existing path wins
    snap = tmp_path / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert hub.base_record(str(snap))["canonical"] == "org/name"  # a hub-cache directory names its id
    hub_run = {"kind": "hub", "path": "HuggingFaceTB/SmolLM2-135M-Instruct",
               "canonical": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert hub.resolve_base(hub_run).kind == "hub"  # trained on hub weights: never the embedded copy
    with pytest.raises(ConfigError, match="genrec export"):
        hub.resolve_base({"kind": "local", "path": str(tmp_path / "gone"), "canonical": None, "name": "b"})


def test_card_metadata_points_at_the_canonical_base():
    meta = layout.card_metadata({"base_model": "/tmp/b", "library_name": "peft", "license": "mit",
                                 "tags": ["base_model:adapter:/tmp/b", "lora"]}, "org/m", "peft", "adapter")
    assert meta["base_model"] == "org/m" and meta["license"] == "mit"
    assert meta["tags"] == ["lora", "base_model:adapter:org/m", "genrec", "recommendation",
                            "generative-recommendation"]
    text = layout.join_card(meta, "# title\n\nbody")
    assert layout.split_card(text) == (meta, "# title\n\nbody\n")
