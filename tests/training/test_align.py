"""`genrec align`: DPO and GRPO (through trl) from tiny genrec runs; the outputs load and serve like
any run; bad input is refused with one message and exit status 2, writing nothing."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genrec.cli import main as cli
from genrec.inference.recommender import GenRecommender
from genrec.testing import make_tiny_run, tiny_dataset
from genrec.training.align.data import ItemReward

SCRATCH = ["model.base=scratch", "model.tokenizer=compact", "model.mode=full", "tasks.use_chat_template=false",
           ("model.scratch={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
            "num_key_value_heads: 4}"), "tasks.mix={sequence: 1.0, item2index: 1.0}", "tasks.max_length=96"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A LoRA run (window prompts, chat template) and a scratch / compact-vocabulary / sequence-format
    full run (the Scientific recipe's shape), on the same tiny dataset."""
    root = tmp_path_factory.mktemp("align")
    lora = make_tiny_run(root / "lora", name="sft", steps=4, mode="lora")
    full = make_tiny_run(root / "full", name="sft", steps=4, mode="full", overrides=SCRATCH)
    return root, lora, full


def _align(root, start, name, *extra, resume=False):
    argv = ["align", "--config", str(root / "align.yaml"), f"run={start}", f"output_dir={root / 'out'}",
            f"name={name}", *extra]
    if resume:
        argv.insert(3, "--resume")
    return cli(argv)


@pytest.fixture(scope="module")
def recipe(runs):
    root = runs[0]
    (root / "align.yaml").write_text(
        "dpo: {negatives: 2, beams: 8}\ngrpo: {num_generations: 4}\n"
        "training: {max_steps: 3, batch_size: 8, logging_steps: 1, save_steps: 2, learning_rate: 0.01}\n")
    return root


def _weights(run, names=("adapter_model.safetensors", "model.safetensors")):
    from safetensors.torch import load_file

    f = next(run / n for n in names if (run / n).is_file())
    return load_file(f)


def _serves_valid_items(run):
    rec = GenRecommender.from_pretrained(run)
    recs = rec.recommend(["m1", "m3", "m5"], k=5)
    assert len(recs) == 5 and all(r.item_id in {it.item_id for it in rec.items} for r in recs)
    _, counts = rec.search([rec.prompt_for([1, 3, 5])], [None], 5, 8)
    assert counts["invalid"] == 0
    return rec


def test_dpo_lora_trains_against_the_start_run_and_serves(runs, recipe):
    root, lora, _ = runs
    assert _align(root, lora, "dpo", "method=dpo") == 0
    out = root / "out" / "dpo"
    # the reference is the starting run (SFT adapter, item-token rows included): zero reward at step one
    first = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert abs(first["rewards/chosen"]) < 1e-6 and abs(first["rewards/rejected"]) < 1e-6
    before, after = _weights(lora), _weights(out)
    assert set(before) == set(after)  # same adapter layout; trl's reference adapter is not saved
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (out / "ref").exists()
    card = (out / "README.md").read_text()
    assert str(lora) in card and "DPO" in card
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == yaml.safe_load((lora / "config.yaml").read_text())["model"]
    assert cfg["align"]["start_run"] == str(lora.resolve())
    mined = [json.loads(x) for x in (out / "negatives.jsonl").read_text().splitlines()[1:]]
    assert mined and all(r["target"] not in r["negatives"] and len(r["negatives"]) <= 2 for r in mined)
    seqs = tiny_dataset().sequences  # negatives are never items of the user's training sequence (known positives)
    assert all(not set(r["negatives"]) & set(seqs[r["user"]][:-2].tolist()) for r in mined)
    _serves_valid_items(out)


