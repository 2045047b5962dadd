"""MovieLens ratings, in the three layouts GroupLens ships (detected from the file names):

- ``ml-100k``: ``u.data`` (``user<TAB>item<TAB>rating<TAB>unix time``), ``u.item`` (latin-1,
  ``id|title|release date|video release date|IMDb URL|<one 0/1 flag per genre>``) and
  ``u.genre`` (``name|index``; the standard 19 names are used if it is absent);
- ``ml-1m`` (also ML-10M): ``ratings.dat`` (``user::item::rating::time``) and ``movies.dat``
  (``id::title::Genre|Genre``), latin-1;
- ``ml-latest`` (also ml-latest-small, ML-20M/25M/32M): ``ratings.csv``
  (``userId,movieId,rating,timestamp``) and ``movies.csv`` (``movieId,title,genres``, quoted
  titles, ``|``-separated genres), UTF-8.

Genres become ``categories``; the release date and year go to ``extra``. Option
``min_rating`` keeps ratings ``>= min_rating`` (default 0: every rating is an interaction).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genrec.data.dataset import Item, RawData
from genrec.data.formats.common import ItemTable, Opt, check_options, csv_records, text_lines
from genrec.errors import DataError

OPTIONS = {
    "min_rating": Opt(float, 0.0, "keep ratings >= this value (0 keeps all)"),
    "encoding": Opt(str, None, "text encoding (default latin-1 for ml-100k / ml-1m, utf-8 for ml-latest)",
                    True),
}
# (ratings file, movies file, default encoding) per layout
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "ml-100k": ("u.data", "u.item", "latin-1"),
    "ml-1m": ("ratings.dat", "movies.dat", "latin-1"),
    "ml-latest": ("ratings.csv", "movies.csv", "utf-8"),
}
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
                 "Sci-Fi", "Thriller", "War", "Western"]
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def detect(path: Path) -> tuple[str, Path]:
    """``(layout, directory)`` for a MovieLens directory or one of its files."""
    directory = path if path.is_dir() else path.parent
    if path.is_file() and not any(path.name in LAYOUTS[k][:2] + ("u.genre",) for k in LAYOUTS):
        raise DataError(f"{path}: not a MovieLens file; pass the MovieLens directory")
    for layout, (ratings, movies, _) in LAYOUTS.items():
        if (directory / ratings).is_file():
            if not (directory / movies).is_file():
                raise DataError(f"{directory}: found {ratings} but not {movies}; "
                                f"the {layout} layout needs both")
            return layout, directory
    expected = "; ".join(f"{r} + {m} ({k})" for k, (r, m, _) in LAYOUTS.items())
    raise DataError(f"{directory}: no MovieLens ratings file found; expected one of: {expected}")


def _number(value: str, what: str, path: Path, lineno: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path} line {lineno}: {what} {value!r} is not a number; "
                        "fix or remove the line") from None


def _ratings(layout: str, path: Path, encoding: str) -> Iterator[tuple[int, str, str, str, str]]:
    """``(line, user, item, rating, time)`` rows of the ratings file."""
    if layout == "ml-latest":
        for lineno, rec in csv_records(path, ",", encoding):
            try:
                yield lineno, rec["userId"], rec["movieId"], rec["rating"], rec["timestamp"]
            except KeyError as e:
                raise DataError(f"{path}: column {e} is missing; expected the header "
                                "userId,movieId,rating,timestamp") from None
        return
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        parts = line.split("::") if layout == "ml-1m" else line.split()
        if len(parts) != 4:
            shape = "user::item::rating::time" if layout == "ml-1m" else "user<TAB>item<TAB>rating<TAB>time"
            raise DataError(f"{path} line {lineno}: expected 4 fields ({shape}), found {len(parts)}")
        yield lineno, *(p.strip() for p in parts)


def _year(title: str) -> dict[str, Any]:
    m = _YEAR.search(title)
    return {"year": int(m.group(1))} if m else {}


def _movies_100k(directory: Path, encoding: str) -> ItemTable:
    genres = ML100K_GENRES
    genre_file = directory / "u.genre"
    if genre_file.is_file():
        pairs = [ln.split("|") for _, ln in text_lines(genre_file, encoding) if ln.strip()]
        try:
            genres = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
        except (ValueError, IndexError):
            raise DataError(f"{genre_file}: expected lines of the form name|index") from None
    path = directory / "u.item"
    table = ItemTable(path)
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(genres):
            raise DataError(f"{path} line {lineno}: expected {5 + len(genres)} '|'-separated fields "
                            f"(id|title|release date|video date|URL|{len(genres)} genre flags), "
                            f"found {len(parts)}")
        movie_id, title, date, video, url = (p.strip() for p in parts[:5])
        extra: dict[str, Any] = {}
        if date:
            extra["release_date"] = date
            if date[-4:].isdigit():
                extra["year"] = int(date[-4:])
        if video:
            extra["video_release_date"] = video
        if url:
            extra["url"] = url
        cats = [g for g, flag in zip(genres, parts[5:]) if flag.strip() == "1"]
        table.add(Item(item_id=movie_id, title=title, categories=cats, extra=extra), lineno)
    return table


def _movies_1m(path: Path, encoding: str) -> ItemTable:
    table = ItemTable(path)
    for lineno, line in text_lines(path, encoding):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(f"{path} line {lineno}: expected 3 '::'-separated fields (id::title::genres), "
                            f"found {len(parts)}")
        movie_id, title, genres = (p.strip() for p in parts)
        cats = [g for g in genres.split("|") if g and g != "(no genres listed)"]
        table.add(Item(item_id=movie_id, title=title, categories=cats, extra=_year(title)), lineno)
    return table


def _movies_latest(path: Path, encoding: str) -> ItemTable:
    table = ItemTable(path)
    for lineno, rec in csv_records(path, ",", encoding):
        if not {"movieId", "title", "genres"} <= rec.keys():
            raise DataError(f"{path}: expected the header movieId,title,genres, found {','.join(rec)}")
        title = rec["title"].strip()
        cats = [g for g in rec["genres"].split("|") if g and g != "(no genres listed)"]
        item = Item(item_id=rec["movieId"].strip(), title=title, categories=cats, extra=_year(title))
        table.add(item, lineno)
    return table


def read(path: Path, **options: Any) -> RawData:
    """Read a MovieLens directory (layout detected; see module docstring)."""
    opts = check_options("movielens", options, OPTIONS)
    layout, directory = detect(Path(path))
    ratings_name, movies_name, default_encoding = LAYOUTS[layout]
    encoding = opts["encoding"] or default_encoding
    if layout == "ml-100k":
        table = _movies_100k(directory, encoding)
    elif layout == "ml-1m":
        table = _movies_1m(directory / movies_name, encoding)
    else:
        table = _movies_latest(directory / movies_name, encoding)

    ratings_path = directory / ratings_name
    interactions: list[tuple[str, str, float | None]] = []
    below = 0
    for lineno, user, item, rating, ts in _ratings(layout, ratings_path, encoding):
        if _number(rating, "rating", ratings_path, lineno) < opts["min_rating"]:
            below += 1
            continue
        interactions.append((user, item, _number(ts, "timestamp", ratings_path, lineno)))
    inputs = [str(ratings_path), str(directory / movies_name)]
    if layout == "ml-100k" and (directory / "u.genre").is_file():
        inputs.append(str(directory / "u.genre"))
    return RawData(interactions=interactions, items=table.items, format="movielens", inputs=inputs,
                   filters={"layout": layout, "min_rating": opts["min_rating"]},
                   counts={"interactions_below_min_rating_dropped": below,
                           "item_duplicates_identical": table.identical_duplicates})
