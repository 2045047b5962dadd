"""Which extra terms lift the item head: fits on one run's cached states, head alone, all validation users.

    .venv/bin/python bench/item_head_terms.py --run runs/beauty-tiny --data data/beauty \\
        --tokenizer tokenizers_out/beauty --states /tmp/states_beauty.pt --variants base,tknn1,bknn1,rev,both1

The run's frozen model gives every training prefix's final state once (cached in ``STATES.pt``;
the history's last 5 items beside each), then each variant fits a head the way
``genrec.encoders.item_head.fit_item_head`` does (full softmax, AdamW lr 3e-3, dropout 0.2 on the
states, bias at the training popularity, early stopping on validation NDCG@10 with patience 3)
and prints Recall/NDCG@10 of the head alone on **all** validation users per epoch and at its best:

- ``base``: the rows + transition counts of the last 3 items (gaps 1..3), the recipes' head before;
- ``tknn<m>`` / ``bknn<m>``: + each of the last ``m`` items' 50 nearest items by the tokenizer's
  semantic / behavior embeddings (similarity above the 51st's);
- ``both<m>``: + both neighbour tables; ``rev``: + the reverse counts (j before i) of the last item;
- ``wd``: base with weight decay 0.1; ``ftext`` / ``fbeh``: + a learned map of the state onto the
  frozen semantic / behavior embeddings (a factorised row per item); ``d5``: counts of gaps 1..5.

``bench/results/item_head_similar/head_terms_beauty.log`` holds a run on the Beauty recipe model.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.encoders.item_head import Transitions, head_metrics
from genrec.generation.fusion import recent_items
from genrec.inference.evaluate import served_split
from genrec.inference.recommender import GenRecommender
from genrec.training.item_head import _forward_states, prefix_states

RECENT = 5  # history items kept beside each state


def cache_states(run: Path, data: Path, path: Path) -> None:
    """Write every training prefix's state, target and recent items, and every validation user's, to ``path``."""
    rec = GenRecommender.from_pretrained(run, device="cpu", data_dir=data, item_head=False)
    _, split, _, _ = served_split(rec, data)
    t0 = time.time()
    states, targets, recent = prefix_states(rec.model, rec.render, split.train, rec.max_history, False, RECENT)
    with torch.inference_mode():
        vst = torch.stack([_forward_states(rec.model, *rec.render(h))[-1] for h in split.valid.histories]).cpu()
    torch.save({"states": states, "targets": targets, "recent": recent, "vstates": vst,
                "vtargets": torch.as_tensor(np.asarray(split.valid.targets)),
                "vrecent": recent_items(split.valid.histories, RECENT), "train": [list(map(int, s)) for s in split.train],
                "ids": [it.item_id for it in rec.items], "n": rec.num_items}, path)
    print("states", time.time() - t0, flush=True)


def embeddings(tokenizer: Path, stream: str, ids: Sequence[str]) -> torch.Tensor:
    """``[N, D]`` centred, unit-norm ``stream`` embeddings in catalog order."""
    with open(tokenizer / "item_codes.json", encoding="utf-8") as f:
        order = {k: i for i, k in enumerate(json.load(f))}
    e = torch.from_numpy(np.load(tokenizer / f"embeddings_{stream}.npy")[np.array([order[i] for i in ids])]).float()
    return nn.functional.normalize(e - e.mean(0), dim=1)


def knn(e: torch.Tensor, m: int = 50, shift: bool = True) -> Transitions:
    """Each item's ``m`` nearest others by ``e [N, D]``; values: similarity above the ``m+1``-th's."""
    n, idx, val = len(e), [], []
    for s in range(0, n, 2048):
        sim = e[s:s + 2048] @ e.T
        sim[torch.arange(len(sim)), torch.arange(s, s + len(sim))] = -2
        v, i = sim.topk(m + 1, dim=1)
        if shift:
            v = (v - v[:, -1:]).clamp(min=0)
        idx.append(i[:, :m])
        val.append(v[:, :m])
    return Transitions(torch.arange(0, n * m + 1, m), torch.cat(idx).reshape(-1), torch.cat(val).reshape(-1))


def fit(c: dict[str, Any], tables: list[tuple[Transitions, int, bool]], *, text: torch.Tensor | None = None,
        wd: float = 0.0, epochs: int = 12, patience: int = 3, lr: float = 3e-3, bs: int = 512, dropout: float = 0.2,
        seed: int = 0, name: str = "") -> None:
    """Fit one head (``tables``: (table, recent position, discount own pair)) and print its validation metrics."""
    n = c["n"]
    known = torch.bincount(c["targets"], minlength=n) > 0
    gen = torch.Generator().manual_seed(seed)
    st, tg, tr = c["states"], c["targets"], c["recent"]
    lin = nn.Linear(st.shape[1], n)
    beta = nn.Parameter(torch.ones(len(tables)))
    params = [lin.weight, lin.bias, beta]
    proj = None
    if text is not None:
        proj = nn.Parameter(torch.zeros(st.shape[1], text.shape[1]))
        params.append(proj)
    with torch.no_grad():
        counts = torch.bincount(tg, minlength=n).float()
        lin.bias.copy_(torch.log(counts + 1.0) - torch.log(counts.sum() + n))
        lin.weight.normal_(0.0, 0.01, generator=gen)

    def logits(x: torch.Tensor, rec: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        out = lin(x)
        if proj is not None:
            out = out + (x @ proj) @ text.T
        for j, (tab, pos, own) in enumerate(tables):
            r = tab.rows(rec[:, pos])
            if own and t is not None:
                at = (torch.arange(len(t)), t)
                r[at] = torch.log(torch.expm1(r[at]).clamp(min=1.0))
            out = out + beta[j] * r
        return out

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    best, best_recall, stale = -1.0, 0.0, 0
    uniform = -float(np.log(int(known.sum())))
    users = len(c["vtargets"])
    for ep in range(epochs):
        order = torch.randperm(len(st), generator=gen)
        t0 = time.time()
        for s in range(0, len(order), bs):
            b = order[s:s + bs]
            x = nn.functional.dropout(st[b], dropout, training=True)
            loss = nn.functional.cross_entropy(logits(x, tr[b], tg[b]), tg[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            recall = ndcg = 0.0
            for s in range(0, users, 4096):
                lp = torch.log_softmax(logits(c["vstates"][s:s + 4096], c["vrecent"][s:s + 4096]), -1)
                lp = torch.where(known, lp, torch.full_like(lp, uniform))
                r, nd = head_metrics(lp, c["vtargets"][s:s + 4096])
                recall, ndcg = recall + r * len(lp) / users, ndcg + nd * len(lp) / users
        print(name, "epoch", ep + 1, f"{time.time() - t0:.0f}s",
              (ep + 1, round(recall, 4), round(ndcg, 4), [round(float(v), 3) for v in beta.detach()]), flush=True)
        if ndcg > best:
            best, best_recall, stale = ndcg, recall, 0
        else:
            stale += 1
            if stale >= patience:
                break
    print("RESULT", name, "recall@10", round(best_recall, 4), "ndcg@10", round(best, 4), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--tokenizer", required=True, type=Path, help="the run's item tokenizer directory")
    ap.add_argument("--states", required=True, type=Path, help="cache of the run's states (written when missing)")
    ap.add_argument("--variants", default="base,tknn1,bknn1,rev,both1")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.states.exists():
        cache_states(args.run, args.data, args.states)
    c = torch.load(args.states, weights_only=False)
    n, train = c["n"], c["train"]
    emb = {s: embeddings(args.tokenizer, s, c["ids"]) for s in ("semantic", "behavior")}
    cnt = [(Transitions.count(train, n, g), g - 1, True) for g in (1, 2, 3)]
    for v in args.variants.split(","):
        if v == "base":
            fit(c, cnt, name=v)
        elif v == "wd":
            fit(c, cnt, wd=0.1, name=v)
        elif v.startswith(("tknn", "bknn")):
            k = knn(emb["semantic" if v[0] == "t" else "behavior"])
            fit(c, cnt + [(k, p, False) for p in range(int(v[4:] or 1))], name=v)
        elif v.startswith("both"):
            kt, kb = knn(emb["semantic"]), knn(emb["behavior"])
            m = int(v[4:] or 1)
            fit(c, cnt + [(kt, p, False) for p in range(m)] + [(kb, p, False) for p in range(m)], name=v)
        elif v == "rev":
            fit(c, cnt + [(Transitions.count([s[::-1] for s in train], n, 1), 0, False)], name=v)
        elif v in ("ftext", "fbeh"):
            fit(c, cnt, text=emb["semantic" if v == "ftext" else "behavior"], name=v)
        elif v == "d5":
            fit(c, cnt + [(Transitions.count(train, n, g), g - 1, True) for g in (4, 5)], name=v)
        else:
            raise SystemExit(f"unknown variant {v!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
