"""LC-Rec JSON files: ``NAME.inter.json`` + ``NAME.item.json``.

- ``NAME.inter.json``: ``{"user": [item, item, ...], ...}``, each list already chronological
  (there are no timestamps, so the order is kept);
- ``NAME.item.json``: ``{"item": {"title", "description", "brand", "categories"}, ...}``;
  ``categories`` may be a list or a comma-separated string; other keys go to ``Item.extra``.

``--path`` is the directory holding both files, or either file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genrec.data.dataset import Item, RawData
from genrec.data.formats.common import (
    ItemTable,
    Opt,
    as_text,
    check_options,
    find_one,
    id_str,
    json_object_entries,
    read_text,
    split_list,
)
from genrec.errors import DataError

OPTIONS = {
    "name": Opt(str, None, "dataset name NAME when the directory holds several NAME.inter.json", True),
    "encoding": Opt(str, "utf-8", "text encoding of both files"),
}
_INTER, _ITEM = ".inter.json", ".item.json"


def resolve(path: Path, name: str | None) -> tuple[Path, Path]:
    """``(inter_file, item_file)`` from a directory or either file."""
    if path.is_dir():
        if name:
            inter = path / f"{name}{_INTER}"
        else:
            inter = find_one(path, [f"*{_INTER}"], f"LC-Rec interaction file (NAME{_INTER})")
        stem = inter.name[: -len(_INTER)]
    elif path.name.endswith(_INTER):
        inter, stem = path, path.name[: -len(_INTER)]
    elif path.name.endswith(_ITEM):
        stem = path.name[: -len(_ITEM)]
        inter = path.with_name(stem + _INTER)
    else:
        raise DataError(f"{path}: not an LC-Rec file; pass the directory holding NAME{_INTER} and "
                        f"NAME{_ITEM}, or one of those files")
    item = inter.with_name(stem + _ITEM)
    for f in (inter, item):
        if not f.is_file():
            raise DataError(f"{f} does not exist; the lcrec format needs both {stem}{_INTER} and "
                            f"{stem}{_ITEM} in {inter.parent}")
    return inter, item


def _item(item_id: str, rec: Any, path: Path, line: int) -> Item:
    if not isinstance(rec, dict):
        raise DataError(f"{path} line {line}: item {item_id!r} must map to an object "
                        "{\"title\": ..., \"description\": ..., \"brand\": ..., \"categories\": ...}")
    known = ("title", "description", "brand", "categories")
    return Item(item_id=item_id, title=as_text(rec.get("title")), description=as_text(rec.get("description")),
                brand=as_text(rec.get("brand")), categories=split_list(rec.get("categories"), ","),
                extra={k: v for k, v in rec.items() if k not in known})


def read(path: Path, **options: Any) -> RawData:
    """Read an LC-Rec dataset (see module docstring)."""
    opts = check_options("lcrec", options, OPTIONS)
    inter_path, item_path = resolve(Path(path), opts["name"])

    table = ItemTable(item_path)
    for key, rec, line in json_object_entries(read_text(item_path, opts["encoding"]), item_path):
        table.add(_item(key, rec, item_path, line), line)

    interactions: list[tuple[str, str, float | None]] = []
    seen: dict[str, tuple[list[str], int]] = {}
    duplicate_users = 0
    for user, seq, line in json_object_entries(read_text(inter_path, opts["encoding"]), inter_path):
        if not isinstance(seq, list) or any(isinstance(x, (list, dict, bool)) or x is None for x in seq):
            raise DataError(f"{inter_path} line {line}: user {user!r} must map to a list of item ids, "
                            f"got {str(seq)[:60]}")
        items = [id_str(x) for x in seq]
        if user in seen:
            if seen[user][0] != items:
                raise DataError(f"{inter_path}: user {user!r} appears twice with different sequences "
                                f"(line {seen[user][1]} and line {line}); keep one of them")
            duplicate_users += 1
            continue
        seen[user] = (items, line)
        interactions.extend((user, it, None) for it in items)

    return RawData(interactions=interactions, items=table.items, format="lcrec",
                   inputs=[str(inter_path), str(item_path)],
                   counts={"duplicate_users_identical": duplicate_users,
                           "item_duplicates_identical": table.identical_duplicates})
