"""Code trees: hierarchical (balanced or plain) k-means and residual k-means over one stream.

``fit_tree(x [N, D], ...)`` gives every item a path of ``L`` codes, one per level:

- ``balanced``: the root clusters all items into ``K_0`` equal-size groups (sizes differ by at
  most one); each group is clustered again into ``K_1`` equal-size groups, and so on. Node size
  at level ``l`` is at most ``ceil(N / (K_0 ... K_{l-1}))``, so with ``K_0 ... K_{L-1} >= N`` every
  last-level node holds at most ``K_{L-1}`` items and paths are unique by construction.
- ``plain``: the same tree with ordinary (unconstrained) k-means at each node.
- ``sklearn``: ``plain`` with ``sklearn.cluster.KMeans`` on every point of a node (the reference
  implementation of plain k-means; slower on large trees).
- ``residual``: RQ-KMeans; level ``l`` clusters the residuals left by levels ``< l`` with one
  global codebook per level (codes are not guaranteed unique).

Fallback: a node with ``n <= K`` items is not clustered; each item becomes its own child with
codes ``0 .. n-1`` in item order (``K_eff = n``), and the item's own embedding acts as the
child's centroid when new items are routed down the tree later.

Per level the tree stores its nodes (code prefix, child rows) so that new items can be routed
without refitting; see :class:`CodeTree` and :meth:`CodeTree.route`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genrec.item_tokenizer.balanced import balanced_kmeans
from genrec.item_tokenizer.kmeans import cluster_means, fit_centroids, nearest, sklearn_centroids
from genrec.item_tokenizer.preprocess import Preprocess

METHODS = ("balanced", "plain", "residual", "sklearn")


def resolve_branching(k: int | list[int], depth: int | str, n: int) -> list[int]:
    """Branching factor per level.

    ``k`` is one K for every level or a list per level. ``depth="auto"`` picks the smallest
    ``L >= 1`` with ``K_0 * ... * K_{L-1} >= n`` (a list is extended with its last value),
    the depth at which a balanced tree's paths become unique. An explicit list with
    ``depth="auto"`` is used as given when its product already covers ``n``.
    """
    ks = [int(k)] if isinstance(k, int) else [int(v) for v in k]
    if not ks or min(ks) < 2:
        raise ValueError(f"k must be >= 2 at every level, got {k!r}")
    if depth == "auto":
        out: list[int] = []
        prod = 1
        while prod < n or not out:
            out.append(ks[min(len(out), len(ks) - 1)])
            prod *= out[-1]
        if not isinstance(k, int) and len(out) < len(ks):
            out = ks
        return out
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be >= 1 or 'auto', got {depth}")
    if not isinstance(k, int) and len(ks) != depth:
        raise ValueError(f"k lists {len(ks)} levels but depth is {depth}")
    return [ks[min(i, len(ks) - 1)] for i in range(depth)]


@dataclass
class Level:
    """Nodes of one level. Node ``m`` has code prefix ``prefix[m]`` and children in rows
    ``offsets[m]:offsets[m+1]``; child row ``r`` has code ``code[r]`` and centroid
    ``centroids[ref[r]]`` when ``ref[r] >= 0``, else the embedding of item ``-ref[r] - 1``."""

    prefix: np.ndarray  # [M, l] int32, lexicographically sorted
    offsets: np.ndarray  # [M + 1] int64
    code: np.ndarray  # [R] int32
    ref: np.ndarray  # [R] int64
    centroids: np.ndarray  # [C, D] float32


@dataclass
class CodeTree:
    """A fitted tree: ``codes [N, L]`` of the build items plus the routing tables."""

    method: str
    ks: list[int]
    codes: np.ndarray
    levels: list[Level]
    # transform of raw embeddings into the space the centroids live in (identity unless set)
    preprocess: Preprocess = field(default_factory=Preprocess)
    _index: list[dict[tuple[int, ...], int]] = field(default_factory=list, repr=False)

    @property
    def depth(self) -> int:
        return len(self.ks)

    def save(self, path: str | Path) -> None:
        """Write the routing tables as ``.npz`` (codes live in item_codes.json)."""
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps({"method": self.method, "ks": self.ks, "format": 1}))}
        for i, lv in enumerate(self.levels):
            for name in ("prefix", "offsets", "code", "ref", "centroids"):
                arrays[f"l{i}_{name}"] = getattr(lv, name)
        arrays.update(self.preprocess.to_arrays())
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> CodeTree:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            levels = [Level(*(z[f"l{i}_{n}"] for n in ("prefix", "offsets", "code", "ref", "centroids")))
                      for i in range(len(meta["ks"]))]
            pre = Preprocess.from_arrays(z)
        return cls(meta["method"], list(meta["ks"]), np.zeros((0, len(meta["ks"])), np.int32), levels, pre)

    def route(self, x: np.ndarray, items: np.ndarray, path: list[int] | None = None
              ) -> tuple[list[int], list[int]]:
        """Route one new embedding ``x [D]`` down the tree.

        ``x`` and ``items [N, D]`` (the build items' embeddings, which fallback children use) are
        raw encoder outputs; the tree's :attr:`preprocess` maps both into its space. Without
        ``path`` each level takes the nearest child. With ``path`` (the codes of the new item's
        nearest existing item) levels above the last follow it: in a balanced tree the capacity
        constraint moves items off their nearest centroid, so the cells are not Voronoi cells
        and following the nearest item lands where that item actually is.
        Returns the codes ``[L]`` and, for the last level, every code of the last node in order
        of preference: children by distance, then codes the node leaves unused.
        """
        if not self._index:
            self._index = [{tuple(int(v) for v in p): m for m, p in enumerate(lv.prefix)} for lv in self.levels]
        codes: list[int] = []
        resid = self.preprocess.apply(np.asarray(x, dtype=np.float32)[None])[0]
        prefs: list[int] = []
        for lvl, lv in enumerate(self.levels):
            node = 0 if self.method == "residual" else self._index[lvl].get(tuple(codes))
            if node is None:  # only reachable when a routed path leaves the fitted tree
                codes.append(0)
                prefs = [0]
                continue
            if path is not None and lvl < self.depth - 1 and self.method != "residual":
                codes.append(int(path[lvl]))
                continue
            rows = np.arange(lv.offsets[node], lv.offsets[node + 1])
            refs = lv.ref[rows]
            own = refs >= 0
            vecs = np.empty((len(rows), resid.shape[0]), dtype=np.float32)
            vecs[own] = lv.centroids[refs[own]]
            if (~own).any():
                vecs[~own] = self.preprocess.apply(np.asarray(items[-refs[~own] - 1], dtype=np.float32))
            d = ((vecs - resid) ** 2).sum(axis=1)
            ranked = lv.code[rows][np.argsort(d, kind="stable")]
            codes.append(int(ranked[0]))
            if self.method == "residual":
                resid -= lv.centroids[lv.ref[rows][np.argmin(d)]]
            free = np.setdiff1d(np.arange(self.ks[lvl]), ranked)
            prefs = [int(c) for c in ranked] + [int(c) for c in free]
        return codes, prefs


def fit_tree(x: np.ndarray, ks: list[int], method: str = "balanced", seed: int = 0, *, iters: int = 10,
             sample_per_cluster: int = 64, init: str = "k-means++", refine: int = 2, tol: float = 0.01,
             name: str = "", progress: bool = True) -> CodeTree:
    """Fit a code tree on ``x [N, D]`` (float32, finite) with branching ``ks`` per level."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    kw = {"iters": iters, "sample_per_cluster": sample_per_cluster, "init": init, "tol": tol}
    if method == "residual":
        return _fit_residual(x, ks, seed, kw, name, progress)
    n = x.shape[0]
    codes = np.zeros((n, len(ks)), dtype=np.int32)
    order = np.arange(n)  # items grouped by code prefix, item order inside a node
    starts = np.array([0], dtype=np.int64)
    levels: list[Level] = []
    for lvl, k in enumerate(ks):
        ends = np.append(starts[1:], n)
        sizes = ends - starts
        big = np.flatnonzero(sizes > k)
        counts = sizes.copy()
        fitted: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        bar = tqdm(big, desc=f"{name} level {lvl} (K={k}, {len(big)} nodes)".strip(), disable=not progress,
                   leave=False)
        for node in bar:
            s, e = int(starts[node]), int(ends[node])
            members = order[s:e]
            xn = x if e - s == n else x[members]
            rng = np.random.default_rng([seed, lvl, int(node)])
            c = (sklearn_centroids if method == "sklearn" else fit_centroids)(xn, k, rng, **kw)
            if method == "balanced":
                labels, c = balanced_kmeans(xn, c, refine=refine)
                used = np.arange(k)
            else:
                labels, _ = nearest(xn, c)
                c, csize = cluster_means(xn, labels, k)
                used = np.flatnonzero(csize > 0)
                c = c[used]
            codes[members, lvl] = labels
            fitted[int(node)] = (used.astype(np.int32), c)
            counts[node] = len(used)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        code = np.empty(offsets[-1], dtype=np.int32)
        ref = np.empty(offsets[-1], dtype=np.int64)
        # fallback nodes, all at once: each member is its own child, coded by rank in the node
        node_of = np.repeat(np.arange(len(starts)), sizes)
        small = sizes[node_of] <= k
        pos = np.flatnonzero(small)
        rank = pos - starts[node_of[pos]]
        rows = offsets[node_of[pos]] + rank
        code[rows] = rank
        ref[rows] = -(order[pos] + 1)
        codes[order[pos], lvl] = rank
        cents = [c for _, c in (fitted[m] for m in sorted(fitted))]
        row0 = 0
        for node in sorted(fitted):
            used, c = fitted[node]
            sl = slice(offsets[node], offsets[node] + len(used))
            code[sl], ref[sl] = used, np.arange(row0, row0 + len(used))
            row0 += len(used)
        dim = x.shape[1]
        levels.append(Level(prefix=codes[order[starts], :lvl].copy(), offsets=offsets, code=code, ref=ref,
                            centroids=np.concatenate(cents) if cents else np.zeros((0, dim), np.float32)))
        # regroup by the extended prefix: stable sort on (node, code) keeps item order inside groups
        key = node_of.astype(np.int64) * (k + 1) + codes[order, lvl]
        perm = np.argsort(key, kind="stable")
        order, key = order[perm], key[perm]
        starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])).astype(np.int64)
    return CodeTree(method, list(ks), codes, levels)


def _fit_residual(x: np.ndarray, ks: list[int], seed: int, kw: dict, name: str, progress: bool) -> CodeTree:
    n = x.shape[0]
    resid = x.copy()
    codes = np.zeros((n, len(ks)), dtype=np.int32)
    levels: list[Level] = []
    for lvl in tqdm(range(len(ks)), desc=f"{name} residual levels".strip(), disable=not progress, leave=False):
        k = min(ks[lvl], n)
        c = fit_centroids(resid, k, np.random.default_rng([seed, lvl]), **kw)
        labels, _ = nearest(resid, c)
        codes[:, lvl] = labels
        resid -= c[labels]
        levels.append(Level(prefix=np.zeros((1, lvl), np.int32), offsets=np.array([0, k], np.int64),
                            code=np.arange(k, dtype=np.int32), ref=np.arange(k, dtype=np.int64), centroids=c))
    return CodeTree("residual", list(ks), codes, levels)
