"""How much of a ranking goes to items the user already has, and what dropping them would give.

    .venv/bin/python bench/history_slots.py --data data/beauty --predictions runs/eval/predictions.jsonl \\
        [--max-history 20] [--json bench/results/history_slots.json]

Reads a ``genrec evaluate`` output's ``predictions.jsonl`` (per user: ``user_id``, ``target``,
``ranked`` top-20 item ids) and the dataset it was evaluated on. Prints

- how often a user's sequence holds the same item twice, and how often a test target is one of
  the items of its history (the history the prompt shows: the last ``--max-history``);
- the share of top-10 slots the model gives to items of the user's history;
- Recall@10 / NDCG@10 as evaluated and with the history's items dropped from each list
  (what a post-hoc "exclude the history" rule would give, without refilling from beyond rank 20).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np


def _at10(ranked: list[str], target: str) -> tuple[float, float]:
    top = ranked[:10]
    if target not in top:
        return 0.0, 0.0
    return 1.0, float(1.0 / np.log2(top.index(target) + 2))


def measure(data: str, predictions: str, max_history: int = 20, split: str = "test") -> dict[str, float]:
    """The numbers above for a ``genrec evaluate`` output of ``split``."""
    from genrec.data.dataset import Dataset
    from genrec.data.split import leave_one_out

    ds = Dataset.load(data)
    test = getattr(leave_one_out(ds, max_history), split)
    hist = {ds.users[u]: {ds.items[int(i)].item_id for i in h if i >= 0} for u, h in zip(test.users, test.histories)}
    interactions = sum(len(s) for s in ds.sequences)
    repeats = interactions - sum(len(set(s.tolist())) for s in ds.sequences)
    target_in_history = float(np.mean([ds.items[int(t)].item_id in hist[ds.users[u]]
                                       for u, t in zip(test.users, test.targets)]))
    slots, asis, dropped = [], [], []
    for line in Path(predictions).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        seen = hist[row["user_id"]]
        slots.append(sum(i in seen for i in row["ranked"][:10]) / 10)
        asis.append(_at10(row["ranked"], row["target"]))
        dropped.append(_at10([i for i in row["ranked"] if i not in seen], row["target"]))
    a, d = np.asarray(asis), np.asarray(dropped)
    return {"users": len(slots), "interactions": interactions, "repeated_interactions": repeats,
            "test_target_in_history": target_in_history, "top10_slots_on_history": float(np.mean(slots)),
            "recall@10": float(a[:, 0].mean()), "ndcg@10": float(a[:, 1].mean()),
            "recall@10_history_dropped": float(d[:, 0].mean()), "ndcg@10_history_dropped": float(d[:, 1].mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="canonical dataset directory")
    ap.add_argument("--predictions", required=True, help="predictions.jsonl written by `genrec evaluate`")
    ap.add_argument("--max-history", type=int, default=20, help="history length of the evaluation (default 20)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    res = measure(args.data, args.predictions, args.max_history)
    for k, v in res.items():
        print(f"{k:28s} {v:.4f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
