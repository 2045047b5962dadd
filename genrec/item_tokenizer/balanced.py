"""Capacity-constrained (balanced) assignment of points to fixed centroids.

``N`` points go to ``K`` clusters whose sizes are ``floor(N/K)`` or ``ceil(N/K)``, so sizes at a
node differ by at most one. The assignment is a vectorised greedy auction over each point's
``m`` nearest centroids:

1. every unassigned point proposes to its nearest centroid that still has room;
2. each centroid accepts up to its remaining room, preferring the proposers with the largest
   *regret* (distance to their next open choice minus distance to this one): points that lose
   most by going elsewhere are served first, which keeps the total distance low;
3. rejected points try again; a point whose ``m`` candidates all filled up has its distances to
   the still-open centroids recomputed.

Each round either places every point or fills at least one centroid, so there are at most
``K + 1`` rounds, each ``O(unassigned * m)``.
"""

from __future__ import annotations

import numpy as np

from genrec.item_tokenizer.kmeans import cluster_means, sq_norms, top_candidates

#: candidate centroids kept per point; exhausted lists are refilled from the open centroids
CANDIDATES = 16
#: largest node (points x clusters) assigned from its full distance matrix (64 MiB of float32)
DENSE_LIMIT = 1 << 24


def capacities(n: int, k: int, demand: np.ndarray) -> np.ndarray:
    """Cluster capacities ``[k]`` summing to ``n``: ``n // k`` each, plus one for the
    ``n % k`` clusters with the highest ``demand`` (first-choice counts; ties by index)."""
    base, extra = divmod(n, k)
    cap = np.full(k, base, dtype=np.int64)
    if extra:
        order = np.lexsort((np.arange(k), -demand))
        cap[order[:extra]] += 1
    return cap


def balanced_assign(x: np.ndarray, centroids: np.ndarray, m: int = CANDIDATES) -> np.ndarray:
    """Labels ``[N]`` assigning ``x [N, D]`` to ``centroids [K, D]`` with equal cluster sizes (±1).

    Nodes whose ``[N, K]`` distance matrix fits in :data:`DENSE_LIMIT` entries use it whole
    (masked argmins are cheaper than selecting candidates); larger ones keep ``m``
    candidates per point so memory stays ``O(N * m)``.
    """
    n, k = x.shape[0], centroids.shape[0]
    if k > n:
        raise ValueError(f"balanced assignment of {n} points into {k} clusters leaves clusters empty")
    if n * k <= DENSE_LIMIT:
        d = x @ centroids.T
        d *= -2.0
        d += sq_norms(centroids)
        return _assign_dense(d)
    cand, dist = top_candidates(x, centroids, m)
    remaining = capacities(n, k, np.bincount(cand[:, 0], minlength=k))
    labels = np.full(n, -1, dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        is_open = remaining[cand[todo]] > 0  # [T, m]
        exhausted = ~is_open.any(axis=1)
        if exhausted.any():
            rows = todo[exhausted]
            c2, d2 = top_candidates(x[rows], centroids, cand.shape[1], allowed=remaining > 0)
            width = c2.shape[1]
            cand[rows, :width], dist[rows, :width] = c2, d2
            if width < cand.shape[1]:  # fewer open centroids than list slots: pad with the last
                cand[rows, width:] = c2[:, -1:]
                dist[rows, width:] = d2[:, -1:]
            is_open[exhausted] = remaining[cand[rows]] > 0
        first = is_open.argmax(axis=1)
        rows = np.arange(len(todo))
        choice = cand[todo, first].astype(np.int64)
        best = dist[todo, first]
        # regret against the next open candidate; the list's last distance bounds it from below
        later = is_open.copy()
        later[rows, first] = False
        has_next = later.any(axis=1)
        nxt = np.where(has_next, dist[todo, later.argmax(axis=1)], dist[todo, -1])
        regret = nxt - best
        won = _accept(todo, choice, regret, remaining)
        labels[todo[won]] = choice[won]
        remaining -= np.bincount(choice[won], minlength=k)
        keep = np.ones(len(todo), dtype=bool)
        keep[won] = False
        todo = todo[keep]
    return labels


def _accept(todo: np.ndarray, choice: np.ndarray, regret: np.ndarray, remaining: np.ndarray
            ) -> np.ndarray:
    """Positions in ``todo`` whose proposal to ``choice`` is accepted: per centroid, the
    highest-regret proposers up to its remaining room (point index breaks ties)."""
    order = np.lexsort((todo, -regret, choice))
    grouped = choice[order]
    rank = np.arange(len(order)) - np.searchsorted(grouped, grouped, side="left")
    return order[rank < remaining[grouped]]


def _assign_dense(d: np.ndarray) -> np.ndarray:
    """Balanced labels from a full distance matrix ``d [N, K]`` (modified in place)."""
    n, k = d.shape
    remaining = capacities(n, k, np.bincount(d.argmin(axis=1), minlength=k))
    labels = np.full(n, -1, dtype=np.int64)
    todo = np.arange(n)
    closed = np.zeros(k, dtype=bool)
    while len(todo):
        newly = (remaining == 0) & ~closed
        if newly.any():
            d[:, newly] = np.inf
            closed |= newly
        sub = d[todo]
        rows = np.arange(len(todo))
        choice = sub.argmin(axis=1)
        best = sub[rows, choice]
        sub[rows, choice] = np.inf
        regret = sub.min(axis=1) - best  # inf when no other centroid is open: must go here
        won = _accept(todo, choice, regret, remaining)
        labels[todo[won]] = choice[won]
        remaining -= np.bincount(choice[won], minlength=k)
        keep = np.ones(len(todo), dtype=bool)
        keep[won] = False
        todo = todo[keep]
    return labels


def balanced_kmeans(x: np.ndarray, centroids: np.ndarray, refine: int = 1,
                    m: int = CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels ``[N]`` and member-mean centroids ``[K, D]``.

    After the first balanced assignment, ``refine`` rounds move each centroid to the mean of
    its members and assign again (balanced k-means); the returned centroids are the means
    of the final members, which is what routes new items to this node's children later.
    """
    labels = balanced_assign(x, centroids, m)
    means, _ = cluster_means(x, labels, centroids.shape[0])
    for _ in range(refine):
        new = balanced_assign(x, means, m)
        if np.array_equal(new, labels):
            break
        labels = new
        means, _ = cluster_means(x, labels, centroids.shape[0])
    return labels, means
