"""The item head at decoding: quality and speed of fused ranking vs the codes alone, side by side.

    .venv/bin/python bench/item_head.py --run runs/beauty-tiny --data data/beauty --users 1000 \\
        [--seed 0] [--threads 1] [--repeats 2] [--json out.json]

One loaded run with an item head (``genrec head`` or ``training.item_head``), one seeded set of
test users, evaluated alternately with the head fused (beam + the head's best items, re-ranked
by ``code score + w · head log-prob``) and without it (the same beam, codes alone), ``--repeats``
times each; prints Recall/NDCG@10 of both, users/s of both and their ratio (the cost of the
extra prefill and candidate scoring).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.inference.evaluate import evaluate_run
from genrec.inference.recommender import GenRecommender


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="genrec run directory with item_head.safetensors")
    ap.add_argument("--data", required=True, type=Path, help="its canonical dataset directory")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rec = GenRecommender.from_pretrained(args.run, device="cpu", data_dir=args.data)
    head = rec.item_head
    if head is None:
        print(f"{args.run} has no item head: fit one with `genrec head --run {args.run} --data {args.data}`")
        return 2
    times: dict[str, list[float]] = {"fused": [], "codes": []}
    metrics: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name in ("fused", "codes"):
            rec.item_head = head if name == "fused" else None
            start = time.perf_counter()
            result = evaluate_run(args.run, args.data, max_users=args.users, seed=args.seed, progress=False,
                                  recommender=rec)
            times[name].append(time.perf_counter() - start)
            metrics[name] = result["test"]
    rate = {n: args.users / min(t) for n, t in times.items()}
    print(f"{args.run.name}: {args.users} test users (seed {args.seed}), {args.threads} thread(s), best of "
          f"{args.repeats}; head weight {head.weight}, {head.extra} extra candidates")
    print("| ranking | recall@10 | ndcg@10 | recall@20 | users/s |")
    print("|---|---:|---:|---:|---:|")
    for n in ("codes", "fused"):
        m = metrics[n]
        print(f"| {n} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} | {rate[n]:.1f} |")
    print(f"fused / codes: recall@10 {metrics['fused']['recall@10'] / max(metrics['codes']['recall@10'], 1e-9):.2f}x, "
          f"ndcg@10 {metrics['fused']['ndcg@10'] / max(metrics['codes']['ndcg@10'], 1e-9):.2f}x, "
          f"speed {rate['fused'] / rate['codes']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "users": args.users, "seed": args.seed,
                                         "threads": args.threads, "weight": head.weight, "extra": head.extra,
                                         "metrics": metrics, "seconds": times, "users_per_s": rate}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
