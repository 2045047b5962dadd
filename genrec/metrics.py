"""Full-ranking Recall@K / NDCG@K, shared by baselines and every genrec model.

Protocol (leave-one-out, one target per user, no sampled negatives):

- a model produces a ranked list of item indices per user (either directly, as constrained
  beam search does, or by sorting scores over the **whole catalog**; ties are broken by the
  lower item index so results are deterministic);
- ``rank`` is the 1-based position of the target in that list (``inf`` if absent);
- ``Recall@K = mean(rank <= K)``; ``NDCG@K = mean(1 / log2(rank + 1) if rank <= K else 0)``
  (with one relevant item the ideal DCG is 1).

Items in the user's history are **not** removed from the ranking by default (repeat
consumption is legitimate); ``exclude_history=True`` masks them, and the choice is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm


class RankingData(Protocol):
    """What :func:`evaluate_scores` reads from an evaluation set (e.g. :class:`genrec.data.split.EvalSet`)."""

    histories: Sequence[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int: ...

    def padded(self, max_len: int) -> np.ndarray: ...

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
METRIC_KEYS: tuple[str, ...] = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in DEFAULT_KS)


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Metrics from ranked lists.

    Args:
        ranked: ``[U, L]`` item indices, best first (``-1`` pads short lists), ``L >= max(ks)``
            is not required: a target beyond ``L`` counts as a miss.
        targets: ``[U]`` target item indices.
    Returns:
        ``{"recall@5": ..., "recall@10": ..., ..., "ndcg@20": ...}`` as Python floats.
    """
    ranked = np.asarray(ranked)
    targets = np.asarray(targets).reshape(-1, 1)
    if ranked.shape[0] != targets.shape[0]:
        raise ValueError(f"ranked has {ranked.shape[0]} rows but there are {targets.shape[0]} targets")
    pos = target_ranks(ranked, targets)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(pos <= k)) if len(pos) else 0.0
    for k in ks:
        gain = np.where(pos <= k, 1.0 / np.log2(np.minimum(pos, k) + 1.0), 0.0)
        out[f"ndcg@{k}"] = float(np.mean(gain)) if len(pos) else 0.0
    return out


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[U]`` 1-based rank of each target in ``ranked [U, L]`` (int64 max where it is absent)."""
    hit = np.asarray(ranked) == np.asarray(targets).reshape(-1, 1)  # [U, L]
    return np.where(hit.any(1), hit.argmax(1) + 1, np.iinfo(np.int64).max)


def user_ndcg(ranked: np.ndarray, targets: np.ndarray, k: int = 10) -> np.ndarray:
    """``[U]`` each user's NDCG@k (one target: ``1 / log2(rank + 1)`` within the top ``k``, else 0)."""
    pos = target_ranks(ranked, targets)
    return np.where(pos <= k, 1.0 / np.log2(np.minimum(pos, k) + 1.0), 0.0)


def topk_from_scores(scores: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None) -> torch.Tensor:
    """Top-``k`` item indices ``[B, k]`` from scores ``[B, N]`` over the full catalog.

    Ties are broken by the lower item index (stable sort), so the result is deterministic.
    ``exclude[b]`` lists item indices to remove from row ``b`` before ranking.
    """
    scores = scores.float().clone()
    if exclude is not None:
        for b, items in enumerate(exclude):
            if len(items):
                scores[b, torch.as_tensor(items, dtype=torch.long)] = -torch.inf
    k = min(k, scores.shape[1])
    # topk is not tie-stable; take a margin, then stable-sort the candidates by (score desc, index asc).
    cand = torch.topk(scores, min(scores.shape[1], k + 64), dim=1).indices
    cand, _ = torch.sort(cand, dim=1)
    order = torch.sort(torch.gather(scores, 1, cand), dim=1, descending=True, stable=True).indices
    top = torch.gather(cand, 1, order)[:, :k]
    kth = torch.gather(scores, 1, top[:, -1:])
    # Rows whose k-th score is tied with candidates outside the margin need the exact full sort.
    margin_last = torch.gather(scores, 1, torch.gather(cand, 1, order[:, -1:]))
    bad = (margin_last == kth).squeeze(1) & (cand.shape[1] < scores.shape[1])
    if bad.any():
        full = torch.sort(scores[bad], dim=1, descending=True, stable=True).indices[:, :k]
        top[bad] = full
    return top


def evaluate_scores(score_fn: Callable[[np.ndarray], torch.Tensor], data: RankingData, max_len: int,
                    ks: Sequence[int] = DEFAULT_KS, batch_size: int = 1024, exclude_history: bool = False,
                    desc: str = "evaluate", progress: bool = True) -> dict[str, float]:
    """Evaluate a scoring model over the full catalog.

    ``score_fn(histories)`` takes a left-padded ``[B, max_len]`` int64 array (``-1`` = pad)
    and returns scores ``[B, N]``.
    """
    k_max = max(ks)
    ranked = []
    padded = data.padded(max_len)
    with torch.no_grad():
        for start in tqdm(range(0, len(data), batch_size), desc=desc, disable=not progress, leave=False):
            batch = padded[start:start + batch_size]
            scores = score_fn(batch)
            excl = data.histories[start:start + batch_size] if exclude_history else None
            ranked.append(topk_from_scores(scores, k_max, excl).cpu().numpy())
    return ranking_metrics(np.concatenate(ranked) if ranked else np.zeros((0, k_max), np.int64),
                           data.targets, ks)


def top1_share(ranked: np.ndarray) -> float:
    """Share of users whose top-1 item is the most common top-1 of all users (``ranked [U, L]``,
    ``-1`` pads): 1.0 when every user gets the same first recommendation, a sign of collapse onto
    popular items; about ``1 / U`` when every user gets a different one."""
    top1 = np.asarray(ranked)[:, 0]
    top1 = top1[top1 >= 0]
    return float(np.bincount(top1).max() / len(top1)) if len(top1) else 0.0
