"""P5-style text files: ``user_sequence.txt`` + an optional item text file.

- ``user_sequence.txt``: ``USER ITEM ITEM ...`` per line (whitespace-separated), each line
  chronological; no timestamps, so the order is kept. A user on several lines gets the
  lines concatenated in file order.
- item text file (default ``item_titles.txt``, option ``item_file``): ``ITEM text ...`` per
  line, the text after the first whitespace being the item's title; a line holding only an
  id declares an item without text. When the file exists it is the catalog: sequence items
  missing from it count as unknown items.

``--path`` is the directory or the sequence file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genrec.data.dataset import Item, RawData
from genrec.data.formats.common import ItemTable, Opt, check_options, text_lines
from genrec.errors import DataError

OPTIONS = {
    "sequence_file": Opt(str, "user_sequence.txt", "sequence file name inside the directory"),
    "item_file": Opt(str, "item_titles.txt", "item text file, relative to the directory or absolute; "
                     "none = no item text", True),
    "encoding": Opt(str, "utf-8", "text encoding of both files"),
}


def resolve(path: Path, sequence_file: str, item_file: str | None,
            item_file_given: bool) -> tuple[Path, Path | None]:
    """``(sequence_file, item_file or None)`` from a directory or the sequence file."""
    if path.is_dir():
        seq = path / sequence_file
        if not seq.is_file():
            raise DataError(f"{path}: {sequence_file} not found; the p5 format expects {sequence_file} "
                            "(USER ITEM ITEM ... per line) and optionally item_titles.txt; "
                            "name another file with --opt sequence_file=NAME")
    else:
        seq = path
    if item_file is None:
        return seq, None
    items = Path(item_file) if Path(item_file).is_absolute() else seq.parent / item_file
    if not items.is_file():
        if item_file_given:
            raise DataError(f"{items} does not exist (from --opt item_file={item_file}); "
                            "pass an existing file or --opt item_file=none")
        return seq, None
    return seq, items


def read(path: Path, **options: Any) -> RawData:
    """Read P5-style files (see module docstring)."""
    opts = check_options("p5", options, OPTIONS)
    seq_path, item_path = resolve(Path(path), opts["sequence_file"], opts["item_file"],
                                  "item_file" in options)
    if seq_path.suffix == ".json" or (item_path is not None and item_path.suffix == ".json"):
        raise DataError(f"{seq_path}: the p5 format reads plain text files; "
                        "for LC-Rec JSON files use --format lcrec")

    interactions: list[tuple[str, str, float | None]] = []
    for _, line in text_lines(seq_path, opts["encoding"]):
        parts = line.split()
        if parts:
            user = parts[0]
            interactions.extend((user, item, None) for item in parts[1:])
    if not interactions:
        raise DataError(f"{seq_path} holds no interactions; expected lines of the form USER ITEM ITEM ...")

    items = None
    counts: dict[str, int] = {}
    if item_path is not None:
        table = ItemTable(item_path)
        for lineno, line in text_lines(item_path, opts["encoding"]):
            parts = line.strip().split(None, 1)
            if parts:
                table.add(Item(item_id=parts[0], title=parts[1].strip() if len(parts) > 1 else ""), lineno)
        items = table.items
        counts["item_duplicates_identical"] = table.identical_duplicates
    inputs = [str(seq_path)] + ([str(item_path)] if item_path else [])
    return RawData(interactions=interactions, items=items, format="p5", inputs=inputs, counts=counts)
