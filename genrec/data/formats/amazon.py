"""Raw Amazon review dumps (McAuley lab), 2014 and 2018 releases, gzipped or not.

- 2014: ``reviews_X_5.json.gz`` (JSON lines: ``reviewerID``, ``asin``, ``unixReviewTime``, ...)
  and ``meta_X.json.gz`` whose lines are *Python literals* (read with ``ast.literal_eval``)
  carrying ``title``, ``description``, ``brand`` and ``categories`` (a list of lists);
- 2018: ``X_5.json.gz`` (same review keys) and ``meta_X.json.gz`` in JSON lines, with
  ``description`` possibly a list and ``category`` a flat list.

Each meta line is parsed as JSON, falling back to a Python literal; the release (recorded in
the manifest's filters) is 2014 when the reviews file is named ``reviews_*`` or the metadata
holds Python literals, else 2018. Reviews are de-duplicated on ``(user, item, time)``,
k-core filtered (option ``k_core``, default 5, repeated until every remaining user and item
has at least k interactions; 0 disables) and ordered by ``unixReviewTime`` (ties keep file
order). HTML tags and entities are removed from all text.

Reviews are read line by line into integer columns (:mod:`genrec.data.columnar`); duplicates and
the k-core are found with array sorts and counts, so a full category (10^7+ reviews) needs
~16 bytes a review plus the user and item vocabularies, not a Python tuple per review.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from genrec.data.columnar import InteractionColumns, drop_duplicates, k_core_columns
from genrec.data.dataset import Item, RawData
from genrec.data.formats.common import (
    ItemTable,
    Opt,
    check_options,
    clean_text,
    find_one,
    id_str,
    text_lines,
    unique_list,
)
from genrec.errors import DataError

OPTIONS = {
    "name": Opt(str, None, "category name X when the directory holds several datasets", True),
    "k_core": Opt(int, 5, "minimum interactions per user and per item, applied until stable (0 = off)"),
    "encoding": Opt(str, "utf-8", "text encoding of both files"),
}
_REVIEWS = re.compile(r"^(?P<pre>reviews_)?(?P<name>.+?)(?P<core>_\d+)?\.json(\.gz)?$")
_REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")


def _meta_for(reviews: Path, name: str) -> Path:
    for cand in (f"meta_{name}.json.gz", f"meta_{name}.json"):
        if (reviews.parent / cand).is_file():
            return reviews.parent / cand
    raise DataError(f"{reviews.parent}: metadata file meta_{name}.json.gz (or meta_{name}.json) not found "
                    f"next to {reviews.name}; download it from the same release")


def resolve(path: Path, name: str | None) -> tuple[Path, Path, bool]:
    """``(reviews_file, meta_file, named_like_2014)`` from a directory, the reviews file or the meta file."""
    if path.is_dir():
        if name:
            pats = [f"reviews_{name}_5.json*", f"reviews_{name}.json*", f"{name}_5.json*", f"{name}.json*"]
            found = [p for pat in pats for p in sorted(path.glob(pat)) if _REVIEWS.match(p.name)]
            if not found:
                raise DataError(f"{path}: no reviews file for {name!r} (expected reviews_{name}_5.json.gz "
                                f"or {name}_5.json.gz)")
            reviews = found[0]
        else:
            reviews = find_one(path, ["reviews_*.json", "reviews_*.json.gz", "*_5.json", "*_5.json.gz"],
                               "Amazon reviews file (reviews_X_5.json.gz for 2014, X_5.json.gz for 2018)")
    elif path.name.startswith("meta_"):
        stem = re.sub(r"\.json(\.gz)?$", "", path.name[5:])
        cands = [path.with_name(n) for n in (f"reviews_{stem}_5.json.gz", f"reviews_{stem}_5.json",
                                             f"{stem}_5.json.gz", f"{stem}_5.json", f"reviews_{stem}.json.gz",
                                             f"{stem}.json.gz")]
        reviews = next((c for c in cands if c.is_file()), None)
        if reviews is None:
            raise DataError(f"{path}: no reviews file next to it (expected reviews_{stem}_5.json.gz or "
                            f"{stem}_5.json.gz); pass the reviews file as --path")
    else:
        reviews = path
    m = _REVIEWS.match(reviews.name)
    if not m:
        raise DataError(f"{reviews}: not an Amazon reviews file name (expected reviews_X_5.json.gz or "
                        "X_5.json.gz, optionally without .gz)")
    return reviews, _meta_for(reviews, m.group("name")), bool(m.group("pre"))


def _parse_line(line: str, path: Path, lineno: int, allow_literal: bool) -> tuple[dict[str, Any], bool]:
    """The line's object and whether it was a Python literal rather than JSON."""
    literal = False
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        if not allow_literal:
            raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                            "fix or remove the line") from None
        try:
            rec, literal = ast.literal_eval(line), True
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(f"{path} line {lineno}: neither JSON nor a Python literal; "
                            "fix or remove the line") from None
    if not isinstance(rec, dict):
        raise DataError(f"{path} line {lineno}: expected one object per line, got {type(rec).__name__}")
    return rec, literal


