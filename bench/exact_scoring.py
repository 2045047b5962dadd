"""Exact scoring of every item vs constrained beam search: quality and speed, side by side.

    python bench/exact_scoring.py --run runs/sci_distill --data data/scientific --users 500
    python bench/exact_scoring.py --synthetic --catalogs 10000 100000 1000000

(a) ``--run``: one trained run evaluated twice on the same seeded users — beam search
    (``--beams``, default 20) and exact scoring (:mod:`genrec.generation.exact`) — with
    Recall/NDCG@K, users/s, items scored per second, the mean overlap of the two top-10 lists
    and the share of users whose exact top-1 beam search missed from its top-10.
(b) ``--synthetic``: a tiny random LLaMA (or ``--model``) with 4-token items (256 codes per
    level) at each catalog size: per-prompt latency of beam search vs exact scoring, and the
    exact path's items/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from genrec.generation import ItemTrie, exact_search, search
from genrec.inference.evaluate import evaluate_run
from genrec.inference.recommender import GenRecommender


def part_a(args: argparse.Namespace) -> dict:
    rows = {}
    ranked = {}
    for scoring in ("beam", "exact"):
        rec = GenRecommender.from_pretrained(args.run, device="cpu", data_dir=args.data, scoring=scoring)
        out = Path(args.out) / scoring if args.out else None
        res = evaluate_run(args.run, args.data, split=args.split, num_beams=args.beams, batch_size=args.batch,
                           max_users=args.users, seed=args.seed, progress=False, recommender=rec, out=out)
        m = res[args.split]
        rows[scoring] = {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"], "recall@20": m["recall@20"],
                         "ndcg@20": m["ndcg@20"], "coverage": m["coverage"], "users": m["users"],
                         "seconds": res["seconds"], "users_per_s": m["users"] / res["seconds"],
                         "items_scored_per_s": (m["users"] * rec.num_items / res["seconds"]
                                                if scoring == "exact" else None)}
        if out is not None:
            ranked[scoring] = [json.loads(line)["ranked"] for line in (out / "predictions.jsonl").open()]
        print(f"  {scoring}: {rows[scoring]}", flush=True)
    if ranked:
        overlap = [len(set(b[:10]) & set(e[:10])) / 10 for b, e in zip(ranked["beam"], ranked["exact"])]
        miss = [e[0] not in b[:10] for b, e in zip(ranked["beam"], ranked["exact"])]
        rows["top10_overlap"] = float(np.mean(overlap))
        rows["exact_top1_missed_by_beam_top10"] = float(np.mean(miss))
    return rows


def part_b(args: argparse.Namespace) -> list[dict]:
    from decoding import load, make_prompts, synthetic_codes, token_seqs

    model, tok, item_ids = load(args.model is None, args.model or "")
    out = []
    for n in args.catalogs:
        codes = synthetic_codes(n, args.seed + n)
        trie = ItemTrie.from_sequences(token_seqs(codes, item_ids), tok.eos_token_id, len(tok))
        prompts = make_prompts(tok, codes, args.prompts, 20, args.seed)
        search(model, prompts[:1], args.beams, 10, trie=trie)  # warm-up
        beam = [_timed(search, model, [p], args.beams, 10, trie=trie) for p in prompts]
        exact = [_timed(exact_search, model, [p], trie, 10, chunk=args.chunk) for p in prompts]
        row = {"items": n, "nodes": trie.num_nodes, "beam_ms": statistics.median(beam) * 1e3,
               "exact_ms": statistics.median(exact) * 1e3}
        row["exact_over_beam"] = row["exact_ms"] / row["beam_ms"]
        row["exact_items_per_s"] = n / statistics.median(exact)
        out.append(row)
        print(f"  {n:>9} items: {row}", flush=True)
    return out


def _timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a `genrec train` run directory for (a)")
    ap.add_argument("--data", help="its dataset directory")
    ap.add_argument("--users", type=int, default=500, help="seeded test users for (a) (default 500)")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--out", help="write both evaluations' outputs under OUT/beam and OUT/exact")
    ap.add_argument("--synthetic", action="store_true", help="run (b)")
    ap.add_argument("--model", default=None, help="(b): a causal LM name or path (default: a tiny random LLaMA)")
    ap.add_argument("--catalogs", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--prompts", type=int, default=2, help="(b): prompts timed per catalog")
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8, help="(a): users per call")
    ap.add_argument("--chunk", type=int, default=512, help="(b): path tokens per forward call of exact scoring")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not args.run and not args.synthetic:
        ap.error("give --run RUN --data DATA and/or --synthetic")
    torch.set_num_threads(args.threads)
    res: dict = {"threads": args.threads, "load_avg_before": os.getloadavg()[0]}
    if args.run:
        if not args.data:
            ap.error("--run needs --data")
        print(f"(a) {args.run}: beam {args.beams} vs exact on {args.users} {args.split} users", flush=True)
        res["a"] = part_a(args)
        a = res["a"]
        print(f"\n    {'':8}{'R@10':>8}{'N@10':>8}{'R@20':>8}{'N@20':>8}{'users/s':>9}")
        for s in ("beam", "exact"):
            r = a[s]
            print(f"    {s:8}{r['recall@10']:>8.4f}{r['ndcg@10']:>8.4f}{r['recall@20']:>8.4f}{r['ndcg@20']:>8.4f}"
                  f"{r['users_per_s']:>9.2f}")
        print(f"    exact/beam: NDCG@10 {a['exact']['ndcg@10'] / max(a['beam']['ndcg@10'], 1e-9):.3f}x, "
              f"speed {a['exact']['users_per_s'] / a['beam']['users_per_s']:.3f}x"
              + (f"; top-10 overlap {a['top10_overlap']:.3f}, exact top-1 outside beam top-10 "
                 f"{a['exact_top1_missed_by_beam_top10']:.3f}" if "top10_overlap" in a else ""))
    if args.synthetic:
        print("(b) synthetic catalogs", flush=True)
        res["b"] = part_b(args)
    res["load_avg_after"] = os.getloadavg()[0]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
