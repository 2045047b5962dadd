"""Streaming an interaction table through pyarrow, batch by batch, into columns.

Each batch's user / item / time columns are dictionary-encoded by Arrow; the per-row rules of
the ``table`` reader (what counts as missing, ``id_str``, the time parser) then run once per
*distinct value of the batch*, not per row, and the rows become integer codes in an
:class:`~genrec.data.columnar.InteractionColumns`. Memory is the vocabularies plus 8-16 bytes a
row, whatever the file size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from genrec.data.columnar import InteractionColumns, Interactions
from genrec.errors import DataError

BATCH_ROWS = 1 << 18


def parquet_batches(path: Path, columns: list[str]) -> Iterator[Any]:
    """``pyarrow.RecordBatch`` es of ``columns``, :data:`BATCH_ROWS` rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read Parquet columns {columns} ({e})") from None


def _distinct(arr: Any) -> tuple[list[Any], np.ndarray]:
    """``(values, idx)``: the batch column's distinct values (as Python objects) and per row the
    index of its value, ``-1`` for a null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. list columns
        values = arr.to_pylist()
        return values, np.arange(len(values), dtype=np.int64)
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return enc.dictionary.to_pylist(), idx


def _numeric(arr: Any) -> bool:
    import pyarrow as pa

    return (pa.types.is_integer(arr.type) and arr.type.bit_width <= 32) or pa.types.is_floating(arr.type) or \
        (pa.types.is_int64(arr.type) and _exact_int64(arr))


def _exact_int64(arr: Any) -> bool:
    """Every value of an int64 column converts to float64 exactly (|v| <= 2**53), as Python's float() does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        top = pc.max(pc.abs_checked(arr)).as_py()
    except pa.ArrowInvalid:  # the smallest int64 has no absolute value
        return False
    return top is None or top <= 2**53


def stream_columns(batches: Iterator[Any], cols: dict[str, str], path: Path, *,
                   key: Callable[[Any], str | None], missing: Callable[[Any], bool],
                   parse_time: Callable[[Any, Path, str, str], float]) -> tuple[Interactions, int]:
    """Columns of every complete row of ``batches`` and the number of incomplete rows dropped.

    ``cols`` maps ``user_col`` / ``item_col`` (and ``time_col`` when present) to column names;
    ``key`` (an id's string, ``None`` when missing), ``missing`` and ``parse_time`` are the
    reader's per-value rules. A time that does not parse raises from ``parse_time`` with the row
    number (``row N``) of its first complete row.
    """
    time_col = cols.get("time_col")
    out = InteractionColumns(timed=time_col is not None)
    incomplete, row0 = 0, 0
    for batch in batches:
        coded = []
        for option, users in (("user_col", True), ("item_col", False)):
            values, idx = _distinct(batch.column(cols[option]))
            lut = out.lookup([key(v) for v in values], users)
            coded.append(lut[idx])
        complete = (coded[0] >= 0) & (coded[1] >= 0)
        times = None
        if time_col is not None and _numeric(batch.column(time_col)):  # numbers: float(value), NaN missing
            t = batch.column(time_col).cast("float64").to_numpy(zero_copy_only=False)  # nulls → NaN
            complete &= ~np.isnan(t)
            times = t[complete]
        elif time_col is not None:
            values, idx = _distinct(batch.column(time_col))
            parsed = np.zeros(len(values) + 1)
            state = np.zeros(len(values) + 1, np.int8)  # 0 parsed, 1 missing, 2 unparseable
            state[-1] = 1
            for k, v in enumerate(values):
                if missing(v):
                    state[k] = 1
                    continue
                try:
                    parsed[k] = parse_time(v, path, "", time_col)
                except DataError:
                    state[k] = 2
            complete &= state[idx] != 1
            bad = np.flatnonzero(complete & (state[idx] == 2))
            if len(bad):  # raise the reader's own message for the first such row
                parse_time(values[idx[bad[0]]], path, f"row {row0 + int(bad[0]) + 1}", time_col)
            times = parsed[idx][complete]
        incomplete += int((~complete).sum())
        out.add_coded(coded[0][complete], coded[1][complete], times)
        row0 += batch.num_rows
    return out.build(), incomplete
