"""Where does a generative recommender lose the next item? Per-level accuracy of its code prefix.

    .venv/bin/python bench/code_levels.py --run /tmp/bq_sci/runs/dual --data /tmp/bq_sci/data \\
        --sasrec /tmp/bq_sci/sasrec [--split test] [--users 1000] [--seed 42] [--json out.json]

A genrec model emits the next item's index one token per level (``<s0><s1><b0><b1>``). With the
true history and teacher forcing, this measures for each level ``l``: given the true first ``l``
tokens, how often the model ranks the true next token first (``hit@1``) and in its top 5
(``hit@5``) among the *valid* children of that prefix (the trie's), and its mean log-probability
renormalised over them. SASRec, which scores whole items, is measured the same way by summing
its softmax over the items below each child: both models answer the same question per level,
so a gap at level 0 (which coarse cluster comes next) and a gap at the last level (which item
inside a cluster) point to different fixes. A second table sums the levels into ``log P(true item)``
and gives the share of users above a few bounds: two models can tie on the mean and per level
while one of them is confident (sharp) on the true item for far more users, which is what
Recall@10 rewards. Indices of different lengths (the flat dual index,
where only items sharing their pair get a ``<d_n>``) are measured per level over the users whose
target has that level. Users: the same seeded subset ``genrec evaluate --max-users N --seed S`` uses.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.baselines.artifact import load_sasrec
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out, pad_left, sample_users, subset
from genrec.encoders.item_adapter import prompt_extras
from genrec.inference.recommender import GenRecommender
from genrec.io import write_json

SHARP = (-3, -4, -6, -8, -10)  # log-probability bounds of the "how often is the true item sharp" row


def children_table(seqs: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """Prefix (tuple of token ids) -> sorted valid next tokens."""
    table: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for s in seqs:
        for level in range(len(s)):
            table[tuple(s[:level])].add(s[level])
    return {p: sorted(c) for p, c in table.items()}


def level_stats(logp: np.ndarray, true_pos: int) -> tuple[float, float, float]:
    """``(hit@1, hit@5, log-prob)`` of the child at ``true_pos`` given log-scores ``[C]`` over the children."""
    logp = logp - np.logaddexp.reduce(logp)
    rank = int((logp > logp[true_pos]).sum())
    return float(rank == 0), float(rank < 5), float(logp[true_pos])


def genrec_levels(rec: GenRecommender, seqs: list[list[int]], histories: list[np.ndarray], targets: np.ndarray,
                  children: dict) -> np.ndarray:
    """``[U, depth, 3]`` (hit@1, hit@5, log-prob) per user and level, teacher forced; NaN past the target's depth."""
    model = rec.model
    device = next(model.parameters()).device
    out = np.full((len(targets), max(map(len, seqs)), 3), np.nan)
    with torch.inference_mode():
        for u, (h, t) in enumerate(zip(histories, targets)):
            prompt, items = rec.render(h.tolist())
            target = seqs[int(t)]
            ids = torch.tensor([prompt + target], device=device)
            if rec.item_adapter is None:
                logits = model(input_ids=ids).logits[0].float()  # [L, V]
            else:  # the history items' adapter vectors, as the beam search adds them
                extra = prompt_extras(rec.item_adapter, [len(prompt) + len(target)], [items])[0]
                embeds = model.get_input_embeddings()(ids) + extra[None].to(device)
                logits = model(inputs_embeds=embeds).logits[0].float()
            for level in range(len(target)):
                kids = children[tuple(target[:level])]
                row = logits[len(prompt) - 1 + level, kids].cpu().numpy()
                out[u, level] = level_stats(row, kids.index(target[level]))
    return out


def sasrec_levels(bdir: Path, seqs: list[list[int]], histories: list[np.ndarray], targets: np.ndarray,
                  children: dict) -> np.ndarray:
    """The same statistics for SASRec: item probabilities summed per child of the true prefix."""
    net, cfg = load_sasrec(bdir / "model.pt")
    net.eval()
    depth = max(map(len, seqs))
    # below[level][prefix + child] = item indices under that node
    below: list[dict[tuple[int, ...], list[int]]] = [defaultdict(list) for _ in range(depth)]
    for i, s in enumerate(seqs):
        for level in range(len(s)):
            below[level][tuple(s[:level + 1])].append(i)
    padded = pad_left(histories, cfg.max_len)
    out = np.full((len(targets), depth, 3), np.nan)
    with torch.no_grad():
        for start in range(0, len(targets), 256):
            logp = torch.log_softmax(net.score(padded[start:start + 256]).float(), -1).numpy()  # [B, N]
            for r, row in enumerate(logp):
                u = start + r
                target = seqs[int(targets[u])]
                for level in range(len(target)):
                    prefix, kids = tuple(target[:level]), children[tuple(target[:level])]
                    mass = np.array([np.logaddexp.reduce(row[below[level][prefix + (c,)]]) for c in kids])
                    out[u, level] = level_stats(mass, kids.index(target[level]))
    return out


