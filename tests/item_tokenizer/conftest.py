"""Fixtures for the item tokenizer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from itok_synthetic import make_dataset


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return make_dataset(tmp_path)
