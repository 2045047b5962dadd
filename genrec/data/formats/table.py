"""Any CSV / TSV / Parquet interaction table, with a column mapping.

``--path`` is the interactions file, or a directory holding ``interactions.{csv,tsv,parquet}``.
An item table is read from ``items_path`` (relative to the interactions file's directory, or
absolute), or else from a sibling ``items.{csv,tsv,parquet}`` if one exists (``items_path=none``
turns that off); without one, item ids double as titles.

Columns default to ``user_id``, ``item_id``, ``timestamp`` (interactions) and ``item_id``,
``title``, ``description``, ``brand``, ``categories`` (items). A default column that is absent
is simply not used (no time column: file order is kept); a column named by an option must
exist. Item columns not mapped to a field go to ``Item.extra``. Times may be numbers (unix
seconds) or ISO-8601 dates (naive ones are read as UTC). Rows with an empty user, item or time
are dropped and counted.

Interactions stream into integer columns (:mod:`genrec.data.columnar`): Parquet files batch by
batch through pyarrow (:mod:`genrec.data.formats.arrow`), CSV/TSV row by row through Python's
``csv`` module, so memory grows by ~16 bytes a row rather than a Python tuple of strings.
``engine=python`` keeps the former row-list path (same dataset; a reference for benchmarks).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genrec.data.columnar import InteractionColumns
from genrec.data.dataset import Item, RawData
from genrec.data.formats.arrow import parquet_batches, stream_columns
from genrec.data.formats.common import (
    ItemTable,
    Opt,
    as_text,
    check_options,
    columns_of,
    csv_records,
    find_one,
    id_str,
    split_list,
)
from genrec.errors import ConfigError, DataError

OPTIONS = {
    "user_col": Opt(str, "user_id", "user id column"),
    "item_col": Opt(str, "item_id", "item id column of the interactions"),
    "time_col": Opt(str, "timestamp", "time column (unix seconds or ISO dates); none = keep file order",
                    True),
    "items_path": Opt(str, None, "item table (CSV/TSV/Parquet); default: a sibling items.csv/tsv/parquet",
                      True),
    "item_id_col": Opt(str, None, "item id column of the item table (default: item_col)", True),
    "title_col": Opt(str, "title", "title column of the item table", True),
    "description_col": Opt(str, "description", "description column of the item table", True),
    "brand_col": Opt(str, "brand", "brand column of the item table", True),
    "categories_col": Opt(str, "categories", "categories column of the item table", True),
    "categories_sep": Opt(str, "|", "separator inside a categories string"),
    "sep": Opt(str, None, "field separator for CSV/TSV (default: ',' for .csv, tab for .tsv/.tab/.txt); "
               "write tab as \\t", True),
    "header": Opt(bool, True, "CSV/TSV files start with a header row; false names the columns 0, 1, 2 ..."),
    "encoding": Opt(str, "utf-8", "text encoding of CSV/TSV files"),
    "engine": Opt(str, "arrow", "arrow: stream interactions into columns (default); python: a list of rows"),
}
_EXTS = ("csv", "tsv", "parquet")
_TEXT_FIELDS = ("title", "description", "brand", "categories")


def _unescape(sep: str) -> str:
    sep = {"\\t": "\t", "tab": "\t", "TAB": "\t", "\\|": "|"}.get(sep, sep)
    if len(sep) != 1:
        raise ConfigError(f"--opt sep={sep!r}: the separator must be a single character (write tab as \\t)")
    return sep


def _sep_for(path: Path, sep: str | None) -> str:
    if sep:
        return _unescape(sep)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab", ".txt") else ","


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _columns(path: Path, sep: str | None, encoding: str, header: bool) -> list[str]:
    if _is_parquet(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return columns_of(path, _sep_for(path, sep), encoding, header)


def _records(path: Path, sep: str | None, encoding: str, header: bool,
             columns: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, {column: value})``; ``where`` is ``line N`` (text) or ``row N`` (Parquet)."""
    if not _is_parquet(path):
        for lineno, rec in csv_records(path, _sep_for(path, sep), encoding, header):
            yield f"line {lineno}", rec
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read Parquet columns {columns} ({e})") from None
    data = {c: table.column(c).to_pylist() for c in columns}
    for r in range(table.num_rows):
        yield f"row {r + 1}", {c: data[c][r] for c in columns}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (isinstance(value, float) and math.isnan(value))


def _key(value: Any) -> str | None:
    """``id_str(value)``, or ``None`` when the value is missing (a fast path for strings)."""
    if type(value) is str:
        value = value.strip()
        return value or None
    return None if _missing(value) else id_str(value)


def _time(value: Any, path: Path, where: str, col: str) -> float:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        return _time(dt.datetime.fromisoformat(str(value).strip()), path, where, col)
    except ValueError:
        raise DataError(f"{path} {where}: time {value!r} in column {col!r} is neither a number nor an "
                        "ISO-8601 date; fix the value or pass --opt time_col=none to keep file order") \
            from None


