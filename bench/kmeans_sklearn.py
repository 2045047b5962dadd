"""genrec's k-means trees next to scikit-learn's KMeans: time and balance, in a few seconds.

    python bench/kmeans_sklearn.py                      # 4,000 x 32, K = 64 x 64 (about 3 s)
    python bench/kmeans_sklearn.py --items 20000 --k 32

Synthetic item embeddings (a mixture of Gaussian clusters with Zipf sizes, as real catalogs are
unbalanced) are clustered into a two-level code tree by each ``kmeans.method``: ``balanced``
(genrec's equal-size tree, the default), ``plain`` (genrec's Lloyd loop, unconstrained) and
``sklearn`` (``sklearn.cluster.KMeans`` at every node, the reference plain k-means). Per method:
wall time, the first level's cluster sizes (largest / smallest / coefficient of variation), its
distortion (mean squared distance to the centroid) and the share of items whose code path is
unique. One BLAS / OpenMP thread for every method, so the times compare the algorithms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genrec.item_tokenizer.kmeans import cluster_means
from genrec.item_tokenizer.tree import fit_tree

METHODS = ("balanced", "plain", "sklearn")


def synthetic(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """``[n, dim]`` float32 points around ``clusters`` centres with Zipf-distributed sizes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
    p = 1.0 / np.arange(1, clusters + 1) ** 0.8
    labels = rng.choice(clusters, n, p=p / p.sum())
    return (centres[labels] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


def measure(x: np.ndarray, k: int, method: str, seed: int) -> dict[str, float]:
    t0 = time.perf_counter()
    tree = fit_tree(x, [k, k], method, seed, progress=False)
    seconds = time.perf_counter() - t0
    first = tree.codes[:, 0]
    means, sizes = cluster_means(x, first, k)
    sizes = sizes[sizes > 0]
    _, counts = np.unique(tree.codes, axis=0, return_counts=True)
    return {"seconds": seconds, "largest": int(sizes.max()), "smallest": int(sizes.min()),
            "cv": float(sizes.std() / sizes.mean()),
            "distortion": float(((x - means[first]) ** 2).sum(axis=1).mean()),
            "unique": float(counts[counts == 1].sum() / len(x))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=4000, help="synthetic items (default 4000)")
    p.add_argument("--dim", type=int, default=32, help="embedding width (default 32)")
    p.add_argument("--k", type=int, default=64, help="branching per level, two levels (default 64)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    x = synthetic(args.items, args.dim, clusters=4 * args.k, seed=args.seed)
    print(f"{args.items} items x {args.dim}-d, K = {args.k} x {args.k}, one thread; level-0 cluster sizes "
          f"(ideal {args.items / args.k:.0f}), distortion = mean squared distance to the level-0 centroid")
    print(f"{'method':<9} {'seconds':>8} {'largest':>8} {'smallest':>9} {'size cv':>8} {'distortion':>11} "
          f"{'unique paths':>13}")
    with threadpool_limits(limits=1):
        for method in METHODS:
            m = measure(x, args.k, method, args.seed)
            print(f"{method:<9} {m['seconds']:8.2f} {m['largest']:8d} {m['smallest']:9d} {m['cv']:8.3f} "
                  f"{m['distortion']:11.3f} {m['unique']:13.1%}")


if __name__ == "__main__":
    main()
