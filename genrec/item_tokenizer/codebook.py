"""The item index: stream codes combined in order, made unique, spelled as tokens.

An item's index is its codes from each stream in ``order`` (default semantic then behavior),
e.g. ``<s0_12><s1_40><b0_7><b1_200>``. A balanced tree with enough levels makes every path
unique, so nothing is added. Otherwise (plain / residual trees, or a fixed depth too shallow)
items sharing a whole index are told apart by one extra ``<d_n>`` token: every member of a
colliding group gets ``<d_0>, <d_1>, ...`` in item order, so no item's index is a prefix of
another's (a constrained decoder can then stop exactly at a complete index). Items that never
collide keep the plain index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genrec.errors import DataError
from genrec.item_tokenizer.vocab import DISAMBIGUATION, STREAM_LETTERS, parse_token, token, vocabulary


def prefix_ids(codes: np.ndarray) -> list[np.ndarray]:
    """Per level ``l``, a dense int64 id ``[N]`` of each item's prefix ``codes[:, :l+1]``.

    Built column by column with 1-D uniques (much faster than ``np.unique(axis=0)`` on a
    million rows) and never overflows: ids are re-densified at every level.
    """
    out: list[np.ndarray] = []
    prev = np.zeros(codes.shape[0], dtype=np.int64)
    for col in codes.T:
        col = col.astype(np.int64)
        span = int(col.max(initial=0)) - int(col.min(initial=0)) + 1
        _, prev = np.unique(prev * span + (col - col.min(initial=0)), return_inverse=True)
        prev = prev.reshape(-1).astype(np.int64)
        out.append(prev)
    return out


def row_keys(codes: np.ndarray) -> np.ndarray:
    """One dense int64 id per distinct row of ``codes [N, L]``."""
    if codes.shape[1] == 0:
        return np.zeros(codes.shape[0], dtype=np.int64)
    return prefix_ids(codes)[-1]


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """``[N]`` disambiguation numbers: rank (in item order) inside each group of identical
    rows of ``codes [N, L]`` that has more than one member, ``-1`` for unique rows."""
    keys = row_keys(codes)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    start = np.searchsorted(sk, sk, side="left")
    end = np.searchsorted(sk, sk, side="right")
    rank = np.arange(len(sk)) - start
    out = np.full(len(keys), -1, dtype=np.int64)
    multi = (end - start) > 1
    out[order[multi]] = rank[multi]
    return out


def collision_rate(codes: np.ndarray) -> float:
    """``1 - distinct rows / N`` of ``codes [N, L]`` (0 when every row is unique)."""
    n = codes.shape[0]
    return 0.0 if n == 0 else 1.0 - len(np.unique(row_keys(codes))) / n


@dataclass
class Codebook:
    """Item indices. ``codes [N, L]`` are the stream codes in ``order``; ``disamb [N]`` the
    ``<d_n>`` number or -1."""

    item_ids: list[str]
    order: list[str]
    ks: dict[str, list[int]]
    codes: np.ndarray
    disamb: np.ndarray

    @classmethod
    def from_streams(cls, item_ids: Sequence[str], stream_codes: dict[str, np.ndarray],
                     ks: dict[str, list[int]], order: Sequence[str]) -> Codebook:
        """Concatenate per-stream codes ``{stream: [N, L_s]}`` in ``order`` and disambiguate."""
        unknown = [s for s in order if s not in stream_codes]
        if unknown:
            raise ValueError(f"order names stream(s) {unknown} that were not built")
        codes = np.concatenate([stream_codes[s] for s in order], axis=1).astype(np.int32)
        return cls(list(item_ids), list(order), {s: list(ks[s]) for s in order}, codes, disambiguate(codes))

    @property
    def layout(self) -> list[tuple[str, int]]:
        """``(letter, level)`` of each index position, e.g. ``[("s", 0), ("s", 1), ("b", 0), ...]``."""
        return [(STREAM_LETTERS[s], lvl) for s in self.order for lvl in range(len(self.ks[s]))]

    @property
    def collision_rate(self) -> float:
        """Share of items whose stream codes alone are not unique (before ``<d_n>``)."""
        return collision_rate(self.codes)

    @property
    def unique_rate(self) -> float:
        """Distinct full indices (with ``<d_n>``) / items; 1.0 for a valid codebook."""
        full = np.concatenate([self.codes, self.disamb[:, None]], axis=1)
        return 1.0 if len(full) == 0 else len(np.unique(row_keys(full))) / len(full)

    def vocabulary(self) -> list[str]:
        """All new tokens: every code of every level of every stream, then the ``<d_n>`` used."""
        n_d = int(self.disamb.max()) + 1 if len(self.disamb) and self.disamb.max() >= 0 else 0
        return vocabulary([(STREAM_LETTERS[s], self.ks[s]) for s in self.order], n_d)

    def item_tokens(self) -> list[list[str]]:
        """Tokens of every item, in item order (vectorised through per-position string tables)."""
        cols = []
        for (letter, level), k, col in zip(self.layout, self._level_sizes(), self.codes.T):
            table = np.asarray([token(letter, level, c) for c in range(max(k, int(col.max(initial=0)) + 1))],
                               dtype=object)
            cols.append(table[col])
        out = [list(row) for row in zip(*cols)] if cols else [[] for _ in self.item_ids]
        for i in np.flatnonzero(self.disamb >= 0):
            out[i].append(token(DISAMBIGUATION, None, int(self.disamb[i])))
        return out

    def _level_sizes(self) -> list[int]:
        return [k for s in self.order for k in self.ks[s]]

    @classmethod
    def from_item_tokens(cls, item_tokens: dict[str, list[str]], ks: dict[str, list[int]],
                         order: Sequence[str]) -> Codebook:
        """Parse ``{item_id: [token, ...]}`` (as in item_codes.json) back into codes."""
        letters = [(STREAM_LETTERS[s], lvl) for s in order for lvl in range(len(ks[s]))]
        n = len(item_tokens)
        codes = np.zeros((n, len(letters)), dtype=np.int32)
        disamb = np.full(n, -1, dtype=np.int64)
        for i, (item, toks) in enumerate(item_tokens.items()):
            if len(toks) not in (len(letters), len(letters) + 1):
                raise DataError(f"item {item!r} has {len(toks)} tokens; expected {len(letters)} "
                                f"(+1 disambiguation token)")
            for pos, tok in enumerate(toks):
                letter, level, code = parse_token(tok)
                if pos < len(letters):
                    if (letter, level) != letters[pos]:
                        raise DataError(f"item {item!r}: token {tok} at position {pos}, expected a "
                                        f"<{letters[pos][0]}{letters[pos][1]}_N> token")
                    codes[i, pos] = code
                elif letter != DISAMBIGUATION:
                    raise DataError(f"item {item!r}: extra token {tok} is not a <d_N> token")
                else:
                    disamb[i] = code
        return cls(list(item_tokens), list(order), {s: list(ks[s]) for s in order}, codes, disamb)
