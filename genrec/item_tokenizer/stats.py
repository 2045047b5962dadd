"""Code statistics per level: how many clusters are used, how even they are, how much they say.

For codes ``[N, L]`` and each level ``l`` the *clusters* are the distinct prefixes
``codes[:, :l+1]`` (tree nodes), the *codes* the distinct values of column ``l`` alone (the
vocabulary actually used at that position):

- ``K``: configured branching; ``clusters_used`` / ``codes_used``;
- ``largest_cluster`` / ``smallest_cluster``: items under the biggest / smallest prefix;
- ``entropy_bits``: entropy of the prefix distribution (``log2 N`` when every prefix is unique);
- ``code_entropy_bits``: entropy of column ``l`` alone (``log2 K`` when codes are used evenly);
- ``collision_rate``: ``1 - clusters_used / N``, the share of items not yet told apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genrec.item_tokenizer.codebook import Codebook, prefix_ids


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a distribution given by non-negative ``counts``."""
    counts = counts[counts > 0].astype(np.float64)
    if counts.sum() == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def prefix_sizes(codes: np.ndarray, level: int) -> np.ndarray:
    """Sizes of the groups of items sharing ``codes[:, :level+1]``."""
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    ids = prefix_ids(codes[:, :level + 1])[-1]
    return np.bincount(ids)


def level_stats(codes: np.ndarray, ks: Sequence[int]) -> list[dict[str, Any]]:
    """One dict per level of ``codes [N, L]`` with the keys in the module docstring."""
    n = codes.shape[0]
    out = []
    ids = prefix_ids(codes) if n else [np.zeros(0, np.int64)] * len(ks)
    for lvl, k in enumerate(ks):
        sizes = np.bincount(ids[lvl]) if n else np.zeros(0, np.int64)
        code_counts = np.bincount(codes[:, lvl].astype(np.int64), minlength=1) if n else np.zeros(1, np.int64)
        out.append({
            "K": int(k),
            "clusters_used": len(sizes),
            "codes_used": int(np.count_nonzero(code_counts)),
            "largest_cluster": int(sizes.max()) if n else 0,
            "smallest_cluster": int(sizes.min()) if n else 0,
            "entropy_bits": round(entropy_bits(sizes), 4),
            "code_entropy_bits": round(entropy_bits(code_counts), 4),
            "collision_rate": round(1.0 - len(sizes) / n, 6) if n else 0.0,
        })
    return out


def level_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """Plain-text table of :func:`level_stats` results, one line per (name, level)."""
    head = (f"{'codes':<28}{'lvl':>4}{'K':>6}{'used':>7}{'clusters':>10}{'largest':>9}"
            f"{'H(prefix)':>11}{'H(code)':>9}{'collision':>11}")
    lines = [head, "-" * len(head)]
    for name, levels in rows:
        for lvl, s in enumerate(levels):
            lines.append(f"{name if lvl == 0 else '':<28}{lvl:>4}{s['K']:>6}{s['codes_used']:>7}"
                         f"{s['clusters_used']:>10}{s['largest_cluster']:>9}{s['entropy_bits']:>11.3f}"
                         f"{s['code_entropy_bits']:>9.3f}{s['collision_rate']:>11.4f}")
    return "\n".join(lines)


def summary_stats(cb: Codebook, stream_meta: dict[str, dict[str, Any]], version: int = 1) -> dict[str, Any]:
    """stats.json content for a codebook (see docs/item_tokenizer.md for every key)."""
    lengths = cb.codes.shape[1] + (cb.disamb >= 0)
    streams, col = {}, 0
    for s in cb.order:
        width = len(cb.ks[s])
        codes = cb.codes[:, col:col + width]
        col += width
        levels = level_stats(codes, cb.ks[s])
        streams[s] = {**stream_meta.get(s, {}), "K": cb.ks[s], "depth": width,
                      "collision_rate": levels[-1]["collision_rate"], "levels": levels}
    ks_flat = [k for s in cb.order for k in cb.ks[s]]
    return {
        "version": version,
        "num_items": len(cb.item_ids),
        "collision_rate": round(cb.collision_rate, 6),
        "unique_rate": round(cb.unique_rate, 6),
        "disambiguated_items": int((cb.disamb >= 0).sum()),
        "index_length": {"min": int(lengths.min()) if len(lengths) else 0,
                         "max": int(lengths.max()) if len(lengths) else 0},
        "num_tokens": len(cb.vocabulary()),
        "streams": streams,
        "index": level_stats(cb.codes, ks_flat),
    }