def _require(path: Path, found: list[str], wanted: dict[str, str | None],
             explicit: set[str]) -> dict[str, str]:
    """Map each option to its column; explicit options must exist, absent defaults are skipped."""
    out = {}
    for option, col in wanted.items():
        if col is None:
            continue
        if col in found:
            out[option] = col
        elif option in explicit or option in ("user_col", "item_col", "item_id_col"):
            hint = (" (a single column: check --opt sep=, and --opt header=false for a file without header)"
                    if len(found) == 1 else "")
            raise DataError(f"{path}: column {col!r} (option {option}) not found; columns found: "
                            f"{', '.join(found)}{hint}; set --opt {option}=COLUMN")
    return out


def _plain(value: Any) -> Any:
    """A value JSON can hold (Parquet cells may be dates, decimals, bytes ...)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def resolve(path: Path, items_path: str | None, items_given: bool) -> tuple[Path, Path | None]:
    """``(interactions_file, items_file or None)``."""
    if path.is_dir():
        inter = find_one(path, [f"interactions.{e}" for e in _EXTS], "interactions table")
    else:
        inter = path
    if items_path is not None:
        items = Path(items_path) if Path(items_path).is_absolute() else inter.parent / items_path
        if not items.is_file():
            raise DataError(f"{items} does not exist (from --opt items_path={items_path}); "
                            "pass an existing CSV/TSV/Parquet file or --opt items_path=none")
        return inter, items
    if items_given:
        return inter, None
    return inter, find_one(inter.parent, [f"items.{e}" for e in _EXTS], "item table", required=False)


def _read_items(path: Path, opts: dict[str, Any], explicit: set[str]) -> ItemTable:
    found = _columns(path, opts["sep"], opts["encoding"], opts["header"])
    wanted = {"item_id_col": opts["item_id_col"] or opts["item_col"]}
    wanted.update({f"{f}_col": opts[f"{f}_col"] for f in _TEXT_FIELDS})
    if "item_id_col" not in explicit and "item_col" in explicit:
        explicit = explicit | {"item_id_col"}
    cols = _require(path, found, wanted, explicit)
    mapped = set(cols.values())
    table = ItemTable(path)
    for where, rec in _records(path, opts["sep"], opts["encoding"], opts["header"], found):
        item_id = rec[cols["item_id_col"]]
        if _missing(item_id):
            raise DataError(f"{path} {where}: empty item id in column {cols['item_id_col']!r}")
        fields: dict[str, Any] = {f: as_text(rec[cols[f"{f}_col"]]) for f in ("title", "description", "brand")
                                  if f"{f}_col" in cols and not _missing(rec[cols[f"{f}_col"]])}
        if "categories_col" in cols:
            fields["categories"] = split_list(rec[cols["categories_col"]], opts["categories_sep"])
        extra = {c: _plain(v) for c, v in rec.items() if c not in mapped and not _missing(v)}
        table.add(Item(item_id=id_str(item_id), extra=extra, **fields), where)
    return table


def read(path: Path, **options: Any) -> RawData:
    """Read an interaction table and optional item table (see module docstring)."""
    opts = check_options("table", options, OPTIONS)
    explicit = set(options)
    inter_path, items_path = resolve(Path(path), opts["items_path"], "items_path" in options)
    if not inter_path.is_file():
        raise DataError(f"{inter_path} does not exist; pass a CSV/TSV/Parquet interactions file")

    if opts["engine"] not in ("arrow", "python"):
        raise ConfigError(f"--opt engine={opts['engine']!r}: choose arrow or python")
    found = _columns(inter_path, opts["sep"], opts["encoding"], opts["header"])
    cols = _require(inter_path, found, {k: opts[k] for k in ("user_col", "item_col", "time_col")}, explicit)
    time_col = cols.get("time_col")
    needed = list(dict.fromkeys(cols.values()))
    interactions: Any
    if opts["engine"] == "arrow" and _is_parquet(inter_path):
        interactions, incomplete = stream_columns(parquet_batches(inter_path, needed), cols, inter_path,
                                                  key=_key, missing=_missing, parse_time=_time)
    else:
        columns = InteractionColumns(timed=time_col is not None) if opts["engine"] == "arrow" else None
        rows: list[tuple[str, str, float | None]] = []
        add = columns.add if columns is not None else (lambda *row: rows.append(row))
        incomplete = 0
        for where, rec in _records(inter_path, opts["sep"], opts["encoding"], opts["header"], needed):
            user, item = rec[cols["user_col"]], rec[cols["item_col"]]
            ts = rec[time_col] if time_col else None
            if _missing(user) or _missing(item) or (time_col and _missing(ts)):
                incomplete += 1
                continue
            add(id_str(user), id_str(item), _time(ts, inter_path, where, time_col) if time_col else None)
        interactions = columns.build() if columns is not None else rows

    counts = {"rows_missing_values_dropped": incomplete}
    items = None
    if items_path is not None:
        table = _read_items(items_path, opts, explicit)
        items = table.items
        counts["item_duplicates_identical"] = table.identical_duplicates
    inputs = [str(inter_path)] + ([str(items_path)] if items_path else [])
    return RawData(interactions=interactions, items=items, format="table", inputs=inputs, counts=counts)
