"""Canonical dataset round trip, the leave-one-out protocol and the ranking metrics, checked exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.data.dataset import Dataset, Item
from genrec.data.split import leave_one_out, pad_left
from genrec.errors import DataError
from genrec.metrics import evaluate_scores, ranking_metrics, topk_from_scores


def toy(timestamps: bool = True) -> Dataset:
    items = [Item("a", title="Crème brûlée", categories=["Food", "Dessert"], extra={"price": 2.5}),
             Item("b", title="Tea", description="Green\ntea", brand="Leafy"),
             Item("c", title="c"), Item("d", title="Mug", extra={"tags": ["x", "y"]})]
    seqs = [np.array([0, 1, 2, 3, 0, 1], dtype=np.int64), np.array([3, 2, 1], dtype=np.int64),
            np.array([2, 0, 3, 1], dtype=np.int64)]
    stamps = [np.array([1, 2, 3, 4, 5, 6.5]), np.array([7.0, 8.0, 9.0]), np.array([1.0, 1.0, 2.0, 3.0])]
    return Dataset(items=items, users=["u1", "ü2", "u3"], sequences=seqs,
                   timestamps=stamps if timestamps else None, stats={"users": 3}, manifest={"format": "test"})


@pytest.mark.parametrize("timestamps", [True, False])
def test_save_load_round_trip(tmp_path: Path, timestamps: bool) -> None:
    ds = toy(timestamps)
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.items == ds.items and back.users == ds.users
    assert all(np.array_equal(a, b) and b.dtype == np.int64 for a, b in zip(ds.sequences, back.sequences))
    if timestamps:
        assert all(np.array_equal(a, b) for a, b in zip(ds.timestamps, back.timestamps))
    else:
        assert back.timestamps is None
    assert back.stats == {"users": 3} and back.manifest == {"format": "test"}
    assert back.item_index == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_load_rejects_incomplete_or_inconsistent_directories(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="items.jsonl is missing.*genrec data prepare"):
        Dataset.load(tmp_path)
    toy().save(tmp_path / "ds")
    lines = (tmp_path / "ds" / "sequences.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"d"', '"zz"')
    (tmp_path / "ds" / "sequences.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"sequences.jsonl line 2: item 'zz' is not in items.jsonl"):
        Dataset.load(tmp_path / "ds")


def test_leave_one_out_targets_histories_and_windows() -> None:
    ds = toy()
    split = leave_one_out(ds, max_history=2)
    assert split.test.targets.tolist() == [1, 1, 1] and split.valid.targets.tolist() == [0, 2, 3]
    assert [h.tolist() for h in split.test.histories] == [[3, 0], [3, 2], [0, 3]]
    assert [h.tolist() for h in split.valid.histories] == [[2, 3], [3], [2, 0]]
    assert [p.tolist() for p in split.train] == [[0, 1, 2, 3], [3], [2, 0]]
    windows = [(u, h.tolist(), t) for u, h, t in split.train_windows()]
    assert windows == [(0, [0], 1), (0, [0, 1], 2), (0, [1, 2], 3), (2, [2], 0)]
    assert split.num_train_windows() == len(windows)
    assert split.test.padded(3).tolist() == [[-1, 3, 0], [-1, 3, 2], [-1, 0, 3]]


def test_windows_never_reach_valid_or_test_positions() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50, size=int(n)) for n in rng.integers(3, 40, size=30)]
    ds = Dataset(items=[Item(str(i)) for i in range(50)], users=[str(u) for u in range(30)], sequences=seqs)
    split = leave_one_out(ds, max_history=5)
    per_user: dict[int, int] = {}
    for u, hist, target in split.train_windows():
        t = per_user.get(u, 0) + 1  # windows of a user come in order: target at position t
        per_user[u] = t
        s = seqs[u]
        assert t <= len(s) - 3, "a training target reached the validation or test position"
        assert target == s[t] and hist.tolist() == s[max(0, t - 5):t].tolist()
    assert per_user == {u: len(s) - 3 for u, s in enumerate(seqs) if len(s) > 3}
    for u, s in enumerate(seqs):
        assert split.valid.targets[u] == s[-2] and split.valid.histories[u].tolist() == s[:-2][-5:].tolist()
        assert split.test.targets[u] == s[-1] and split.test.histories[u].tolist() == s[:-1][-5:].tolist()


def test_leave_one_out_rejects_short_users_and_bad_history() -> None:
    ds = Dataset(items=[Item("a"), Item("b")], users=["u"], sequences=[np.array([0, 1])])
    with pytest.raises(DataError, match="fewer than 3 interactions"):
        leave_one_out(ds)
    with pytest.raises(DataError, match="max_history must be >= 1"):
        leave_one_out(toy(), max_history=0)


def test_pad_left_keeps_most_recent() -> None:
    out = pad_left([np.array([1, 2, 3, 4]), np.array([], dtype=np.int64), np.array([7])], 3)
    assert out.tolist() == [[2, 3, 4], [-1, -1, -1], [-1, -1, 7]]


def test_ranking_metrics_hand_computed() -> None:
    ranked = np.array([[4, 1, 2, 3, 5, 6, 7, 8, 9, 10],     # target 4 at rank 1
                       [1, 2, 4, 3, 5, 6, 7, 8, 9, 10],     # rank 3
                       [1, 2, 3, 5, 6, 4, 7, 8, 9, 10],     # rank 6
                       [1, 2, 3, -1, -1, -1, -1, -1, -1, -1]])  # absent (padded list)
    m = ranking_metrics(ranked, np.array([4, 4, 4, 4]), ks=(1, 5, 10, 20))
    assert (m["recall@1"], m["recall@5"], m["recall@10"], m["recall@20"]) == (0.25, 0.5, 0.75, 0.75)
    assert m["ndcg@1"] == 0.25
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(7)) / 4)
    assert m["ndcg@20"] == m["ndcg@10"]
    with pytest.raises(ValueError, match="2 rows but there are 3 targets"):
        ranking_metrics(ranked[:2], np.array([1, 2, 3]))


def _reference_topk(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Sort by (score descending, index ascending) in plain Python."""
    return [sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in scores.tolist()]


