"""Leave-one-out split, the protocol every genrec number is measured with.

For each user with chronological sequence ``s`` (length ``n >= 3``):

- **test**: history ``s[:n-1]``, target ``s[n-1]`` (the last item);
- **valid**: history ``s[:n-2]``, target ``s[n-2]`` (the second-to-last item);
- **train**: the prefix ``s[:n-2]``; training examples are the sliding windows over it,
  history ``prefix[:t]`` → target ``prefix[t]`` for ``t = 1 .. n-3``.

Every history is truncated to its last ``max_history`` items (default 20). Validation and
test targets never appear as training targets of the same user, and models never see them
during training.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genrec.data.dataset import Dataset
from genrec.errors import ConfigError, DataError


@dataclass
class EvalSet:
    """Histories (each ``[<= max_history]`` int64) and targets ``[U]`` for one split."""

    users: np.ndarray  # [U] user indices into Dataset.users
    histories: list[np.ndarray]
    targets: np.ndarray  # [U]

    def __len__(self) -> int:
        return len(self.targets)

    def padded(self, max_len: int, pad: int = -1) -> np.ndarray:
        """Left-padded history matrix ``[U, max_len]`` (most recent item last)."""
        return pad_left(self.histories, max_len, pad)


@dataclass
class Split:
    num_items: int
    max_history: int
    train: list[np.ndarray]  # per user, the training prefix s[:n-2] (full length, not truncated)
    valid: EvalSet
    test: EvalSet

    def train_windows(self) -> Iterator[tuple[int, np.ndarray, int]]:
        """Yield ``(user, history[<=max_history], target)`` sliding-window training examples."""
        for u, prefix in enumerate(self.train):
            for t in range(1, len(prefix)):
                yield u, prefix[max(0, t - self.max_history):t], int(prefix[t])

    def num_train_windows(self) -> int:
        return int(sum(max(len(p) - 1, 0) for p in self.train))


def leave_one_out(ds: Dataset, max_history: int = 20) -> Split:
    """Split ``ds`` as described in the module docstring."""
    if max_history < 1:
        raise DataError(f"max_history must be >= 1, got {max_history}")
    short = [ds.users[u] for u, s in enumerate(ds.sequences) if len(s) < 3]
    if short:
        raise DataError(f"{len(short)} user(s) have fewer than 3 interactions (e.g. {short[:3]}); "
                        "prepare the dataset with min_user_interactions >= 3")
    users = np.arange(ds.num_users)
    train = [s[:-2] for s in ds.sequences]
    valid = EvalSet(users, [s[:-2][-max_history:] for s in ds.sequences],
                    np.asarray([s[-2] for s in ds.sequences], dtype=np.int64))
    test = EvalSet(users, [s[:-1][-max_history:] for s in ds.sequences],
                   np.asarray([s[-1] for s in ds.sequences], dtype=np.int64))
    return Split(num_items=ds.num_items, max_history=max_history, train=train, valid=valid, test=test)


def pad_left(seqs: list[np.ndarray], max_len: int, pad: int = -1) -> np.ndarray:
    """Stack sequences into ``[len(seqs), max_len]``, keeping the last ``max_len`` items, left-padded."""
    out = np.full((len(seqs), max_len), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s):] = s
    return out


def subset(data: EvalSet, indices: Sequence[int] | np.ndarray) -> EvalSet:
    """The rows ``indices`` of an evaluation set (same order)."""
    idx = np.asarray(indices, dtype=np.int64)
    return EvalSet(data.users[idx], [data.histories[i] for i in idx], data.targets[idx])


def sample_users(n: int, max_users: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``max_users`` of ``n`` users (all when ``None``)."""
    if max_users is None or max_users >= n:
        return np.arange(n, dtype=np.int64)
    if max_users < 1:
        raise ConfigError(f"max_users must be >= 1, got {max_users}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_users, replace=False)).astype(np.int64)


def recorded_holdout(config: Mapping[str, Any] | None) -> tuple[float, int]:
    """``(cold_items, cold_seed)`` of a config mapping (a baseline's, a tokenizer's ``cold_start``,
    a run's ``tasks``); ``(0.0, 0)`` when it holds no items out, whatever its seed says."""
    share = float((config or {}).get("cold_items", 0.0) or 0.0)
    return (share, int((config or {}).get("cold_seed", 0) or 0)) if share else (0.0, 0)


def cold_item_mask(num_items: int, share: float, seed: int) -> np.ndarray:
    """``[N]`` bool: the seeded ``share`` of the catalog that the cold-start protocol holds out.

    The same ``(num_items, share, seed)`` always gives the same items, so a baseline, a tokenizer
    and a training run with the same ``cold_items`` / ``cold_seed`` hold out the same items.
    """
    if not 0.0 < share < 1.0:
        raise ConfigError(f"cold_items must be in (0, 1) (the share of items held out), got {share}")
    rng = np.random.default_rng(seed)
    cold = np.zeros(num_items, dtype=bool)
    cold[rng.choice(num_items, size=max(1, round(share * num_items)), replace=False)] = True
    return cold


def hold_out_items(split: Split, share: float, seed: int) -> tuple[Split, np.ndarray]:
    """Cold-start protocol: a seeded ``share`` of the catalog never reaches training.

    Every interaction with a held-out item is removed from the training prefixes and from the
    validation and test *histories*; validation and test *targets* are kept, so the test users
    whose target is held out (``cold[split.test.targets]``) measure recommendation of items no
    model has seen an interaction with. Returns the new split and ``cold`` ``[N]`` bool.
    """
    cold = cold_item_mask(split.num_items, share, seed)

    def keep(seq: np.ndarray) -> np.ndarray:
        return seq[~cold[seq]]

    # Histories are rebuilt from the full prefixes (s[:-2], then s[:-1]) rather than from the cut ones,
    # so a history keeps max_history items when the user has that many warm ones.
    valid = EvalSet(split.valid.users, [keep(p)[-split.max_history:] for p in split.train], split.valid.targets)
    test_hist = [np.concatenate([p, [t]]) for p, t in zip(split.train, split.valid.targets)]
    test = EvalSet(split.test.users, [keep(h)[-split.max_history:] for h in test_hist], split.test.targets)
    out = Split(num_items=split.num_items, max_history=split.max_history, train=[keep(p) for p in split.train],
                valid=valid, test=test)
    return out, cold
