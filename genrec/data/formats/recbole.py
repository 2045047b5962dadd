"""RecBole atomic files: ``NAME.inter`` and (optional) ``NAME.item``.

Tab-separated with a typed header, e.g. ``user_id:token<TAB>item_id:token<TAB>rating:float
<TAB>timestamp:float`` and ``item_id:token<TAB>movie_title:token_seq<TAB>release_year:token
<TAB>class:token_seq``. Types: ``token`` (a string), ``token_seq`` (space-separated strings),
``float``, ``float_seq``; an untyped column is read as ``token``.

Item columns are mapped to :class:`Item` fields by name (``*title*`` / ``name`` → title,
``description`` / ``summary`` ... → description, ``brand`` / ``manufacturer`` ... → brand,
``class`` / ``genre`` / ``categories`` / ``tags`` ... → categories, split on ``seq_sep`` when the
column is a ``token_seq``); every other column goes to ``extra``. Options override each mapping.
Without a ``timestamp`` column the file order is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genrec.data.dataset import Item, RawData
from genrec.data.formats.common import ItemTable, Opt, check_options, find_one, split_list, text_lines
from genrec.errors import DataError

OPTIONS = {
    "name": Opt(str, None, "dataset name NAME when the directory holds several NAME.inter", True),
    "user_col": Opt(str, "user_id", "user id column of NAME.inter (without the :type suffix)"),
    "item_col": Opt(str, "item_id", "item id column of NAME.inter and NAME.item"),
    "time_col": Opt(str, "timestamp", "time column of NAME.inter; none = keep file order", True),
    "title_col": Opt(str, None, "title column of NAME.item (default: guessed from its name)", True),
    "description_col": Opt(str, None, "description column (default: guessed)", True),
    "brand_col": Opt(str, None, "brand column (default: guessed)", True),
    "categories_col": Opt(str, None, "categories column (default: guessed)", True),
    "seq_sep": Opt(str, " ", "separator inside token_seq values"),
    "encoding": Opt(str, "utf-8", "text encoding of both files"),
}
_GUESS = {
    "title": ("title", "movie_title", "item_title", "book_title", "product_title", "name", "item_name"),
    "description": ("description", "desc", "item_description", "summary", "overview", "plot"),
    "brand": ("brand", "manufacturer", "publisher", "studio"),
    "categories": ("categories", "category", "class", "genre", "genres", "tags", "tag"),
}
_TYPES = ("token", "token_seq", "float", "float_seq")


def resolve(path: Path, name: str | None) -> tuple[Path, Path | None]:
    """``(inter_file, item_file or None)`` from a directory or either atomic file."""
    if path.is_dir():
        inter = (path / f"{name}.inter" if name
                 else find_one(path, ["*.inter"], "RecBole interaction file (NAME.inter)"))
    elif path.suffix in (".inter", ".item"):
        inter = path.with_suffix(".inter")
    else:
        raise DataError(f"{path}: not a RecBole atomic file; pass the directory holding NAME.inter "
                        "(and NAME.item), or the NAME.inter file")
    if not inter.is_file():
        raise DataError(f"{inter} does not exist; the recbole format needs NAME.inter "
                        "(tab-separated, typed header such as user_id:token) and optionally NAME.item")
    item = inter.with_suffix(".item")
    return inter, item if item.is_file() else None


def _rows(path: Path, encoding: str) -> Iterator[tuple[int, list[tuple[str, str]], list[str]]]:
    """Yield ``(line, [(name, type)], values)`` for each data row; the header is parsed first."""
    header: list[tuple[str, str]] | None = None
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        fields = line.split("\t")
        if header is None:
            header = []
            for col in fields:
                name, _, typ = col.strip().partition(":")
                typ = typ or "token"
                if typ not in _TYPES:
                    raise DataError(f"{path} line {lineno}: column {col!r} has unknown type {typ!r}; "
                                    f"RecBole types are {', '.join(_TYPES)}")
                header.append((name, typ))
            continue
        if len(fields) != len(header):
            raise DataError(f"{path} line {lineno}: {len(fields)} tab-separated field(s) but the header has "
                            f"{len(header)}; fix the line (values must not contain tabs)")
        yield lineno, header, fields
    if header is None:
        raise DataError(f"{path} is empty; expected a typed header such as user_id:token<TAB>item_id:token")


def _column(header: list[tuple[str, str]], name: str | None, option: str, path: Path,
            required: bool) -> int | None:
    names = [n for n, _ in header]
    if name is not None and name in names:
        return names.index(name)
    if required:
        raise DataError(f"{path}: column {name!r} not found (columns: {', '.join(names)}); "
                        f"set --opt {option}=COLUMN")
    return None


def _guess(header: list[tuple[str, str]], field: str, taken: set[int]) -> int | None:
    names = [n.lower() for n, _ in header]
    for cand in _GUESS[field]:
        if cand in names and names.index(cand) not in taken:
            return names.index(cand)
    if field == "title":
        return next((i for i, n in enumerate(names) if "title" in n and i not in taken), None)
    return None


def _value(raw: str, typ: str, sep: str) -> Any:
    raw = raw.strip()
    if typ == "token_seq":
        return [t for t in raw.split(sep) if t] if sep else [raw]
    if typ == "float":
        try:
            return float(raw) if raw else None
        except ValueError:
            return raw
    if typ == "float_seq":
        return [float(t) for t in raw.split(sep) if t]
    return raw


def _items(path: Path, opts: dict[str, Any], options: dict[str, Any]) -> ItemTable:
    table = ItemTable(path)
    cols: dict[str, int | None] | None = None
    item_i = 0
    for lineno, header, fields in _rows(path, opts["encoding"]):
        if cols is None:
            item_i = _column(header, opts["item_col"], "item_col", path, True)
            cols, taken = {}, {item_i}
            for field in ("title", "description", "brand", "categories"):
                key = f"{field}_col"
                cols[field] = (_column(header, opts[key], key, path, opts[key] is not None)
                               if key in options else _guess(header, field, taken))
                if cols[field] is not None:
                    taken.add(cols[field])
        values = {}
        for field, i in cols.items():
            if i is not None:
                raw = fields[i].strip()
                values[field] = split_list(_value(raw, header[i][1], opts["seq_sep"]), "") \
                    if field == "categories" else raw
        extra = {}
        for i, (name, typ) in enumerate(header):
            if i != item_i and i not in cols.values():
                try:
                    extra[name] = _value(fields[i], typ, opts["seq_sep"])
                except ValueError:
                    raise DataError(f"{path} line {lineno}: column {name}:{typ} holds {fields[i]!r}, "
                                    "which is not a number sequence") from None
        table.add(Item(item_id=fields[item_i].strip(), extra=extra, **values), lineno)
    return table


def read(path: Path, **options: Any) -> RawData:
    """Read RecBole atomic files (see module docstring)."""
    opts = check_options("recbole", options, OPTIONS)
    inter_path, item_path = resolve(Path(path), opts["name"])

    interactions: list[tuple[str, str, float | None]] = []
    cols: tuple[int, int, int | None] | None = None
    for lineno, header, fields in _rows(inter_path, opts["encoding"]):
        if cols is None:
            cols = (_column(header, opts["user_col"], "user_col", inter_path, True),
                    _column(header, opts["item_col"], "item_col", inter_path, True),
                    _column(header, opts["time_col"], "time_col", inter_path, "time_col" in options
                            and opts["time_col"] is not None))
        u, i, t = cols
        ts = None
        if t is not None:
            try:
                ts = float(fields[t])
            except ValueError:
                raise DataError(f"{inter_path} line {lineno}: time {fields[t]!r} is not a number; "
                                "fix the line or pass --opt time_col=none to keep file order") from None
        interactions.append((fields[u].strip(), fields[i].strip(), ts))

    counts: dict[str, int] = {}
    items = None
    if item_path is not None:
        table = _items(item_path, opts, options)
        items = table.items
        counts["item_duplicates_identical"] = table.identical_duplicates
    inputs = [str(inter_path)] + ([str(item_path)] if item_path else [])
    return RawData(interactions=interactions, items=items, format="recbole", inputs=inputs, counts=counts)
