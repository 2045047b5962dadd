"""Which preprocessing before clustering: raw, centred, centred + normalised, whitened.

    python bench/tokenizer_preprocess.py --recipe recipes/tokens_ml100k.yaml --data data/ml-100k --k 32
    python bench/tokenizer_preprocess.py --recipe recipes/tokens_scientific.yaml --data data/scientific \\
        --k 256 --category-level 2

Embeds the items with the recipe's semantic text encoder (through the embedding cache, so after a
`genrec tokens build` nothing is recomputed; or ``--embeddings FILE.npy``), prints how similar the
raw vectors are (mean cosine of random pairs, variance share of the largest dimensions), then for
each preprocessing clusters the items into ``--k`` balanced first-level clusters (3 seeds) and
reports the category purity of those clusters: the share of items whose category at
``--category-level`` (0 = first listed) is the most common one of their cluster, next to a random
relabelling with the same cluster sizes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from threadpoolctl import threadpool_limits

from genrec.config import load_config
from genrec.data.dataset import Dataset
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.item_tokenizer.preprocess import Preprocess, mean_pair_cosine
from genrec.item_tokenizer.tree import fit_tree

VARIANTS = [("raw", {"center": False}), ("centred", {}), ("centred + normalised", {"normalize": True}),
            ("normalised, not centred", {"center": False, "normalize": True}), ("whitened", {"whiten": True}),
            ("whitened + normalised", {"whiten": True, "normalize": True})]


def purity(codes: np.ndarray, labels: np.ndarray) -> float:
    keep = labels >= 0
    c, y = codes[keep], labels[keep]
    return sum(np.bincount(y[c == v]).max() for v in np.unique(c)) / len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--k", type=int, required=True, help="first-level clusters")
    ap.add_argument("--category-level", type=int, default=0)
    ap.add_argument("--embeddings", default=None, help="an .npy [N, D] instead of the recipe's text encoder")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()

    ds = Dataset.load(args.data)
    if args.embeddings:
        x = np.load(args.embeddings).astype(np.float32)
    else:
        from genrec.encoders.text import embed_items

        cfg = load_config(TokenizerConfig, args.recipe, [f"data={args.data}"])
        x = embed_items(ds.items, cfg.semantic.text, cache_dir=cfg.cache_dir, progress=False)
    lvl = args.category_level
    names = [it.categories[lvl] if len(it.categories) > lvl else None for it in ds.items]
    vocab = {v: i for i, v in enumerate(sorted({v for v in names if v is not None}))}
    labels = np.asarray([vocab[v] if v is not None else -1 for v in names])
    var = np.sort(x.var(axis=0))[::-1]
    print(f"{x.shape[0]:,} items x {x.shape[1]} dims; mean cosine of random pairs {mean_pair_cosine(x):.4f}; "
          f"variance share of the largest 1 / 5 / 20 dims: "
          f"{', '.join(f'{var[:j].sum() / var.sum():.3f}' for j in (1, 5, 20))}")
    print(f"{(labels >= 0).sum():,} items with a level-{lvl} category ({len(vocab)} categories); "
          f"K = {args.k} balanced first-level clusters, seeds 0..{args.seeds - 1}\n")
    rng = np.random.default_rng(0)
    print(f"{'preprocessing':<26}{'mean cos':>9}{'purity per seed':>28}{'mean':>8}{'shuffled':>10}")
    for name, kw in VARIANTS:
        xt = Preprocess.fit(x, **kw).apply(x)
        scores = []
        for seed in range(args.seeds):
            with threadpool_limits(limits=1, user_api="blas"):
                codes = fit_tree(xt, [args.k], "balanced", seed, progress=False).codes[:, 0]
            scores.append(purity(codes, labels))
        base = np.mean([purity(rng.permutation(codes), labels) for _ in range(5)])
        print(f"{name:<26}{mean_pair_cosine(xt):>9.3f}{' '.join(f'{p:.3f}' for p in scores):>28}"
              f"{np.mean(scores):>8.3f}{base:>10.3f}")


if __name__ == "__main__":
    main()