def _item(rec: dict[str, Any]) -> Item:
    cats = rec.get("categories", rec.get("category"))
    extra = {k: rec[k] for k in ("price", "main_cat") if rec.get(k) not in (None, "", [])}
    if isinstance(extra.get("main_cat"), str):
        extra["main_cat"] = clean_text(extra["main_cat"])
    return Item(item_id=id_str(rec["asin"]), title=clean_text(rec.get("title")),
                description=clean_text(rec.get("description")), brand=clean_text(rec.get("brand")),
                categories=unique_list([cats] if isinstance(cats, str) else (cats or []), clean=True),
                extra=extra)


def k_core(rows: list[tuple[str, str, float]], k: int) -> tuple[list[tuple[str, str, float]], dict[str, int]]:
    """Drop users and items with fewer than ``k`` interactions until none is left; counts removed."""
    users0 = len({u for u, _, _ in rows})
    items0 = len({i for _, i, _ in rows})
    n0 = len(rows)
    while k > 0:
        uc = Counter(u for u, _, _ in rows)
        ic = Counter(i for _, i, _ in rows)
        kept = [r for r in rows if uc[r[0]] >= k and ic[r[1]] >= k]
        if len(kept) == len(rows):
            break
        rows = kept
    return rows, {"kcore_users_removed": users0 - len({u for u, _, _ in rows}),
                  "kcore_items_removed": items0 - len({i for _, i, _ in rows}),
                  "kcore_interactions_removed": n0 - len(rows)}


def read(path: Path, **options: Any) -> RawData:
    """Read an Amazon reviews + metadata pair (see module docstring)."""
    opts = check_options("amazon", options, OPTIONS)
    reviews_path, meta_path, named_2014 = resolve(Path(path), opts["name"])

    columns = InteractionColumns(timed=True)
    for lineno, line in text_lines(reviews_path, opts["encoding"], desc=f"reviews {reviews_path.name}"):
        if not line.strip():
            continue
        rec, _ = _parse_line(line, reviews_path, lineno, allow_literal=False)
        missing = [key for key in _REVIEW_KEYS if key not in rec]
        if missing:
            raise DataError(f"{reviews_path} line {lineno}: review lacks {', '.join(missing)} "
                            f"(each line needs {', '.join(_REVIEW_KEYS)}); is this the reviews file?")
        try:
            ts = float(rec["unixReviewTime"])
        except (TypeError, ValueError):
            raise DataError(f"{reviews_path} line {lineno}: unixReviewTime {rec['unixReviewTime']!r} "
                            "is not a number") from None
        columns.add(id_str(rec["reviewerID"]), id_str(rec["asin"]), ts)
    rows, duplicates = drop_duplicates(columns.build())
    rows, counts = k_core_columns(rows, opts["k_core"])

    table = ItemTable(meta_path)
    literal_lines = 0
    for lineno, line in text_lines(meta_path, opts["encoding"], desc=f"metadata {meta_path.name}"):
        if not line.strip():
            continue
        rec, literal = _parse_line(line, meta_path, lineno, allow_literal=True)
        literal_lines += literal
        if "asin" not in rec:
            raise DataError(f"{meta_path} line {lineno}: metadata record has no 'asin'; "
                            "is this the meta file?")
        table.add(_item(rec), lineno)

    counts = {"duplicate_interactions_dropped": duplicates, **counts,
              "item_duplicates_identical": table.identical_duplicates}
    return RawData(interactions=rows, items=table.items, format="amazon",
                   inputs=[str(reviews_path), str(meta_path)],
                   filters={"release": 2014 if named_2014 or literal_lines else 2018,
                            "k_core": opts["k_core"]},
                   counts=counts)
