"""`genrec train` end to end on a tiny LLaMA model and a tokenizer built from precomputed embeddings."""

import json

import numpy as np
import pytest

from genrec.cli import main as cli
from genrec.config import load_config
from genrec.data.dataset import Dataset, Item
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.testing import make_tiny_llm


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    items = [Item(item_id=f"m{i}", title=f"movie {i} drama" if i % 2 else f"film {i} comedy") for i in range(24)]
    seqs = [np.asarray([(u + t) % 24 for t in range(6)]) for u in range(30)]
    ds = Dataset(items=items, users=[f"u{u}" for u in range(30)], sequences=seqs,
                 stats={"users": 30, "items": 24, "interactions": 180})
    ds.save(root / "data")
    np.save(root / "sem.npy", rng.normal(size=(24, 8)).astype(np.float32))
    np.save(root / "beh.npy", rng.normal(size=(24, 6)).astype(np.float32))
    tcfg = load_config(TokenizerConfig, None, [
        "name=tiny", f"data={root / 'data'}", f"out_dir={root / 'tok'}", "plots=false", "progress=false",
        "semantic.encoder=precomputed", f"semantic.embeddings={root / 'sem.npy'}", "semantic.kmeans.k=4",
        "behavior.encoder=precomputed", f"behavior.embeddings={root / 'beh.npy'}", "behavior.kmeans.k=4"])
    build_tokenizer(tcfg)
    base = make_tiny_llm(root / "base")
    return root, base


def _args(root, base, name, *extra):
    return ["train", "--config", str(root / "recipe.yaml"), f"name={name}", f"output_dir={root / 'runs'}",
            f"data={root / 'data'}", f"tokenizer={root / 'tok' / 'tiny'}", f"model.base={base}", *extra]


def _recipe(root):
    (root / "recipe.yaml").write_text(
        "model: {mode: lora, lora_r: 4, new_token_init: text}\n"
        "tasks: {mix: {seqrec: 1.0, item2index: 1.0, index2item: 0.5}, max_eval_examples: 8}\n"
        "losses: {weights: {contrastive_semantic: 0.1, contrastive_behavior: 0.1, reconstruction_embedding: 0.1,"
        " reconstruction_codes: 0.1}, num_negatives: 8}\n"
        "training: {max_steps: 6, batch_size: 4, eval_steps: 3, logging_steps: 1, learning_rate: 0.01}\n")


def test_train_writes_loadable_run(setup):
    root, base = setup
    _recipe(root)
    assert cli(_args(root, base, "r1")) == 0
    run = root / "runs" / "r1"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "config.yaml",
                 "provenance.json", "train_log.jsonl", "loss_curve.png", "README.md", "item_tokenizer/item_codes.json"):
        assert (run / name).exists(), name
    logs = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("loss_contrastive_semantic" in r for r in logs) and any("eval_loss" in r for r in logs)
    # Standard transformers + peft calls load it.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run)
    assert tok.convert_ids_to_tokens(tok("<s0_1>", add_special_tokens=False)["input_ids"]) == ["<s0_1>"]
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tok))
    model = PeftModel.from_pretrained(model, run)
    ids = tok("<s0_1><b0_2>", return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == len(tok)


def test_resume_continues_and_refuses_changed_config(setup, capsys):
    root, base = setup
    _recipe(root)
    # First run stops after 3 of 6 steps (a killed run leaves its checkpoints behind).
    assert cli(_args(root, base, "r2", "training.max_steps=3")) == 0
    assert cli(_args(root, base, "r2", "training.max_steps=3")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli(_args(root, base, "r2", "training.max_steps=3", "training.learning_rate=0.5", "--resume")) == 2
    assert "config changed" in capsys.readouterr().err


def test_bad_inputs(setup, capsys, tmp_path):
    root, base = setup
    _recipe(root)
    assert cli(_args(root, base, "r3", "training.nope=1")) == 2
    assert "unknown config key 'training.nope'" in capsys.readouterr().err
    # Dataset with an item the tokenizer has never seen → checksum mismatch names the fix.
    ds = Dataset.load(root / "data")
    ds.items.append(Item(item_id="new", title="new film"))
    ds.sequences[0] = np.append(ds.sequences[0], len(ds.items) - 1)
    ds.save(tmp_path / "data2")
    args = _args(root, base, "r4")
    args[args.index(f"data={root / 'data'}")] = f"data={tmp_path / 'data2'}"
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_interrupted_run_resumes_to_identical_weights(setup, monkeypatch):
    from safetensors.torch import load_file

    from genrec.training.trainer import GenRecTrainer

    root, base = setup
    _recipe(root)
    assert cli(_args(root, base, "full6", "training.early_stopping_patience=0")) == 0
    real_step = GenRecTrainer.training_step
    calls = {"n": 0}

    def dying_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 4:  # checkpoint-3 exists; step 4 was in flight when the process "died"
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(GenRecTrainer, "training_step", dying_step)
    assert cli(_args(root, base, "killed", "training.early_stopping_patience=0")) == 130
    assert (root / "runs" / "killed" / "checkpoints" / "checkpoint-3").is_dir()
    assert not (root / "runs" / "killed" / "README.md").exists()
    monkeypatch.setattr(GenRecTrainer, "training_step", real_step)
    assert cli(_args(root, base, "killed", "training.early_stopping_patience=0", "--resume")) == 0
    a = load_file(root / "runs" / "full6" / "adapter_model.safetensors")
    b = load_file(root / "runs" / "killed" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
