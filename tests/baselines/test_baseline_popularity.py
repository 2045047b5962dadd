"""Popularity baseline: counts from training prefixes only, deterministic ranking."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.baselines.popularity import PopularityConfig, evaluate_popularity, item_counts, popularity_ranking
from genrec.config import load_config
from genrec.data.dataset import Dataset, Item
from genrec.data.split import leave_one_out
from genrec.errors import ConfigError


def _dataset() -> Dataset:
    # Item 4 is every user's validation and test target: it must never be counted for the validation
    # ranking, although it is the most frequent item of the dataset overall.
    seqs = [
        [0, 1, 1, 4, 4],
        [1, 2, 1, 4, 4],
        [2, 1, 3, 4, 4],
        [3, 0, 1, 4, 4],
    ]
    items = [Item(item_id=f"i{i}") for i in range(6)]
    return Dataset(items=items, users=[f"u{u}" for u in range(4)],
                   sequences=[np.asarray(s, dtype=np.int64) for s in seqs])


def test_counts_use_training_prefixes_only():
    split = leave_one_out(_dataset())
    res = evaluate_popularity(split, PopularityConfig(), progress=False)
    assert res.valid_counts.tolist() == [2, 6, 2, 2, 0, 0]
    assert np.array_equal(res.test_counts, res.valid_counts)
    # Item 1 leads; ties (0, 2, 3) by lower index; the never-trained items 4 and 5 come last.
    assert popularity_ranking(res.valid_counts).tolist() == [1, 0, 2, 3, 4, 5]
    # Target 4 ranks 5th for everyone: recall@5 = 1, ndcg@5 = 1/log2(6).
    assert res.valid_metrics["recall@5"] == 1.0
    assert res.valid_metrics["ndcg@5"] == pytest.approx(1 / np.log2(6))
    assert res.test_metrics == res.valid_metrics


def test_train_plus_valid_counts_only_change_the_test_ranking():
    split = leave_one_out(_dataset())
    res = evaluate_popularity(split, PopularityConfig(test_counts="train+valid"), progress=False)
    assert res.valid_counts[4] == 0
    assert res.test_counts.tolist() == [2, 6, 2, 2, 4, 0]
    # Item 4 now ranks 2nd for the test ranking only.
    assert res.test_metrics["recall@5"] == 1.0
    assert res.test_metrics["ndcg@5"] == pytest.approx(1 / np.log2(3))
    assert res.valid_metrics["ndcg@5"] == pytest.approx(1 / np.log2(6))


def test_exclude_history_removes_seen_items():
    seqs = [np.asarray([1, 1, 2, 1], dtype=np.int64), np.asarray([1, 2, 2, 0], dtype=np.int64)]
    ds = Dataset(items=[Item(item_id=f"i{i}") for i in range(10)], users=["a", "b"], sequences=seqs)
    split = leave_one_out(ds)
    plain = evaluate_popularity(split, PopularityConfig(), progress=False)
    masked = evaluate_popularity(split, PopularityConfig(exclude_history=True), progress=False)
    # Counts [0, 3, 1, 0, ...] rank 1, 2, 0, ...: user a's target 1 is first, user b's target 0 third.
    assert plain.test_metrics["recall@5"] == 1.0
    assert plain.test_metrics["ndcg@5"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    # Masking histories: a's target 1 was seen (a miss); b's seen items 1, 2 drop out, so 0 comes first.
    assert masked.test_metrics["recall@5"] == 0.5
    assert masked.test_metrics["ndcg@5"] == pytest.approx(0.5)


def test_item_counts_and_bad_config():
    assert item_counts([np.asarray([0, 2, 2])], 4).tolist() == [1, 0, 2, 0]
    with pytest.raises(ConfigError, match="test_counts"):
        load_config(PopularityConfig, None, ["test_counts=valid"])
