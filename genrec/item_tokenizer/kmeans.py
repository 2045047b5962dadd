"""Flat k-means primitives: seeding, Lloyd iterations, chunked nearest-centroid search.

Everything works on float32 numpy arrays and is deterministic given a ``numpy.random.Generator``.
Distances are squared Euclidean, computed as ``|c|^2 - 2 x.c`` (the ``|x|^2`` term does not
change which centroid is nearest) in row chunks so that memory stays ``O(chunk * K)`` however
many points there are. A hand-written Lloyd loop is used instead of ``sklearn.cluster.KMeans``
because a tree fits thousands of small nodes: at an equal budget (one init, 10 iterations,
K=256, 256-d) it ran 2-7x faster than sklearn pinned to one BLAS thread, and sklearn's default
threading was slower still on a busy 2-core machine (``bench/tokenizer_scale.py
--compare-sklearn``). sklearn's greedy seeding over all points reaches a lower unconstrained
distortion; after the balanced assignment that the tree keeps, the difference vanished in our
measurements (docs/item_tokenizer.md). :func:`sklearn_centroids` runs ``sklearn.cluster.KMeans``
on a whole node instead: the reference plain k-means of ``kmeans.method: sklearn``
(``bench/kmeans_sklearn.py`` prints both side by side).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: rows per distance block; 16k x 256 centroids x 4 bytes = 16 MiB per block
CHUNK = 16384
#: points per cluster that k-means++ seeding looks at (it is sequential in K, so kept small)
SEED_PER_CLUSTER = 8
#: nodes with at least this many points per cluster get greedy k-means++ (2 + ln K trials)
GREEDY_MIN_PER_CLUSTER = 16


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Row squared norms ``[N]`` of ``x [N, D]`` (float32)."""
    return np.einsum("ij,ij->i", x, x)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, trials: int = 1) -> np.ndarray:
    """k-means++ seeding: ``k`` rows of ``x [N, D]`` drawn with probability ~ squared distance.

    With ``trials > 1`` each step draws that many candidates and keeps the one that lowers the
    total squared distance most (greedy k-means++, as sklearn does with ``2 + ln K``), which
    rarely merges two true clusters; ``trials=1`` is the classic single draw. Duplicate points
    are handled: once every point coincides with a centre, the remaining centres are drawn
    uniformly from the points not yet chosen. Returns ``[k, D]``.
    """
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    if k > n:
        raise ValueError(f"cannot seed {k} centres from {n} points")
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    xx = sq_norms(x)
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    # thousands of tiny products: BLAS threads only add synchronisation cost here
    with threadpool_limits(limits=1, user_api="blas"):
        d2 = np.maximum(xx - 2.0 * (x @ x[chosen[0]]) + xx[chosen[0]], 0.0)
        for j in range(1, k):
            cum = np.cumsum(d2, dtype=np.float64)
            if cum[-1] > 0.0:
                cand = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1], side="right"), n - 1)
                cand = cand[~taken[cand]]
                if not len(cand):  # float round-off landed on zero-weight points only
                    free = np.flatnonzero(~taken)
                    cand = free[[int(np.argmax(d2[free]))]]
            else:
                cand = np.asarray([rng.choice(np.flatnonzero(~taken))])
            dc = xx[:, None] - 2.0 * (x @ x[cand].T) + xx[cand][None, :]  # [N, L]
            np.maximum(dc, 0.0, out=dc)
            np.minimum(dc, d2[:, None], out=dc)
            best = int(np.argmin(dc.sum(axis=0))) if len(cand) > 1 else 0
            chosen[j] = cand[best]
            taken[cand[best]] = True
            d2 = dc[:, best].copy()
    return x[chosen].copy()


