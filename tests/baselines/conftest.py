"""Tiny in-test datasets for the baseline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genrec.data.dataset import Dataset, Item


def successor_dataset(num_items: int = 40, num_users: int = 160, seed: int = 0) -> Dataset:
    """Users walk the catalog in order: item ``i`` is always followed by ``i + 1`` (mod N).

    Starting points are uniform, so item popularity is flat and carries no signal; only the
    sequential pattern predicts the next item.
    """
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        start, length = int(rng.integers(num_items)), int(rng.integers(5, 12))
        seqs.append(np.arange(start, start + length, dtype=np.int64) % num_items)
    items = [Item(item_id=f"item{i}", title=f"Item {i}") for i in range(num_items)]
    return Dataset(items=items, users=[f"user{u}" for u in range(num_users)], sequences=seqs,
                   stats={"users": num_users, "items": num_items, "interactions": int(sum(map(len, seqs)))})


@pytest.fixture
def successor() -> Dataset:
    return successor_dataset()


@pytest.fixture
def successor_dir(tmp_path: Path) -> Path:
    return successor_dataset().save(tmp_path / "ds")