def test_resume_reuses_the_mined_negatives(runs, recipe, caplog):
    root, lora, _ = runs
    out = root / "out" / "dpo"
    cache = (out / "negatives.jsonl").read_text()
    final = _weights(out)
    (out / "README.md").unlink()
    shutil.rmtree(out / "checkpoints" / "checkpoint-3")
    caplog.set_level("INFO", logger="genrec")
    assert _align(root, lora, "dpo", "method=dpo", resume=True) == 0
    assert "reusing" in caplog.text and (out / "negatives.jsonl").read_text() == cache
    resumed = _weights(out)
    assert all(torch.allclose(final[k], resumed[k], atol=1e-6) for k in final)


def test_grpo_scratch_sequence_run_samples_only_valid_items(runs, recipe):
    root, _, full = runs
    assert _align(root, full, "grpo", "method=grpo") == 0
    out = root / "out" / "grpo"
    prov = json.loads((out / "provenance.json").read_text())["align"]
    assert prov["completions"] == 3 * 8 and prov["invalid"] == 0
    before, after = _weights(full), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    assert "GRPO" in (out / "README.md").read_text() and str(full) in (out / "README.md").read_text()
    rec = _serves_valid_items(out)
    assert len(rec.tokenizer) == len(GenRecommender.from_pretrained(full).tokenizer)  # vocabulary kept


def test_dpo_qlora(runs, recipe, tmp_path):
    root = runs[0]
    qlora = make_tiny_run(tmp_path, name="sft", steps=2, mode="qlora")
    assert _align(root, qlora, "dpo_q", "method=dpo", "training.max_steps=2") == 0
    _serves_valid_items(root / "out" / "dpo_q")


def test_item_reward_is_exact_one_prefix_partial_invalid_zero():
    reward = ItemReward([[5, 6], [5, 7], [8, 9, 10]], eos_id=1, prefix_credit=0.5)
    got = reward(prompts=["0"] * 4, completions=[""] * 4, completion_ids=[[5, 6, 1], [5, 7, 1], [8, 9, 10, 1], [5, 1]],
                 target=[0, 0, 0, 0])
    assert got == [1.0, 0.25, 0.0, 0.0]
    assert reward.counts["invalid"] == 1 and reward.counts["exact"] == 1


# ------------------------------------------------------------------------------------ bad input
def _fails(capsys, root, start, name, *extra, resume=False):
    assert _align(root, start, name, *extra, resume=resume) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x[x.index("error: "):] for x in err.replace("\r", "\n").splitlines() if "error: " in x]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_run_is_refused_and_nothing_written(runs, recipe, capsys):
    root = runs[0]
    msg = _fails(capsys, root, root / "nope", "bad1")
    assert "not a finished genrec run directory" in msg and "run=" in msg
    assert not (root / "out" / "bad1").exists()


def test_run_trained_on_other_data_is_refused(runs, recipe, capsys, tmp_path):
    root, lora, _ = runs
    other = tiny_dataset(num_users=31)
    other.sequences[0] = np.asarray([3, 2, 1, 0, 5, 7])
    other.save(tmp_path / "data")
    msg = _fails(capsys, root, lora, "bad2", f"data={tmp_path / 'data'}")
    assert "trained on other data" in msg and "data=" in msg
    assert not (root / "out" / "bad2").exists()


def test_changed_config_on_resume_and_existing_run_are_refused(runs, recipe, capsys):
    root, lora, _ = runs
    out = root / "out" / "dpo"
    if not (out / "README.md").is_file():
        pytest.skip("needs the DPO run of the first test")
    snapshot = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    msg = _fails(capsys, root, lora, "dpo", "method=dpo", "dpo.beta=0.5", resume=True)
    assert "config or the starting run changed" in msg and "dpo.beta" in msg
    msg = _fails(capsys, root, lora, "dpo", "method=dpo")
    assert "already holds a run" in msg and "--resume" in msg
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == snapshot


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "recipes").glob("align_*.yaml")),
                         ids=lambda p: p.name)
def test_align_recipe_loads(path):
    from genrec.config import load_config
    from genrec.training.align.config import AlignConfig

    cfg = load_config(AlignConfig, path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# genrec align") and path.name in first and cfg.run
