"""Interactions as columns: integer codes into user / item vocabularies plus a time column.

A reader of a large source (10^7-10^8 rows) appends rows or whole Arrow batches to an
:class:`InteractionColumns`, which keeps 4 + 4 (+ 8) bytes per row instead of a Python tuple of
strings; :func:`group_columns` then does what :func:`genrec.data.dataset.build_dataset` does for
row lists (unknown items, chronological order, short users, the catalog) with numpy sorts, and
gives exactly the same dataset. :class:`Interactions` still reads as a sequence of
``(user_id, item_id, timestamp)`` tuples for code that iterates it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from genrec.errors import DataError


class Interactions(Sequence):
    """Rows ``(user_id, item_id, timestamp | None)`` stored as ``users [R]`` / ``items [R]`` int codes
    into ``user_ids`` / ``item_ids`` and ``times [R]`` float64 (``None``: no time column)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, times: np.ndarray | None, user_ids: list[str],
                 item_ids: list[str]) -> None:
        self.users, self.items, self.times = users, items, times
        self.user_ids, self.item_ids = user_ids, item_ids

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, r: Any) -> Any:
        if isinstance(r, slice):
            return [self[j] for j in range(*r.indices(len(self)))]
        t = None if self.times is None else float(self.times[r])
        return self.user_ids[self.users[r]], self.item_ids[self.items[r]], t

    def __iter__(self) -> Iterator[tuple[str, str, float | None]]:
        times = self.times.tolist() if self.times is not None else [None] * len(self)
        for u, i, t in zip(self.users.tolist(), self.items.tolist(), times):
            yield self.user_ids[u], self.item_ids[i], t

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, tuple, Interactions)) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def take(self, keep: np.ndarray) -> Interactions:
        """The rows where the bool mask ``keep [R]`` holds, in order."""
        return Interactions(self.users[keep], self.items[keep], None if self.times is None else self.times[keep],
                            self.user_ids, self.item_ids)


class InteractionColumns:
    """Accumulates rows (:meth:`add`) or Arrow-decoded batches (:meth:`add_coded`) into columns."""

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self._users: dict[str, int] = {}
        self._items: dict[str, int] = {}
        self._u, self._i, self._t = array("i"), array("i"), array("d")
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def add(self, user: str, item: str, ts: float | None) -> None:
        """One row (ids already normalised)."""
        self._u.append(self._users.setdefault(user, len(self._users)))
        self._i.append(self._items.setdefault(item, len(self._items)))
        if self.timed:
            self._t.append(ts)  # type: ignore[arg-type]

    def lookup(self, keys: list[str | None], users: bool) -> np.ndarray:
        """Codes ``[K + 1]`` for batch-local keys (``None`` = missing → ``-1``); the extra last
        entry is ``-1`` too, so local index ``-1`` (a null) maps to missing."""
        vocab = self._users if users else self._items
        return np.asarray([-1 if k is None else vocab.setdefault(k, len(vocab)) for k in keys] + [-1], np.int32)

    def add_coded(self, users: np.ndarray, items: np.ndarray, times: np.ndarray | None) -> None:
        """Rows already coded with :meth:`lookup` (every code >= 0)."""
        self._flush()
        self._chunks.append((users.astype(np.int32), items.astype(np.int32),
                             None if times is None else times.astype(np.float64)))

    def _flush(self) -> None:
        if len(self._u):
            t = np.frombuffer(self._t, np.float64).copy() if self.timed else None
            self._chunks.append((np.frombuffer(self._u, np.int32).copy(), np.frombuffer(self._i, np.int32).copy(), t))
            self._u, self._i, self._t = array("i"), array("i"), array("d")

    def build(self) -> Interactions:
        self._flush()
        chunks, self._chunks = self._chunks, []
        def cat(k: int, dtype: type = np.int32) -> np.ndarray:
            return np.concatenate([c[k] for c in chunks]) if chunks else np.zeros(0, dtype)

        times = cat(2, np.float64) if self.timed else None
        return Interactions(cat(0), cat(1), times, list(self._users), list(self._items))


