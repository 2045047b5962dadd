"""``genrec data prepare``: raw files in any supported format → canonical dataset directory."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from genrec.data.dataset import Dataset, build_dataset
from genrec.data.formats import read
from genrec.errors import ConfigError, DataError
from genrec.io import checksums

log = logging.getLogger(__name__)


def prepare(fmt: str, path: str | Path, out: str | Path | None = None, *, strict: bool = False,
            min_user_interactions: int = 3, keep_cold_items: bool = False, **options) -> Dataset:
    """Read ``path`` with the ``fmt`` reader, clean it, and (if ``out``) save it atomically."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass the raw data file or directory with --path")
    raw = read(fmt, path, **options)
    ds = build_dataset(raw, source=str(path.resolve()), strict=strict,
                       min_user_interactions=min_user_interactions, keep_cold_items=keep_cold_items,
                       config={"format": fmt, "path": str(path), "options": options},
                       input_checksums=checksums(raw.inputs))
    if out is not None:
        ds.save(out)
    return ds


def parse_options(pairs: list[str]) -> dict[str, str]:
    """``["sep=|", "min_rating=4"]`` → ``{"sep": "|", "min_rating": "4"}``.

    Values stay strings (each reader converts them to its option's type): YAML-parsing them
    would turn separators such as ``|`` or ``::`` into something else.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--opt {pair!r} is not of the form key=value (e.g. --opt min_rating=4)")
        if key.strip() in out:
            raise ConfigError(f"--opt {key.strip()} is given twice; keep one")
        out[key.strip()] = value
    return out


def main(args: argparse.Namespace) -> int:
    options = parse_options(args.opt)
    ds = prepare(args.format, args.path, args.out, strict=args.strict,
                 min_user_interactions=args.min_user_interactions, keep_cold_items=args.keep_cold_items,
                 **options)
    s = ds.stats
    print(f"wrote {args.out}: {s['users']:,} users / {s['items']:,} items / {s['interactions']:,} interactions")
    print(json.dumps(s, indent=2))
    return 0
