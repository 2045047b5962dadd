"""PNG plots of cluster-size distributions, one figure per stream, one panel per level."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genrec.item_tokenizer.stats import prefix_sizes


def plot_cluster_sizes(codes: np.ndarray, ks: Sequence[int], title: str, path: str | Path) -> Path:
    """Histogram of items per cluster (prefix) at every level of ``codes [N, L]``.

    A balanced tree shows one or two adjacent bars per level; a plain or residual tree shows
    the long tail that makes some codes far more common than others.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    path = Path(path)
    levels = len(ks)
    fig, axes = plt.subplots(1, levels, figsize=(4.2 * levels, 3.4), squeeze=False)
    for lvl, ax in enumerate(axes[0]):
        sizes = prefix_sizes(codes, lvl)
        vals, counts = np.unique(sizes, return_counts=True)
        if len(vals) <= 30:  # few distinct sizes (balanced trees): one labelled bar each
            ax.bar(np.arange(len(vals)), counts, color="#3b75af", width=0.7)
            step = -(-len(vals) // 8)
            ax.set_xticks(np.arange(len(vals))[::step], [str(v) for v in vals[::step]])
        else:
            ax.hist(sizes, bins=60, color="#3b75af", edgecolor="white", linewidth=0.4)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"level {lvl}: {len(sizes):,} clusters (K={ks[lvl]})", fontsize=9)
        ax.set_xlabel("items per cluster")
        ax.set_ylabel("clusters")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.2 / levels, right=0.98, bottom=0.16, top=0.8, wspace=0.35)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