def drop_duplicates(inter: Interactions) -> tuple[Interactions, int]:
    """Keep the first of rows with equal ``(user, item, time)``; returns the rows and the count dropped."""
    n = len(inter)
    keys = [inter.items, inter.users] if inter.times is None else [inter.times, inter.items, inter.users]
    order = np.lexsort([np.arange(n), *keys])  # groups of equal rows, earliest first
    same = np.ones(max(n - 1, 0), bool)
    for key in keys:
        k = key[order]
        same &= k[1:] == k[:-1]
    dup = np.zeros(n, bool)
    dup[order[1:][same]] = True
    return inter.take(~dup), int(dup.sum())


def k_core_columns(inter: Interactions, k: int) -> tuple[Interactions, dict[str, int]]:
    """:func:`genrec.data.formats.amazon.k_core` on columns: drop users and items with fewer than
    ``k`` rows until none is left; counts removed."""
    def distinct(x: Interactions) -> tuple[int, int]:
        return int(np.count_nonzero(np.bincount(x.users))), int(np.count_nonzero(np.bincount(x.items)))

    users0, items0 = distinct(inter)
    n0 = len(inter)
    while k > 0 and len(inter):
        keep = (np.bincount(inter.users)[inter.users] >= k) & (np.bincount(inter.items)[inter.items] >= k)
        if keep.all():
            break
        inter = inter.take(keep)
    users1, items1 = distinct(inter) if len(inter) else (0, 0)
    return inter, {"kcore_users_removed": users0 - users1, "kcore_items_removed": items0 - items1,
                   "kcore_interactions_removed": n0 - len(inter)}


def group_columns(inter: Interactions, items: dict[str, Any] | None, *, strict: bool,
                  min_user_interactions: int, counts: dict[str, int]
                  ) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray, set[str]]:
    """The row-list rules of ``build_dataset`` on columns: ``(users, codes, times, splits, used)``.

    ``users`` in order of first interaction; ``codes [R']`` (into ``inter.item_ids``) and ``times``
    are their rows, user after user, each user's in time order (ties keep source order);
    ``np.split(codes, splits)`` gives the per-user sequences; ``used`` is the set of item ids
    that occur. ``counts`` receives the cleaning counts.
    """
    u, i, t = inter.users, inter.items, inter.times
    unknown = 0
    if items is not None:
        known = np.fromiter((iid in items for iid in inter.item_ids), bool, len(inter.item_ids))
        bad = ~known[i] if len(i) else np.zeros(0, bool)
        unknown = int(bad.sum())
        if unknown:
            examples = [inter.item_ids[c] for c in i[np.flatnonzero(bad)[:3]].tolist()]
            if strict:
                raise DataError(f"{unknown} interaction(s) refer to items absent from the item table "
                                f"(e.g. {examples}); fix the item file or drop --strict to skip them")
            u, i, t = u[~bad], i[~bad], None if t is None else t[~bad]
    counts["interactions_unknown_item_dropped"] = unknown

    n_users = len(inter.user_ids)
    per_user = np.bincount(u, minlength=n_users)
    first = np.full(n_users, len(u), np.int64)
    np.minimum.at(first, u, np.arange(len(u), dtype=np.int64))
    short = (per_user > 0) & (per_user < min_user_interactions)
    counts["users_too_short_dropped"] = int(short.sum())
    counts["interactions_of_short_users_dropped"] = int(per_user[short].sum())
    kept = np.flatnonzero(per_user >= max(min_user_interactions, 1))
    if not len(kept):
        raise DataError(f"no user has at least {min_user_interactions} interactions after cleaning; "
                        "check the input files and the column mapping")
    kept = kept[np.argsort(first[kept], kind="stable")]
    rank = np.full(n_users, -1, np.int64)
    rank[kept] = np.arange(len(kept))
    r = rank[u]
    rows = r >= 0
    r, i = r[rows], i[rows]
    t = None if t is None else t[rows]
    order = np.lexsort((t, r)) if t is not None else np.argsort(r, kind="stable")  # stable: ties keep order
    splits = np.cumsum(per_user[kept])[:-1]
    used = {inter.item_ids[c] for c in np.unique(i).tolist()}
    return ([inter.user_ids[k] for k in kept.tolist()], i[order], None if t is None else t[order], splits, used)
