"""Popularity and SASRec on Amazon Beauty, side by side with the published SASRec numbers.

    .venv/bin/python bench/sasrec_beauty.py --data /tmp/beauty_ds --out /tmp/bench_sasrec_beauty \\
        --json bench/results/sasrec_beauty.json [--loss ce bce] [key=value ...]

``--data`` is a canonical dataset directory; when it does not exist it is prepared from
``--raw`` (the P5-style ``beauty/`` folder of the shared datasets) with the ``p5`` reader.
Every model runs through ``genrec baseline``'s harness (leave-one-out, history <= 20, full
ranking over all 12,101 items), so each leaves a complete artifact directory under ``--out``.
``key=value`` overrides go to every SASRec run (e.g. ``num_threads=1`` on a crowded machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from genrec.baselines.run import run_baseline
from genrec.data.dataset import Dataset
from genrec.data.prepare import prepare
from genrec.io import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAW = ROOT.parent / "shared" / "datasets" / "beauty"
log = logging.getLogger("bench.sasrec_beauty")
RECIPE = ROOT / "recipes" / "baseline_sasrec_beauty.yaml"
# Published SASRec on Beauty under the same protocol (as reported by TIGER, NeurIPS 2023).
PUBLISHED = {"recall@5": 0.0387, "recall@10": 0.0605, "ndcg@5": 0.0249, "ndcg@10": 0.0318}
BAND = 0.15  # accepted relative distance of our test Recall@10 from the published value
COLUMNS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def table(results: dict[str, dict]) -> str:
    """Test metrics per model, the published SASRec row, and ours / published ratios."""
    head = f"{'model':<14}" + "".join(f"{c:>11}" for c in COLUMNS) + f"{'wall s':>9}{'best ep':>9}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(f"{name:<14}" + "".join(f"{r['test'][c]:11.4f}" for c in COLUMNS)
                     + f"{r['wall_seconds']:9.0f}{r.get('best_epoch') or '-':>9}")
    lines.append(f"{'published':<14}" + "".join(f"{PUBLISHED[c]:11.4f}" for c in COLUMNS))
    for name, r in results.items():
        if name.startswith("sasrec"):
            lines.append(f"{name + '/pub':<14}" + "".join(f"{r['test'][c] / PUBLISHED[c]:11.2f}" for c in COLUMNS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/beauty_ds", help="canonical dataset dir (prepared if absent)")
    ap.add_argument("--raw", default=str(DEFAULT_RAW), help="raw P5-style Beauty folder")
    ap.add_argument("--out", default="/tmp/bench_sasrec_beauty", help="artifact directories go here")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "sasrec_beauty.json"),
                    help="results file")
    ap.add_argument("--loss", nargs="+", default=["ce"], choices=["ce", "bce"], help="SASRec losses to run")
    ap.add_argument("--config", default=str(RECIPE), help="SASRec recipe")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="SASRec config overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    data = Path(args.data)
    if not (data / "sequences.jsonl").is_file():
        log.info("preparing %s from %s", data, args.raw)
        prepare("p5", args.raw, data)
    stats = Dataset.load(data).stats
    out = Path(args.out)
    results: dict[str, dict] = {}
    runs = [("pop", "pop", [])] + [(f"sasrec-{loss}", "sasrec", [f"loss={loss}"]) for loss in args.loss]
    for name, model, extra in runs:
        start = time.perf_counter()
        config = args.config if model == "sasrec" else None
        overrides = [*args.overrides, *extra] if model == "sasrec" else []
        record = run_baseline(data, model, out / name, config, overrides, progress=not args.no_progress)
        prov = read_json(out / name / "provenance.json")
        results[name] = {**record, "wall_seconds": round(time.perf_counter() - start, 1),
                         "best_epoch": prov.get("best_epoch"), "epochs_run": prov.get("epochs_run"),
                         "seed": prov.get("seed"), "config": prov["config"], "artifacts": str(out / name)}
        print(f"{name}: test {json.dumps(record['test'])}", flush=True)

    print()
    print(table(results))
    summary = {}
    for name, r in results.items():
        if name.startswith("sasrec"):
            ratio = r["test"]["recall@10"] / PUBLISHED["recall@10"]
            summary[name] = {"recall@10_ratio": round(ratio, 4), "within_band": abs(ratio - 1) <= BAND}
            print(f"{name}: test Recall@10 {r['test']['recall@10']:.4f} = {ratio:.2f} x published "
                  f"({'inside' if abs(ratio - 1) <= BAND else 'outside'} the +/-{BAND:.0%} band)")
    wall = time.perf_counter() - t0
    print(f"total wall time {wall:.0f} s")
    write_json(args.json, {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "dataset": {"path": str(data.resolve()), **{k: stats[k] for k in
                                                                        ("users", "items", "interactions")}},
                           "protocol": "leave-one-out, history <= 20, full ranking, test metrics",
                           "published_sasrec": PUBLISHED, "results": results, "band_check": summary,
                           "total_wall_seconds": round(wall, 1)})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
