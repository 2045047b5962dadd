"""Most-popular baseline: every user gets the catalog ranked by interaction counts.

Counts come from the training prefixes only (``s[:-2]`` per user), never from validation or
test targets, so the baseline is fit on exactly the data SASRec is trained on. For the test
ranking the validation targets are *not* added by default (``test_counts: train``): both
baselines are then fixed models evaluated twice, the validation item only appearing in the test
*history*, which popularity ignores. ``test_counts: train+valid`` refits the counts with the
validation interactions for the test ranking (the usual "retrain on train+valid" protocol); the
choice is recorded in the run's config. Ties are broken by the lower item index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from genrec.data.split import EvalSet, Split
from genrec.metrics import evaluate_scores

log = logging.getLogger(__name__)

TEST_COUNTS = ("train", "train+valid")


@dataclass
class PopularityConfig:
    """Settings of ``genrec baseline --model pop`` (YAML keys = field names)."""

    max_len: int = 20  # history length of the split (only matters with exclude_history)
    test_counts: str = "train"  # "train" or "train+valid": interactions counted for the test ranking
    exclude_history: bool = False  # remove the user's history items from the ranking
    eval_batch_size: int = 1024  # users ranked at once
    cold_items: float = 0.0  # share of items held out of training entirely (cold-start evaluation; 0 = off)
    cold_seed: int = 0  # which items are held out (the same seed holds out the same items in every baseline)

    def __post_init__(self) -> None:
        if not 0.0 <= self.cold_items < 1.0:
            raise ValueError(f"cold_items must be in [0, 1) (share of items held out), got {self.cold_items}")
        if self.test_counts not in TEST_COUNTS:
            raise ValueError(f"test_counts must be one of {TEST_COUNTS}, got {self.test_counts!r}")
        if self.max_len < 1 or self.eval_batch_size < 1:
            raise ValueError(f"max_len and eval_batch_size must be >= 1, got {self.max_len}, "
                             f"{self.eval_batch_size}")


@dataclass
class PopularityResult:
    valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    valid_counts: np.ndarray  # [N] int64 counts used for the validation ranking
    test_counts: np.ndarray  # [N] int64 counts used for the test ranking


def item_counts(sequences: list[np.ndarray], num_items: int) -> np.ndarray:
    """Interactions per item ``[N]`` (int64) over ``sequences``."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if sequences else np.zeros(0, np.int64)
    return np.bincount(flat, minlength=num_items).astype(np.int64)


def popularity_ranking(counts: np.ndarray, k: int | None = None) -> np.ndarray:
    """Item indices by decreasing count, ties by lower index; first ``k`` if given."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    return order if k is None else order[:k]


def evaluate_counts(counts: np.ndarray, data: EvalSet, cfg: PopularityConfig, desc: str = "evaluate",
                    progress: bool = True) -> dict[str, float]:
    """Full-ranking metrics on ``data`` of the ranking by ``counts`` (the same for every user)."""
    scores = torch.as_tensor(counts, dtype=torch.float32)

    def score_fn(histories: np.ndarray) -> torch.Tensor:
        return scores.expand(len(histories), -1)  # [B, N], the same for every user

    return evaluate_scores(score_fn, data, cfg.max_len, batch_size=cfg.eval_batch_size,
                           exclude_history=cfg.exclude_history, desc=desc, progress=progress)


def fit_counts(split: Split, cfg: PopularityConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(valid_counts, test_counts)``: training-prefix counts, plus the validation targets for
    the test ranking when ``cfg.test_counts == "train+valid"``."""
    valid_counts = item_counts(split.train, split.num_items)
    test_counts = valid_counts.copy()
    if cfg.test_counts == "train+valid":
        test_counts += np.bincount(split.valid.targets, minlength=split.num_items)
    return valid_counts, test_counts


def evaluate_popularity(split: Split, cfg: PopularityConfig, progress: bool = True) -> PopularityResult:
    """Fit counts on ``split.train`` and evaluate on validation and test (full ranking)."""
    valid_counts, test_counts = fit_counts(split, cfg)
    valid = evaluate_counts(valid_counts, split.valid, cfg, "valid", progress)
    test = evaluate_counts(test_counts, split.test, cfg, "test", progress)
    log.info("popularity: valid recall@10 %.4f ndcg@10 %.4f | test recall@10 %.4f ndcg@10 %.4f",
             valid["recall@10"], valid["ndcg@10"], test["recall@10"], test["ndcg@10"])
    return PopularityResult(valid, test, valid_counts, test_counts)


def cold_popularity(full: Split, cold: np.ndarray) -> np.ndarray:
    """Counts ``[N]`` for the cold-start reference "popularity among cold items": each held-out
    item's interactions in the full training prefixes plus the validation targets (interactions no
    model trains on), every other item 0. Ranking by them recommends the new items only, most
    bought first: it knows which items are new and how often they were bought, which no model is
    told, so it is a demanding reference rather than a floor."""
    counts = item_counts(full.train, full.num_items) + np.bincount(full.valid.targets, minlength=full.num_items)
    return np.where(cold, counts, 0).astype(np.int64)
