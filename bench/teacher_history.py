"""How much of a SASRec's next-item distribution falls on the user's own history.

    .venv/bin/python bench/teacher_history.py --baseline runs/sasrec_beauty --data data/beauty \\
        [--prefixes 2000] [--seed 0] [--json bench/results/teacher_history/mass_beauty.json]

The distillation term (``losses.weights.distill``) teaches the student the teacher's probability
mass per code token. On a catalog where no user takes an item twice, the mass a SASRec puts on
the history's own items can never be right. This samples ``--prefixes`` training prefixes (a
random cut of a random training sequence, the last ``max_len`` items) and reports the mean
teacher mass on the prefix's items, on the true next item, and how often the next item is in the
prefix (the repeat rate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genrec.baselines.artifact import CHECKPOINT, load_sasrec
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out
from genrec.io import write_json
from genrec.training.losses.distill import CodeDistillation


def history_mass(baseline: Path, data: Path, prefixes: int = 2000, seed: int = 0,
                 batch_size: int = 256) -> dict[str, float]:
    """Mean teacher mass on the history's items and on the target over sampled training prefixes."""
    teacher, _ = load_sasrec(baseline / CHECKPOINT)
    split = leave_one_out(Dataset.load(data))
    rng = np.random.default_rng(seed)
    seqs = [s for s in split.train if len(s) >= 2]
    hist, targets = [], []
    for i in rng.choice(len(seqs), min(prefixes, len(seqs)), replace=False):
        cut = int(rng.integers(1, len(seqs[i])))
        h = [int(x) for x in seqs[i][:cut][-teacher.max_len:]]
        hist.append([-1] * (teacher.max_len - len(h)) + h)
        targets.append(int(seqs[i][cut]))
    hist_t, tgt = torch.tensor(hist), torch.tensor(targets)
    on_hist, on_target, in_hist = [], [], []
    with torch.no_grad():
        for lo in range(0, len(hist_t), batch_size):
            h, t = hist_t[lo:lo + batch_size], tgt[lo:lo + batch_size]
            p = torch.softmax(teacher.score(h).float(), dim=-1)  # [B, N]
            seen = CodeDistillation.history_mask(h, None, p.shape[1])
            rows = torch.arange(len(t))
            on_hist.append((p * seen).sum(1))
            on_target.append(p[rows, t])
            in_hist.append(seen[rows, t].float())
    return {"prefixes": len(hist_t), "history_mass": float(torch.cat(on_hist).mean()),
            "target_mass": float(torch.cat(on_target).mean()),
            "target_in_history": float(torch.cat(in_hist).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, type=Path, help="`genrec baseline --model sasrec` output directory")
    ap.add_argument("--data", required=True, type=Path, help="the canonical dataset it was trained on")
    ap.add_argument("--prefixes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"baseline": str(args.baseline), "data": str(args.data), "seed": args.seed,
              **history_mass(args.baseline, args.data, args.prefixes, args.seed)}
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
