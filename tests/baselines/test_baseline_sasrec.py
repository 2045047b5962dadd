"""SASRec: learns a sequential pattern, trains on exactly the sliding windows, is deterministic."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from genrec.baselines.artifact import load_sasrec, save_checkpoint
from genrec.baselines.popularity import PopularityConfig, evaluate_popularity
from genrec.config import load_config
from genrec.data.split import Split, leave_one_out, pad_left
from genrec.encoders.sasrec import SASRec, SASRecConfig, train_sasrec, training_rows
from genrec.errors import ConfigError

FAST = {"hidden": 32, "dropout": 0.1, "lr": 5e-3, "batch_size": 64, "epochs": 40, "patience": 3, "num_threads": 1}


def _examples(x: np.ndarray, y: np.ndarray) -> list[tuple[tuple[int, ...], int]]:
    out = []
    for row_x, row_y in zip(x, y):
        for t in np.flatnonzero(row_y >= 0):
            history = row_x[: t + 1]
            out.append((tuple(history[history >= 0].tolist()), int(row_y[t])))
    return out


def test_training_rows_are_the_sliding_windows():
    rng = np.random.default_rng(1)
    train = [rng.integers(0, 30, size=n) for n in (0, 1, 2, 5, 6, 7, 15)]
    split = Split(num_items=30, max_history=5, train=train, valid=None, test=None)  # type: ignore[arg-type]
    want = Counter((tuple(h.tolist()), t) for _, h, t in split.train_windows())
    assert Counter(_examples(*training_rows(train, 5))) == want
    assert sum(want.values()) == split.num_train_windows()


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_strided_rows_cover_each_target_once_with_long_histories(stride):
    # Distinct items, so a target identifies its position and its exact window.
    train = [np.arange(100 * k, 100 * k + n) for k, n in enumerate((3, 6, 7, 9, 23))]
    max_len = 5
    x, y = training_rows(train, max_len, stride)
    examples = _examples(x, y)
    windows = {t: tuple(h.tolist()) for p in train for t, h in
               ((int(p[i]), p[max(0, i - max_len):i]) for i in range(1, len(p)))}
    assert sorted(t for _, t in examples) == sorted(windows)
    for history, target in examples:
        exact = windows[target]
        assert exact[len(exact) - len(history):] == history
        assert len(history) >= min(len(exact), max_len - stride + 1)
    assert len(x) < len(training_rows(train, max_len, 1)[0])


def test_each_position_encodes_its_own_prefix():
    torch.manual_seed(0)
    model = SASRec(num_items=20, hidden=16, layers=2, heads=2, dropout=0.3, max_len=6).eval()
    seq = np.asarray([3, 0, 7, 7, 19], dtype=np.int64)
    full = model.encode(pad_left([seq], 6))[0]  # [6, 16]
    for t in range(1, len(seq) + 1):
        alone = model.encode(pad_left([seq[:t]], 6))[0, -1]
        torch.testing.assert_close(full[6 - len(seq) + t - 1], alone, atol=1e-5, rtol=1e-5)
    assert torch.all(full[0] == 0)  # the padding position


def test_learns_successor_pattern_far_above_popularity(successor):
    split = leave_one_out(successor)
    res = train_sasrec(split, SASRecConfig(**FAST), progress=False)
    pop = evaluate_popularity(split, PopularityConfig(), progress=False)
    assert res.test_metrics["recall@10"] >= 0.9
    assert res.test_metrics["ndcg@10"] >= 0.8
    assert pop.test_metrics["recall@10"] < 0.5
    assert res.item_embeddings.dtype == np.float32
    assert res.item_embeddings.shape == (successor.num_items, 32)
    np.testing.assert_array_equal(res.item_embeddings, res.model.item_emb.weight[1:].detach().numpy())


def test_bce_loss_also_learns(successor):
    split = leave_one_out(successor)
    res = train_sasrec(split, SASRecConfig(**{**FAST, "loss": "bce", "lr": 1e-2}), progress=False)
    assert res.test_metrics["recall@10"] >= 0.8


def test_same_seed_same_metrics_and_early_stop(successor, tmp_path):
    split = leave_one_out(successor)
    cfg = SASRecConfig(**{**FAST, "epochs": 100, "patience": 2})
    a = train_sasrec(split, cfg, progress=False, log_path=tmp_path / "log.jsonl")
    b = train_sasrec(split, cfg, progress=False)
    assert a.valid_metrics == b.valid_metrics and a.test_metrics == b.test_metrics
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)
    # Validation NDCG@10 saturates on this pattern, so training stops long before the cap.
    assert len(a.history) == a.best_epoch + cfg.patience < cfg.epochs
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(a.history) + 1 and '"final": true' in lines[-1]
    other = train_sasrec(split, SASRecConfig(**{**FAST, "epochs": 2, "seed": 7}), progress=False)
    assert other.history[0]["loss"] != a.history[0]["loss"]


def test_checkpoint_round_trip(successor, tmp_path):
    split = leave_one_out(successor)
    res = train_sasrec(split, SASRecConfig(**{**FAST, "epochs": 2}), progress=False)
    save_checkpoint(res.model, res.config, tmp_path / "model.pt")
    model, cfg = load_sasrec(tmp_path / "model.pt")
    assert cfg == res.config
    hist = split.test.padded(cfg.max_len)[:8]
    with torch.no_grad():
        torch.testing.assert_close(model.score(hist), res.model.eval().score(hist))


def test_config_errors_name_the_key(successor):
    with pytest.raises(ConfigError, match="heads"):
        load_config(SASRecConfig, None, ["hidden=64", "heads=3"])
    with pytest.raises(ConfigError, match="loss"):
        load_config(SASRecConfig, None, ["loss=hinge"])
    with pytest.raises(ConfigError, match="max_history"):
        train_sasrec(leave_one_out(successor, max_history=10), SASRecConfig(max_len=20), progress=False)
