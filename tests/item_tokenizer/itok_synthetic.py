"""Synthetic embeddings and tiny dataset directories for the item tokenizer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrec.data.dataset import Item, RawData, build_dataset


def blobs(n: int, dim: int, centers: int, seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``centers`` well-separated unit-norm centres: (points [n, dim], centre id [n])."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    label = np.arange(n) % centers
    return (c[label] + spread * rng.standard_normal((n, dim))).astype(np.float32), label


def make_dataset(root: Path, n_items: int = 60, n_users: int = 40, seed: int = 0) -> Path:
    """A tiny canonical dataset dir: items with genre-like titles, users with 5-12 interactions."""
    rng = np.random.default_rng(seed)
    genres = ["space opera", "cowboy western", "kitchen cooking", "jazz piano", "garden tools", "chess puzzles"]
    items = {f"it{i}": Item(f"it{i}", title=f"{genres[i % len(genres)]} volume {i}",
                            categories=[genres[i % len(genres)]]) for i in range(n_items)}
    inter = []
    for u in range(n_users):
        g = u % len(genres)  # each user mostly stays in one genre
        pool = [i for i in range(n_items) if i % len(genres) == g]
        for t, i in enumerate(rng.choice(pool, size=int(rng.integers(5, 10)), replace=False)):
            inter.append((f"u{u}", f"it{i}", float(t)))
    for i in range(n_items):  # every item interacted with at least once
        inter.append((f"u{i % n_users}", f"it{i}", 100.0 + i))
    ds = build_dataset(RawData(interactions=inter, items=items, format="test", inputs=[]))
    out = root / "data"
    ds.save(out)
    return out