def nearest(x: np.ndarray, c: np.ndarray, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid per row: labels ``[N]`` int64 and squared distances ``[N]`` float32."""
    cc = sq_norms(c)
    labels = np.empty(x.shape[0], dtype=np.int64)
    dist = np.empty(x.shape[0], dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        d = xb @ c.T
        d *= -2.0
        d += cc
        lab = d.argmin(axis=1)
        labels[s:s + chunk] = lab
        dist[s:s + chunk] = np.maximum(d[np.arange(len(xb)), lab] + sq_norms(xb), 0.0)
    return labels, dist


def top_candidates(x: np.ndarray, c: np.ndarray, m: int, allowed: np.ndarray | None = None,
                   chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` nearest centroids per row, nearest first.

    ``allowed`` (bool ``[K]``) restricts the search to some centroids. Returns indices
    ``[N, m]`` int32 and distances ``[N, m]`` float32 (up to the constant ``|x|^2``, which
    does not change any ordering or difference between two centroids of the same row).
    """
    cols = np.arange(c.shape[0]) if allowed is None else np.flatnonzero(allowed)
    m = min(m, len(cols))
    sub = c[cols]
    cc = sq_norms(sub)
    idx = np.empty((x.shape[0], m), dtype=np.int32)
    val = np.empty((x.shape[0], m), dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        d = x[s:s + chunk] @ sub.T
        d *= -2.0
        d += cc
        if m < d.shape[1]:
            part = np.argpartition(d, m - 1, axis=1)[:, :m]
        else:
            part = np.broadcast_to(np.arange(d.shape[1]), d.shape)
        pd = np.take_along_axis(d, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx[s:s + chunk] = cols[np.take_along_axis(part, order, axis=1)]
        val[s:s + chunk] = np.take_along_axis(pd, order, axis=1)
    return idx, val


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster means ``[k, D]`` (zero rows for empty clusters) and sizes ``[k]``."""
    n = x.shape[0]
    onehot = sp.csr_matrix((np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(onehot @ x, dtype=np.float32)
    sizes = np.bincount(labels, minlength=k)
    sums /= np.maximum(sizes, 1)[:, None].astype(np.float32)
    return sums, sizes


def lloyd(x: np.ndarray, centroids: np.ndarray, iters: int, tol: float = 1e-3) -> np.ndarray:
    """Lloyd iterations from ``centroids [K, D]`` on ``x [N, D]``; returns refined ``[K, D]``.

    Stops early once fewer than ``tol * N`` labels change. An empty cluster is re-seeded
    with the point currently farthest from its centroid, so K stays fully used.
    """
    c = centroids.astype(np.float32, copy=True)
    k = c.shape[0]
    prev: np.ndarray | None = None
    for _ in range(iters):
        labels, dist = nearest(x, c)
        if prev is not None and np.count_nonzero(labels != prev) <= tol * len(labels):
            break
        prev = labels
        means, sizes = cluster_means(x, labels, k)
        empty = np.flatnonzero(sizes == 0)
        if len(empty):
            far = np.argsort(-dist, kind="stable")[:len(empty)]
            means[empty[:len(far)]] = x[far]
        c = means
    return c


def fit_centroids(x: np.ndarray, k: int, rng: np.random.Generator, *, iters: int = 20,
                  sample_per_cluster: int = 64, init: str = "k-means++", tol: float = 1e-3) -> np.ndarray:
    """k-means centroids ``[k, D]`` of ``x [N, D]`` (``k <= N``).

    Centroids are fitted on a random subsample of at most ``k * sample_per_cluster`` rows
    (every row when that is larger than ``N``): the centroids of a large node are as good
    from a few dozen points per cluster, and the full node is then assigned in one pass.
    """
    n = x.shape[0]
    if k > n:
        raise ValueError(f"k={k} centroids need at least {k} points, got {n}")
    cap = max(k * sample_per_cluster, k)
    if n > cap:
        xs = x[np.sort(rng.choice(n, cap, replace=False))]
    else:
        xs = x
    if init == "k-means++":
        # seeding is K sequential passes over its points: seed from a few per cluster; greedy
        # trials where clusters are large enough to be worth it (few such nodes per tree)
        seed_rows = xs if xs.shape[0] <= k * SEED_PER_CLUSTER else \
            xs[np.sort(rng.choice(xs.shape[0], k * SEED_PER_CLUSTER, replace=False))]
        trials = 2 + int(np.log(k)) if n >= GREEDY_MIN_PER_CLUSTER * k else 1
        c0 = kmeans_pp(seed_rows, k, rng, trials)
    elif init == "random":
        c0 = xs[np.sort(rng.choice(xs.shape[0], k, replace=False))].copy()
    else:
        raise ValueError(f"unknown k-means init {init!r} (use 'k-means++' or 'random')")
    return lloyd(xs, c0, iters, tol)


def sklearn_centroids(x: np.ndarray, k: int, rng: np.random.Generator, *, iters: int = 20, init: str = "k-means++",
                      **_: object) -> np.ndarray:
    """``sklearn.cluster.KMeans`` centroids ``[k, D]`` of every row of ``x [N, D]`` (one init, at most
    ``iters`` Lloyd iterations, seeded from ``rng``); the reference for :func:`fit_centroids`."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=max(iters, 1), random_state=int(rng.integers(2**31 - 1)))
    return km.fit(x).cluster_centers_.astype(np.float32)
