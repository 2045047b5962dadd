"""Where a genrec evaluation and SASRec differ: hit@10 per user group, on the same users.

    .venv/bin/python bench/transition_hits.py --predictions runs/eval/predictions.jsonl \\
        --data data/beauty --sasrec runs/sasrec_beauty [--max-history 20] [--json out.json]

Reads the ``predictions.jsonl`` of ``genrec evaluate`` (test split), ranks the same users' targets
with the SASRec baseline, and splits hit@10 by whether the user's last item -> target transition
occurs in the training sequences (the pairs an item-level model can memorise), by how often the
target was a training target, and by history length. ``more_users`` is how many more users
SASRec hits than genrec in that group (negative: genrec hits more).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.baselines.artifact import load_sasrec
from genrec.baselines.popularity import item_counts
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out, pad_left


def sasrec_ranks(bdir: Path, histories: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """``[U]`` 0-based rank of each target in SASRec's full-catalog scores."""
    net, cfg = load_sasrec(bdir / "model.pt")
    net.eval()
    padded = pad_left(histories, cfg.max_len)
    out = []
    with torch.no_grad():
        for s in range(0, len(targets), 256):
            sc = net.score(padded[s:s + 256]).float()
            t = torch.as_tensor(targets[s:s + 256])
            out.append((sc > sc.gather(1, t[:, None])).sum(1))
    return torch.cat(out).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", required=True, type=Path, help="predictions.jsonl of `genrec evaluate`")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--sasrec", required=True, type=Path, help="a `genrec baseline --model sasrec` directory")
    ap.add_argument("--max-history", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = Dataset.load(args.data)
    split = leave_one_out(ds, args.max_history)
    index = {u: i for i, u in enumerate(ds.users)}
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
    users = np.array([index[r["user_id"]] for r in rows])
    hist = [split.test.histories[u] for u in users]
    tgt = split.test.targets[users]
    g_hit = np.array([r["target"] in r["ranked"][:10] for r in rows])
    s_hit = sasrec_ranks(args.sasrec, hist, tgt) < 10
    counts = item_counts(split.train, ds.num_items)
    follows: dict[int, Counter] = defaultdict(Counter)
    for seq in split.train:
        for a, b in pairwise(seq):
            follows[int(a)][int(b)] += 1
    seen = np.array([follows[int(h[-1])][int(t)] for h, t in zip(hist, tgt)])
    tc, hl = counts[tgt], np.array([len(h) for h in hist])
    groups = {"all": np.ones(len(users), bool), "transition seen in training": seen >= 1,
              "... seen twice or more": seen >= 2, "new transition": seen == 0}
    for lo, hi in [(0, 5), (5, 20), (20, 100), (100, None)]:
        groups[f"target a training target {lo}-{hi or 'inf'} times"] = (tc >= lo) & (tc < (hi or np.inf))
    for lo, hi in [(1, 5), (5, 10), (10, None)]:
        groups[f"history of {lo}-{(hi or args.max_history + 1) - 1} items"] = (hl >= lo) & (hl < (hi or np.inf))
    result = {}
    print(f"{len(users)} users | genrec hit@10 | SASRec hit@10 | more_users (SASRec - genrec)")
    for name, m in groups.items():
        if not m.any():
            continue
        r = {"users": int(m.sum()), "genrec": float(g_hit[m].mean()), "sasrec": float(s_hit[m].mean()),
             "more_users": int(s_hit[m].sum() - g_hit[m].sum())}
        result[name] = r
        print(f"{name:40s} {r['users']:6d}  {r['genrec']:.4f}  {r['sasrec']:.4f}  {r['more_users']:+d}")
    if args.json:
        args.json.write_text(json.dumps({"predictions": str(args.predictions), "groups": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