def test_topk_breaks_ties_by_lower_index() -> None:
    g = torch.Generator().manual_seed(0)
    few_values = torch.randint(0, 4, (6, 300), generator=g).float()  # ties far beyond the k + 64 margin
    many_values = torch.randint(0, 1000, (6, 300), generator=g).float()
    for scores in (few_values, many_values, torch.zeros(2, 100)):
        top = topk_from_scores(scores, 20)
        assert top.tolist() == _reference_topk(scores, 20)
        assert torch.equal(top, topk_from_scores(scores.clone(), 20))
    assert topk_from_scores(torch.zeros(1, 5), 20).tolist() == [[0, 1, 2, 3, 4]]


def test_topk_excludes_items() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    top = topk_from_scores(scores, 2, exclude=[np.array([0, 2]), np.array([], dtype=np.int64)])
    assert top.tolist() == [[1, 3], [0, 1]]


def test_evaluate_scores_on_a_fixed_ranking() -> None:
    split = leave_one_out(toy(), max_history=3)

    def score_fn(histories: np.ndarray) -> torch.Tensor:
        assert histories.shape[1] == 3 and histories.dtype == np.int64
        return torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(len(histories), 1)  # ranks b, d, c, a

    m = evaluate_scores(score_fn, split.test, max_len=3, ks=(1, 2), progress=False)
    assert m == {"recall@1": 1.0, "recall@2": 1.0, "ndcg@1": 1.0, "ndcg@2": 1.0}  # every test target is b
    m = evaluate_scores(score_fn, split.valid, max_len=3, ks=(1, 2), progress=False)
    # valid targets a, c, d → ranks 4, 3, 2
    assert m["recall@2"] == pytest.approx(1 / 3) and m["ndcg@2"] == pytest.approx(1 / math.log2(3) / 3)
    m = evaluate_scores(score_fn, split.valid, max_len=3, ks=(1,), exclude_history=True, progress=False)
    # histories [b c d], [d], [c a]: masking them puts a first for user 0 only
    assert m["recall@1"] == pytest.approx(1 / 3)
