"""One reader per source format. Each module exposes ``read(path, **options) -> RawData``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from genrec.data.dataset import RawData
from genrec.errors import ConfigError

FORMATS: dict[str, str] = {
    "lcrec": "genrec.data.formats.lcrec",
    "p5": "genrec.data.formats.p5",
    "movielens": "genrec.data.formats.movielens",
    "recbole": "genrec.data.formats.recbole",
    "amazon": "genrec.data.formats.amazon",
    "table": "genrec.data.formats.table",
}


def read(fmt: str, path: str | Path, **options: Any) -> RawData:
    """Dispatch to the reader for ``fmt``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[fmt]).read(Path(path), **options)
