"""Columnar interactions (streamed Parquet / CSV, Amazon) build the same dataset, byte for byte,
as the row-list path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genrec.data.columnar import InteractionColumns, Interactions, drop_duplicates, k_core_columns
from genrec.data.dataset import Item, RawData, build_dataset
from genrec.data.formats import read
from genrec.data.formats.amazon import k_core
from genrec.data.prepare import prepare
from genrec.errors import DataError
from tests.data.test_formats import make_amazon, make_table

FILES = ("items.jsonl", "sequences.jsonl", "stats.json")


def _as_rows(raw: RawData) -> RawData:
    return RawData(interactions=list(raw.interactions), items=raw.items, format=raw.format, inputs=raw.inputs,
                   filters=raw.filters, counts=raw.counts)


def _saved(ds, path: Path) -> dict[str, bytes]:
    ds.save(path)
    return {f: (path / f).read_bytes() for f in FILES}


def _random_rows(seed: int, n: int = 3000, timed: bool = True) -> list[tuple[str, str, float | None]]:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 300, n), rng.integers(0, 120, n)
    times = rng.integers(0, 50, n).astype(float)  # many ties: source order must break them
    return [(f"u{u}", f"i{i}", float(t) if timed else None) for u, i, t in zip(users, items, times)]


def _columns(rows) -> Interactions:
    cols = InteractionColumns(timed=rows[0][2] is not None)
    for row in rows:
        cols.add(*row)
    return cols.build()


@pytest.mark.parametrize("timed", [True, False])
@pytest.mark.parametrize("with_items,strict_min", [(False, 3), (True, 3), (True, 1), (True, 8)])
def test_columns_group_exactly_like_rows(tmp_path, timed, with_items, strict_min):
    rows = _random_rows(7, timed=timed)
    items = {f"i{i}": Item(f"i{i}", title=f"t{i}" if i % 3 else "") for i in range(0, 140, 1) if i % 7} \
        if with_items else None  # every 7th item unknown, some never used, some without text
    items2 = {k: Item(v.item_id, v.title) for k, v in items.items()} if items else None  # build_dataset fills titles
    a = build_dataset(RawData(rows, items, "t", []), min_user_interactions=strict_min, keep_cold_items=strict_min == 1)
    b = build_dataset(RawData(_columns(rows), items2, "t", []), min_user_interactions=strict_min,
                      keep_cold_items=strict_min == 1)
    assert _saved(a, tmp_path / "rows") == _saved(b, tmp_path / "cols")
    assert a.stats == b.stats


def test_strict_and_empty_errors_match():
    rows = _random_rows(1, n=50)
    items = {"i1": Item("i1")}
    with pytest.raises(DataError) as e_rows:
        build_dataset(RawData(rows, items, "t", []), strict=True)
    with pytest.raises(DataError) as e_cols:
        build_dataset(RawData(_columns(rows), items, "t", []), strict=True)
    assert str(e_rows.value) == str(e_cols.value)
    with pytest.raises(DataError, match="no user has at least 99"):
        build_dataset(RawData(_columns(rows), None, "t", []), min_user_interactions=99)


def test_interactions_read_as_rows_and_duplicates_and_k_core_match():
    rows = _random_rows(3, n=800) + _random_rows(3, n=100)  # the second part repeats the first rows
    cols = _columns(rows)
    assert cols == rows and len(cols) == len(rows) and cols[5] == rows[5] and cols[-2:] == rows[-2:]
    dedup, dropped = drop_duplicates(cols)
    seen: set = set()
    expect = [r for r in rows if not (r in seen or seen.add(r))]
    assert list(dedup) == expect and dropped == len(rows) - len(expect)
    for k in (0, 2, 5, 9):
        kept, counts = k_core_columns(dedup, k)
        want, want_counts = k_core(expect, k)
        assert list(kept) == want and counts == want_counts


def test_table_engines_give_identical_directories(tmp_path):
    pd = pytest.importorskip("pandas")
    d = make_table(tmp_path / "csv")
    outs = {e: prepare("table", d, tmp_path / f"csv-{e}", engine=e, min_user_interactions=1) for e in ("arrow", "python")}
    assert outs["arrow"].stats == outs["python"].stats
    for f in FILES:
        assert (tmp_path / "csv-arrow" / f).read_bytes() == (tmp_path / "csv-python" / f).read_bytes()
    # Parquet with every kind of cell: ints, padded and empty strings, nulls, NaN, dates, a bad time.
    p = tmp_path / "pq"
    p.mkdir()
    frame = pd.DataFrame({"user_id": ["a", " a", "b", None, "c", "", "b", "a", "c", "c"],
                          "item_id": [1.0, 2.0, 3.0, 1.0, float("nan"), 2.0, 1.0, 3.0, 2.0, 1.0],
                          "timestamp": ["2020-01-02", "5", "7", "1", "2", "3", None, "2020-01-02", "9", "1e3"]})
    frame.to_parquet(p / "interactions.parquet")
    a = read("table", p, engine="arrow")
    b = read("table", p, engine="python")
    assert isinstance(a.interactions, Interactions) and list(a.interactions) == b.interactions
    assert a.counts == b.counts
    ds_a, ds_b = build_dataset(a, min_user_interactions=1), build_dataset(b, min_user_interactions=1)
    assert _saved(ds_a, tmp_path / "pa") == _saved(ds_b, tmp_path / "pb")
    frame.loc[8, "timestamp"] = "yesterday"
    frame.loc[3, "timestamp"] = "never"  # on a row without a user: dropped, not an error
    frame.to_parquet(p / "interactions.parquet")
    errors = []
    for engine in ("arrow", "python"):
        with pytest.raises(DataError) as e:
            read("table", p, engine=engine)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "row 9" in errors[0] and "'yesterday'" in errors[0]


def test_amazon_columns_equal_the_row_path(tmp_path):
    raw = read("amazon", make_amazon(tmp_path / "amz"), k_core=2)
    assert isinstance(raw.interactions, Interactions)
    a = build_dataset(raw)
    b = build_dataset(_as_rows(raw))
    assert _saved(a, tmp_path / "a") == _saved(b, tmp_path / "b")