def transition_groups(train_seqs: list[np.ndarray], histories: list[np.ndarray], targets: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """``[U]`` bool masks: users grouped by how often ``last history item -> target`` follows in the
    training sequences (their last ``max_history`` items) — the pairs a model can memorise, against
    those it must generalise to."""
    follows: dict[int, Counter] = defaultdict(Counter)
    for seq in train_seqs:
        for a, b in pairwise(seq):
            follows[int(a)][int(b)] += 1
    seen = np.array([follows[int(h[-1])][int(t)] if len(h) else 0 for h, t in zip(histories, targets)])
    return {"transition seen >= 2 times": seen >= 2, "seen once": seen == 1, "never seen": seen == 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="genrec run directory")
    ap.add_argument("--data", required=True, type=Path, help="its canonical dataset directory")
    ap.add_argument("--sasrec", type=Path, help="a `genrec baseline --model sasrec` directory to compare")
    ap.add_argument("--split", choices=["valid", "test"], default="test")
    ap.add_argument("--users", type=int, default=1000, help="seeded user subset (0: all)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.time()
    rec = GenRecommender.from_pretrained(args.run, device="cpu", data_dir=args.data)
    seqs = [list(s) for s, _ in sorted(rec._by_tokens.items(), key=lambda kv: kv[1])]
    tokens = rec.tokenizer.convert_ids_to_tokens(max(seqs, key=len))
    levels = [t.split("_")[0].strip("<") for t in tokens]
    children = children_table(seqs)
    split = leave_one_out(Dataset.load(args.data), rec.max_history)
    evalset = getattr(split, args.split)
    data = subset(evalset, sample_users(len(evalset), args.users or None, args.seed))
    models = {"genrec": genrec_levels(rec, seqs, data.histories, data.targets, children)}
    if args.sasrec:
        models["sasrec"] = sasrec_levels(args.sasrec, seqs, data.histories, data.targets, children)
    fanout = [float(np.mean([len(children[tuple(seqs[int(t)][:lv])]) for t in data.targets
                             if len(seqs[int(t)]) > lv])) for lv in range(len(levels))]
    reach = [int(sum(len(seqs[int(t)]) > lv for t in data.targets)) for lv in range(len(levels))]
    joint = {m: np.nansum(a[:, :, 2], 1) for m, a in models.items()}  # [U] log P(true item)
    groups = transition_groups(split.valid.histories, data.histories, data.targets)  # the training sequences
    result = {"run": str(args.run), "split": args.split, "users": len(data.targets), "seed": args.seed,
              "levels": levels, "mean_children": fanout, "users_per_level": reach,
              "models": {m: {lv: {"hit@1": float(np.nanmean(a[:, i, 0])), "hit@5": float(np.nanmean(a[:, i, 1])),
                                  "logp": float(np.nanmean(a[:, i, 2]))} for i, lv in enumerate(levels)}
                         for m, a in models.items()},
              # the whole index: log P(true item) = the sum over its levels, and how often it is sharp
              "joint": {m: {"mean_logp": float(j.mean()), "share_above": {str(t): float((j > t).mean()) for t in SHARP}}
                        for m, j in joint.items()},
              "by_transition": {g: {"users": int(mask.sum()),
                                    **{m: {"mean_logp": float(j[mask].mean()) if mask.any() else None,
                                           "share_above_-4": float((j[mask] > -4).mean()) if mask.any() else None}
                                       for m, j in joint.items()}} for g, mask in groups.items()},
              "seconds": round(time.time() - start, 1)}
    print(f"{args.run.name}: {args.split}, {len(data.targets)} users, teacher-forced per-level ranking of the true "
          "token among the valid children of the true prefix")
    print("| level | users | children | " + " | ".join(f"{m} hit@1 | {m} hit@5 | {m} log-p" for m in models) + " |")
    print("|---|---:|---:|" + "---:|" * (3 * len(models)))
    for i, lv in enumerate(levels):
        cells = [f"{result['models'][m][lv][k]:.3f}" for m in models for k in ("hit@1", "hit@5", "logp")]
        print(f"| {lv} | {reach[i]} | {fanout[i]:.1f} | " + " | ".join(cells) + " |")
    print("\nlog P(true item) over the whole index (sum of the levels): mean, and share of users above each bound")
    print("| model | mean | " + " | ".join(f"> {t}" for t in SHARP) + " |")
    print("|---|---:|" + "---:|" * len(SHARP))
    for m, j in result["joint"].items():
        print(f"| {m} | {j['mean_logp']:.3f} | " + " | ".join(f"{j['share_above'][str(t)]:.3f}" for t in SHARP) + " |")
    print("\nthe same by how often `last history item -> target` follows in the training sequences")
    print("| users | n | " + " | ".join(f"{m} mean | {m} > -4" for m in models) + " |")
    print("|---|---:|" + "---:|" * (2 * len(models)))
    for g, row in result["by_transition"].items():
        cells = [f"{row[m]['mean_logp']:.3f} | {row[m]['share_above_-4']:.3f}" if row["users"] else "— | —" for m in models]
        print(f"| {g} | {row['users']} | " + " | ".join(cells) + " |")
    if args.json:
        write_json(args.json, result)
    print(f"({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
