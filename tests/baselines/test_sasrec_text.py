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
from genrec.encoders.text_items import normalize_features, standardize, whiten
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


def test_whitened_features_are_decorrelated_with_unit_variance():
    rng = np.random.default_rng(0)
    # Anisotropic vectors: one shared direction and unequal, correlated dimensions.
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) * np.array([10, 1, 1, 0.1, 5, 2]) + 3.0
    w = whiten(x, eps=0.0)
    assert w.shape == x.shape and w.dtype == np.float32
    np.testing.assert_allclose(w.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(w, rowvar=False, bias=True), np.eye(6), atol=1e-3)
    assert np.abs(np.corrcoef(standardize(x), rowvar=False) - np.eye(6)).max() > 0.1  # standardising keeps correlations
    np.testing.assert_array_equal(normalize_features(x, "whiten"), whiten(x))
    with pytest.raises(ValueError, match="text_norm must be one of"):
        normalize_features(x, "pca")


def test_zero_id_init_starts_from_the_text_table(successor):
    split = leave_one_out(successor, max_history=10)
    feats = standardize(fourier_features(successor.num_items))
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "item_embeddings": "text+id", "id_init": "zero"})
    model = build_sasrec(split, cfg, feats).eval()
    with torch.no_grad():
        assert not model.item_emb.weight.any()
        assert torch.equal(model.item_weight(), model.text_adapter())
    res = train_sasrec(split, cfg, progress=False, text_features=whiten(fourier_features(successor.num_items)))
    assert res.test_metrics["recall@10"] > 0.9
    assert res.model.item_emb.weight[1:].abs().sum() > 0  # the ID rows then learn


@pytest.mark.parametrize("adapter_dropout, expected", [(None, 0.1), (0.0, 0.0), (0.3, 0.3)])
def test_adapter_dropout_defaults_to_the_model_dropout(successor, adapter_dropout, expected):
    split = leave_one_out(successor, max_history=10)
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "item_embeddings": "text", "adapter_dropout": adapter_dropout})
    model = build_sasrec(split, cfg, standardize(fourier_features(successor.num_items)))
    assert [m.p for m in model.text_adapter.modules() if isinstance(m, torch.nn.Dropout)] == [expected]


def test_text_checkpoint_is_self_contained(successor, tmp_path):
    ds = successor
    split = leave_one_out(ds, max_history=10)
    cfg = SASRecConfig(**{**FAST, "max_len": 10, "item_embeddings": "text", "epochs": 2, "adapter_dropout": 0.0})
    res = train_sasrec(split, cfg, progress=False, text_features=standardize(fourier_features(ds.num_items)))
    save_checkpoint(res.model, cfg, tmp_path / "model.pt")
    loaded, loaded_cfg = load_sasrec(tmp_path / "model.pt")  # no text encoder needed to score
    assert loaded_cfg.item_embeddings == "text" and loaded_cfg.adapter_dropout == 0.0
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
                      "item_embeddings=text+id", f"text.model={llm}", "text.max_length=8", "text_norm=whiten",
                      "id_init=zero"]) == 0
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
    ("text_norm=pca", "text_norm must be one of"),
    ("id_init=ones", "id_init must be one of"),
    ("adapter_dropout=1.0", "adapter_dropout must be in [0, 1)"),
    ("id_init=zero", "id_init=zero needs item_embeddings: text+id"),
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
