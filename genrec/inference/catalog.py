"""The catalog a run serves: its items, from the run itself or from a dataset directory.

``genrec train`` and ``genrec export`` put the catalog in the run (``catalog.jsonl``: the
dataset's ``items.jsonl``, one item per line in item-index order, with the ids, titles and
attributes the request filters read), so serving needs no dataset directory. Where the items
come from, first match wins:

1. a dataset directory given explicitly (``--data DIR``, ``data_dir=``): its ``items.jsonl``
   (refused when its item ids are not the run's ``catalog.jsonl`` ids in the same order);
2. the run's ``catalog.jsonl``;
3. the dataset directory recorded in the run's ``config.yaml`` (``data``), for runs written
   before the catalog travelled with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from genrec import run_dir as layout
from genrec.data.dataset import Item
from genrec.errors import DataError
from genrec.io import atomic_file

ITEMS = "items.jsonl"  # a dataset directory's item table (genrec.data.dataset)


def read_catalog(path: str | Path) -> list[Item]:
    """The items of a catalog (or ``items.jsonl``) file, in item-index order; :class:`DataError`
    names the line of a malformed record or a repeated item id."""
    path = Path(path)
    items: list[Item] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = Item(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as e:
                raise DataError(f"{path} line {lineno}: not an item record ({e})") from None
            if item.item_id in seen:
                raise DataError(f"{path} line {lineno}: item id {item.item_id!r} appears twice")
            seen.add(item.item_id)
            items.append(item)
    if not items:
        raise DataError(f"{path} holds no items")
    return items


def write_catalog(items: Iterable[Item], path: str | Path) -> None:
    """Write ``items`` as a catalog file atomically (temp file in the same directory, then rename)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(asdict(it), ensure_ascii=False) + "\n" for it in items)


def load_catalog(run: str | Path, cfg: Mapping[str, Any], data_dir: str | Path | None = None
                 ) -> tuple[list[Item], Path | None]:
    """``(items, dataset directory)`` of a run (see the module docstring for the order).

    The dataset directory is ``data_dir``, else the recorded one when it still exists (``None``
    otherwise): informational once the catalog comes from the run.
    """
    run = Path(run)
    recorded = Path(str(cfg.get("data"))) if cfg.get("data") else None
    if data_dir is not None:
        data = Path(data_dir)
        if not (data / ITEMS).is_file():
            raise DataError(f"dataset directory {data} given as data_dir does not exist or holds no {ITEMS}; pass "
                            "the dataset the model was trained on with --data DIR (Python: data_dir=DIR)")
        items = read_catalog(data / ITEMS)
        if (run / layout.CATALOG).is_file():
            own = [it.item_id for it in read_catalog(run / layout.CATALOG)]
            if [it.item_id for it in items] != own:
                raise DataError(f"the items of {data / ITEMS} differ from the catalog the run was trained on "
                                f"({run / layout.CATALOG}: {len(own)} items, in item-index order); pass the dataset "
                                "the model was trained on, or leave out --data to serve the run's own catalog")
        return items, data
    if (run / layout.CATALOG).is_file():
        return read_catalog(run / layout.CATALOG), recorded if recorded and recorded.is_dir() else None
    if recorded is None or not (recorded / ITEMS).is_file():
        raise DataError(f"{run} has no {layout.CATALOG} (written before runs carried their catalog) and the dataset "
                        f"directory recorded in {run / layout.CONFIG} (`data`: {recorded}) does not exist or holds "
                        f"no {ITEMS}; pass the dataset the model was trained on with --data DIR (Python: data_dir=DIR)")
    return read_catalog(recorded / ITEMS), recorded
