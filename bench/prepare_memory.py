"""Peak memory and time of `genrec data prepare --format table` on a large synthetic Parquet table.

    OMP_NUM_THREADS=1 python bench/prepare_memory.py                       # 20M rows, both engines
    python bench/prepare_memory.py --rows 2000000 --engines arrow --out bench/results/prepare_memory.json

Writes a table of ``--rows`` interactions (``user_id``, ``item_id`` strings, integer
``timestamp``; ~``rows / 10`` users and ``rows / 100`` items, rows in random order) in a temporary
directory, then runs `genrec data prepare` on it once per engine, each in a fresh process, and
reports that process's peak RSS (``resource.getrusage``), wall time and CPU time (the whole
process: imports included; on a shared machine CPU time is the steadier figure): ``engine=arrow`` streams
Parquet batches into integer columns, ``engine=python`` is the former path (every row a Python
tuple). It also checks that both engines wrote byte-identical dataset files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 2_000_000


def make_table(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` interactions in row groups of :data:`CHUNK`, generated chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 10, 1), max(rows // 100, 1)
    users = pa.array([f"U{u:09d}" for u in range(n_users)])
    items = pa.array([f"B{i:09d}" for i in range(n_items)])
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        for lo in range(0, rows, CHUNK):
            n = min(CHUNK, rows - lo)
            u = users.take(pa.array(rng.integers(0, n_users, n)))
            i = items.take(pa.array(rng.zipf(1.3, n) % n_items))  # popular items, as in reviews
            t = pa.array(rng.integers(1_300_000_000, 1_550_000_000, n))
            w.write_table(pa.table([u, i, t], schema=schema))


def run_child(table: Path, out: Path, engine: str) -> None:
    """In this process: prepare ``table`` into ``out``; print peak RSS and seconds as JSON."""
    from genrec.data.prepare import prepare

    t0 = time.perf_counter()
    ds = prepare("table", table, out, engine=engine)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"engine": engine, "seconds": round(seconds, 1),
                      "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": round(peak_mib),
                      "users": ds.stats["users"], "items": ds.stats["items"],
                      "interactions": ds.stats["interactions"]}))


def digest(d: Path) -> str:
    h = hashlib.sha256()
    for name in ("items.jsonl", "sequences.jsonl", "stats.json"):
        with open(d / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000_000)
    p.add_argument("--engines", nargs="+", default=["arrow", "python"], choices=["arrow", "python"])
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--child", nargs=3, metavar=("TABLE", "OUT", "ENGINE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run_child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return 0
    results: dict = {"rows": args.rows, "machine": f"{platform.machine()}, {platform.python_version()}",
                     "runs": []}
    with tempfile.TemporaryDirectory(prefix="genrec-prepare-bench-") as tmp:
        table = Path(tmp) / "interactions.parquet"
        t0 = time.perf_counter()
        make_table(table, args.rows)
        results["table_mib"] = round(table.stat().st_size / 2**20)
        print(f"wrote {args.rows:,} rows ({results['table_mib']} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
        digests = {}
        for engine in args.engines:
            out = Path(tmp) / f"ds-{engine}"
            proc = subprocess.run([sys.executable, __file__, "--child", str(table), str(out), engine],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                results["runs"].append({"engine": engine, "failed": proc.stderr.strip().splitlines()[-1:]})
                continue
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
            digests[engine] = digest(out)
            results["output_mib"] = round(sum(f.stat().st_size for f in out.iterdir()) / 2**20)
        if len(digests) > 1:
            results["identical_outputs"] = len(set(digests.values())) == 1
            print(f"identical outputs: {results['identical_outputs']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
