"""SASRec on text item embeddings (``item_embeddings: text | text+id``) and the cold-start protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec import cli
from genrec.baselines.artifact import load_sasrec, rescore, save_checkpoint
from genrec.baselines.popularity import cold_popularity
from genrec.data.split import hold_out_items, leave_one_out
from genrec.encoders.sasrec import SASRecConfig, build_sasrec, evaluate_sasrec, seed_everything, train_sasrec
from genrec.encoders.text_items import standardize
from genrec.testing import make_tiny_llm

FAST = {"hidden": 32, "dropout": 0.1, "lr": 5e-3, "batch_size": 64, "epochs": 40, "patience": 3, "num_threads": 1}


def fourier_features(n: int, dims: int = 8) -> np.ndarray:
    """Item ``i`` as points on circles: the successor ``i + 1`` is a fixed rotation of ``i``'s text."""
    angle = 2 * np.pi * np.arange(n)[:, None] * np.arange(1, dims + 1)[None, :] / n
    return np.concatenate([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)


@pytest.mark.parametrize("mode", ["text", "text+id"])
def test_text_item_tables_learn_the_sequential_pattern(successor, mode):
    ds = successor
    split = leave_one_out(ds, max_history=10)
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "item_embeddings": mode, "adapter_hidden": 32})
    res = train_sasrec(split, cfg, progress=False, text_features=standardize(fourier_features(ds.num_items)))
    assert res.item_embeddings.shape == (ds.num_items, 32)
    assert res.test_metrics["recall@10"] > 0.9  # popularity is flat here: 10 of 40 items ≈ 0.25
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_text_plus_id_rebuilds_unseen_items_from_text_alone(successor):
    ds = successor
    split, cold = hold_out_items(leave_one_out(ds, max_history=10), 0.25, seed=0)
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "item_embeddings": "text+id", "epochs": 2})
    feats = standardize(fourier_features(ds.num_items))
    model = build_sasrec(split, cfg, feats).eval()
    assert np.array_equal(model.id_known.numpy(), ~cold)  # exactly the items seen in training keep an ID part
    with torch.no_grad():
        model.item_emb.weight.normal_()
        table, text = model.item_weight(), model.text_adapter()
    assert torch.equal(table[torch.from_numpy(cold)], text[torch.from_numpy(cold)])
    assert not torch.allclose(table[torch.from_numpy(~cold)], text[torch.from_numpy(~cold)])


def test_text_checkpoint_is_self_contained(successor, tmp_path):
    ds = successor
    split = leave_one_out(ds, max_history=10)
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "item_embeddings": "text", "epochs": 2})
    res = train_sasrec(split, cfg, progress=False, text_features=standardize(fourier_features(ds.num_items)))
    save_checkpoint(res.model, cfg, tmp_path / "model.pt")
    loaded, loaded_cfg = load_sasrec(tmp_path / "model.pt")  # no text encoder needed to score
    assert loaded_cfg.item_embeddings == "text"
    assert evaluate_sasrec(loaded, split.test, loaded_cfg, progress=False) == res.test_metrics


def test_hold_out_removes_every_interaction_but_keeps_targets(successor):
    ds = successor
    full = leave_one_out(ds, max_history=10)
    split, cold = hold_out_items(full, 0.2, seed=3)
    assert cold.sum() == 8 and np.array_equal(cold, hold_out_items(full, 0.2, seed=3)[1])
    for seqs in (split.train, split.valid.histories, split.test.histories):
        assert not any(cold[s].any() for s in seqs)
    assert np.array_equal(split.test.targets, full.test.targets)
    assert all(len(h) <= 10 for h in split.test.histories)
    counts = cold_popularity(full, cold)
    assert (counts[~cold] == 0).all() and (counts[cold] > 0).all()


def test_cold_items_are_outside_the_training_softmax(successor):
    split, cold = hold_out_items(leave_one_out(successor, max_history=10), 0.25, seed=0)
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "epochs": 3})
    seed_everything(cfg.seed)
    init = build_sasrec(split, cfg)  # the initial weights train_sasrec starts from
    trained = train_sasrec(split, cfg, progress=False, absent=cold).model
    # A held-out item never enters the softmax (nor a history): no gradient reaches its ID row.
    rows = torch.from_numpy(np.flatnonzero(cold)) + 1
    assert torch.equal(trained.item_emb.weight[rows], init.item_emb.weight[rows])
    warm = torch.from_numpy(np.flatnonzero(~cold)) + 1
    assert not torch.allclose(trained.item_emb.weight[warm], init.item_emb.weight[warm])


def _baseline(args: list[str]) -> int:
    return cli.main(["baseline", *args])


def test_cli_text_sasrec_and_cold_start_metrics(successor, tmp_path, monkeypatch):
    data = successor.save(tmp_path / "ds")
    llm = make_tiny_llm(tmp_path / "llm")
    # the vectors of this throw-away model are cached under tmp_path, not in the user's genrec cache
    monkeypatch.setattr("genrec.encoders.text.genrec_cache_dir", lambda: tmp_path / "cache")
    cold = ["cold_items=0.2", "cold_seed=1"]
    opts = [f"{k}={v}" for k, v in {**FAST, "epochs": 3}.items()]
    assert _baseline(["--data", str(data), "--model", "sasrec", "--out", str(tmp_path / "text"), *cold, *opts,
                      "item_embeddings=text+id", f"text.model={llm}", "text.max_length=8"]) == 0
    assert _baseline(["--data", str(data), "--model", "pop", "--out", str(tmp_path / "pop"), *cold]) == 0
    for name in ("text", "pop"):
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        assert set(record) == {"valid", "test", "test_cold"} and record["test_cold"]["users"] > 0
    text = json.loads((tmp_path / "text" / "metrics.json").read_text())
    # Re-scoring on all users reproduces the run (same hold-out, text table from the checkpoint).
    all_users = np.arange(160)
    assert rescore(tmp_path / "text", data, "test", all_users) == pytest.approx(text["test"])


@pytest.mark.parametrize("override, message", [
    ("item_embeddings=glove", "item_embeddings must be one of"),
    ("cold_items=1.5", "cold_items must be in [0, 1)"),
])
def test_bad_config_exits_2(successor, tmp_path, capsys, override, message):
    data = successor.save(tmp_path / "ds")
    assert _baseline(["--data", str(data), "--model", "sasrec", "--out", str(tmp_path / "o"), override]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_missing_text_model_exits_2(successor, tmp_path, capsys):
    data = successor.save(tmp_path / "ds")
    rc = _baseline(["--data", str(data), "--model", "sasrec", "--out", str(tmp_path / "o"), "item_embeddings=text",
                    f"text.model={tmp_path / 'no-such-model'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "no-such-model" in err and not (tmp_path / "o").exists()
