"""The item head: one output row per catalog item on a generative model's final hidden state.

Index tokens are shared: an item's first code names a cluster of ~50 items, so a model that
emits codes generalises well but cannot hold "after this item comes exactly that one" — the
item-to-item transitions that repeat in the training sequences and that an ID-based SASRec
memorises. The head is a linear map ``logits [B, N] = states [B, H] · W^T + b`` fitted with a
full softmax over the catalog on the frozen model's states (each training prefix -> its next
item), and fused with the code scores at decoding (:func:`genrec.generation.fused_rerank`).
A linear map of the state learns such transitions only approximately, so the head also adds the
transition counts of the training sequences themselves: ``beta[d] · log(1 + count(i -> j))`` for
the history's item ``i`` that sits ``d + 1`` positions before the next one, for its last ``K``
items (:class:`Transitions`, one table per gap; ``beta`` learned with the rows), and the nearest
items by embedding of the last item(s) (:meth:`Transitions.neighbours`), which reach the pairs
no training sequence holds. Last, one learned weight ``alpha`` on the items of the history itself
(``seen``): a catalog whose users never take the same item twice learns a large negative weight
and stops spending recommendation slots on what the user already has; one with repeat purchases
learns what they are worth.
Items that were never a training target (new, or held out) have no row of their own: with item
embeddings, each borrows the mean row (weight and bias) of its nearest trained items
(:meth:`ItemHead.borrow`), so the state and the history terms rank it like the items it
resembles; without, it gets the uniform log-probability and its codes alone rank it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genrec.errors import DataError
from genrec.io import atomic_file

log = logging.getLogger(__name__)

SEEN_LR = 0.05  # learning rate of the seen-item weight (the rest of the head: ``lr``)


class Transitions:
    """A sparse ``[N, N]`` item-to-item table (CSR: ``indptr [N + 1]``, ``indices [E]`` items,
    ``values [E]``) read from one recent history item: ``gap`` says which (1: the last).
    ``kind="next"``: ``log(1 + count)`` of item ``j`` coming ``gap`` positions after item ``i`` in
    training sequences (:meth:`count`); ``kind="similar"``: the item's nearest neighbours by
    embedding (:meth:`neighbours`), which reach pairs no training sequence holds."""

    KINDS = ("next", "similar")

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, gap: int = 1,
                 kind: str = "next") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown transition table kind {kind!r}; expected one of {self.KINDS}")
        self.indptr, self.indices, self.values = indptr.long(), indices.long(), values.float()
        self.gap, self.kind = int(gap), kind

    @classmethod
    def count(cls, sequences: Sequence[Sequence[int]], num_items: int, gap: int = 1) -> Transitions:
        """The table of every pair ``(s[i], s[i + gap])`` of ``sequences`` (item indices)."""
        arrays = (np.asarray(q, dtype=np.int64) for q in sequences)
        pairs = [np.stack([s[:-gap], s[gap:]], 1) for s in arrays if len(s) > gap]
        flat = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
        keys, counts = np.unique(flat[:, 0] * num_items + flat[:, 1], return_counts=True)
        rows, cols = keys // num_items, keys % num_items
        indptr = np.zeros(num_items + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(torch.from_numpy(np.cumsum(indptr)), torch.from_numpy(cols), torch.from_numpy(np.log1p(counts)),
                   gap)

    @classmethod
    def neighbours(cls, embeddings: torch.Tensor | np.ndarray, k: int = 50, gap: int = 1,
                   chunk: int = 2048) -> Transitions:
        """Each item's ``k`` nearest other items by cosine similarity of ``embeddings [N, D]``
        (centred first). Values are the similarity minus that of the ``k+1``-th neighbour, so a
        neighbour scores in ``[0, 2]`` and every other item 0 without a cliff at the cut."""
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        x = nn.functional.normalize(x - x.mean(0), dim=1)
        n = len(x)
        k = max(min(int(k), n - 2), 0)
        idx, val = [], []
        for start in range(0, n, chunk):
            sim = x[start:start + chunk] @ x.T
            sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -3.0  # never its own neighbour
            v, i = sim.topk(k + 1, dim=1)
            idx.append(i[:, :k])
            val.append((v[:, :k] - v[:, k:]).clamp(min=0.0))
        return cls(torch.arange(n + 1) * k, torch.cat(idx).reshape(-1), torch.cat(val).reshape(-1), gap, "similar")

    def __len__(self) -> int:
        return len(self.indices)

    def rows(self, src: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` dense rows of ``src [B]`` item indices (``-1``: zeros)."""
        n, dev = len(self.indptr) - 1, src.device
        indptr = self.indptr.to(dev)
        out = torch.zeros((len(src), n), device=dev)
        ok = (src >= 0) & (src < n)
        lo = torch.where(ok, indptr[src.clamp(0, n - 1)], 0)
        width = torch.where(ok, indptr[(src + 1).clamp(0, n)] - lo, 0)
        b = torch.repeat_interleave(torch.arange(len(src), device=dev), width)
        at = torch.repeat_interleave(lo - width.cumsum(0) + width, width) + torch.arange(int(width.sum()), device=dev)
        out[b, self.indices.to(dev)[at]] = self.values.to(dev)[at]
        return out

    def to(self, device: Any) -> Transitions:
        return Transitions(self.indptr.to(device), self.indices.to(device), self.values.to(device), self.gap,
                           self.kind)


class ItemHead(nn.Module):
    """``forward(states [B, H], recent [B, K] | None) -> [B, N]`` item log-probs; items where
    ``known [N]`` (trained on) and ``borrowed [N]`` (a row from similar items) are both false get
    ``log(1 / #known)``. ``weight``: the head's weight in the fused
    score; ``extra``: how many of its best items join the beam's candidates. With ``transitions``
    (:class:`Transitions`, each read from one recent item) the logits add
    ``sum_t beta[t] · table_t[recent[:, gap_t - 1], j]`` (``beta [T]`` learned) when the history's
    ``recent [B, K]`` items (most recent first) are given; with ``seen > 0``, also ``alpha`` (learned)
    on each of the ``seen`` most recent items themselves."""

    def __init__(self, hidden: int, known: torch.Tensor, weight: float = 1.0, extra: int = 50,
                 transitions: Sequence[Transitions] = (), seen: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, len(known))
        self.register_buffer("known", torch.as_tensor(known, dtype=torch.bool))
        self.register_buffer("borrowed", torch.zeros_like(self.known))
        self.transitions = list(transitions)
        self.beta = nn.Parameter(torch.ones(len(self.transitions)))
        self.seen = int(seen)
        self.alpha = nn.Parameter(torch.zeros(1 if self.seen else 0))
        self.weight, self.extra = float(weight), int(extra)

    @property
    def orders(self) -> int:
        """How many recent history items the head reads (its tables' gaps and ``seen``; 0: none)."""
        return max([t.gap for t in self.transitions] + [self.seen])

    def seen_logits(self, recent: torch.Tensor) -> torch.Tensor:
        """``[B, N]``: ``alpha`` on each of the ``seen`` most recent items of ``recent [B, >= 1]``
        (once per item, however often it occurs), 0 elsewhere."""
        out = torch.zeros((len(recent), len(self.known)), device=self.alpha.device)
        if not self.seen:
            return out
        items = recent[:, :self.seen].to(out.device)
        ok = (items >= 0) & (items < out.shape[1])
        mask = torch.zeros_like(out, dtype=torch.bool)
        mask[torch.arange(len(items), device=out.device)[:, None].expand_as(items)[ok], items[ok]] = True
        return mask.to(out.dtype) * self.alpha

    def history_logits(self, recent: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N]`` every term read from the history's ``recent [B, >= orders]`` items: the tables
        (:meth:`transition_logits`, ``targets`` as there) and the seen items (:meth:`seen_logits`)."""
        out = self.transition_logits(recent, targets)
        return out + self.seen_logits(recent) if self.seen else out

    def transition_logits(self, recent: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N]`` ``sum_t beta[t] · table_t`` for ``recent [B, >= orders]``; with training
        ``targets [B]``, each example's own pair counts one less in the ``next`` tables (a new
        user's pair is not in them)."""
        out = torch.zeros((len(recent), len(self.known)), device=self.beta.device)
        for d, table in enumerate(self.transitions):
            rows = table.rows(recent[:, table.gap - 1].to(out.device))
            if targets is not None and table.kind == "next":
                at = (torch.arange(len(targets), device=out.device), targets.to(out.device))
                rows[at] = torch.log(torch.expm1(rows[at]).clamp(min=1.0))
            out = out + self.beta[d] * rows
        return out

    def logits(self, states: torch.Tensor, recent: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N]`` raw logits of ``states [B, H]`` (plus the transition term of ``recent [B, K]``)."""
        out = self.linear(states.to(self.linear.weight.dtype))
        if (self.transitions or self.seen) and recent is not None:
            out = out + self.history_logits(recent).to(out.dtype)
        return out

    def forward(self, states: torch.Tensor, recent: torch.Tensor | None = None) -> torch.Tensor:
        lp = torch.log_softmax(self.logits(states, recent).float(), dim=-1)
        scored = self.known | self.borrowed
        uniform = -float(np.log(max(int(self.known.sum()), 1)))
        return torch.where(scored, lp, torch.full_like(lp, uniform))

    @torch.no_grad()
    def borrow(self, embeddings: torch.Tensor | np.ndarray, k: int = 10) -> int:
        """Give every item that is not ``known`` the mean weight row and bias of its ``k`` nearest
        known items by cosine similarity of ``embeddings [N, D]`` (centred); returns how many."""
        emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        if emb.shape[0] != len(self.known):
            raise ValueError(f"embeddings have {emb.shape[0]} rows, the head {len(self.known)} items")
        known = self.known.cpu()
        cold, warm = torch.nonzero(~known).squeeze(1), torch.nonzero(known).squeeze(1)
        if not len(cold) or not len(warm) or k < 1:
            return 0
        emb = nn.functional.normalize(emb - emb[warm].mean(0), dim=1)
        dev = self.linear.weight.device
        for start in range(0, len(cold), 1024):  # [1024, #known] similarities at a time
            rows = cold[start:start + 1024]
            near = warm[(emb[rows] @ emb[warm].T).topk(min(k, len(warm)), dim=1).indices].to(dev)  # [R, k]
            self.linear.weight[rows.to(dev)] = self.linear.weight[near].mean(1)
            self.linear.bias[rows.to(dev)] = self.linear.bias[near].mean(1)
        self.borrowed[cold.to(self.borrowed.device)] = True
        return len(cold)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ItemHead:
        super()._apply(fn, *args, **kwargs)
        self.transitions = [t.to(self.known.device) for t in self.transitions]
        return self


def fit_item_head(states: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
                  valid: tuple[torch.Tensor, torch.Tensor], *, epochs: int = 12, patience: int = 3,
                  lr: float = 3e-3, batch_size: int = 512, dropout: float = 0.2, seed: int = 0,
                  transitions: Sequence[Transitions] = (), recent: tuple[torch.Tensor, torch.Tensor] | None = None,
                  seen: int = 0, log: Callable[[str], Any] | None = None,
                  snapshots: list[dict[str, torch.Tensor]] | None = None) -> tuple[ItemHead, list[dict[str, Any]]]:
    """Fit a head on ``states [T, H]`` -> ``targets [T]`` (full-softmax cross-entropy, AdamW,
    dropout on the states), keeping the epoch with the best NDCG@10 of the head alone on
    ``valid = (states [U, H], targets [U])``. With ``transitions`` (tables read from the last K
    items; ``next`` tables counted on the same training sequences) and ``recent = (training
    examples' recent items [T, K], validation users' [U, K])`` the head learns the weight of each
    table, and with ``seen`` that of the last ``seen`` items themselves (``K >= seen``). Returns the
    head and one record per epoch; ``snapshots``, when a list, receives every epoch's state dict
    (entry ``e`` = epoch ``e + 1``). Every random draw comes from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    tables = list(transitions) if recent is not None else []
    head = ItemHead(states.shape[1], known, transitions=tables, seen=seen if recent is not None else 0)
    uses_recent = bool(tables) or bool(head.seen)
    with torch.no_grad():  # start at the training popularity: the bias of a model that knows nothing else
        counts = torch.bincount(targets, minlength=len(known)).float()
        head.linear.bias.copy_(torch.log(counts + 1.0) - torch.log(counts.sum() + len(known)))
        head.linear.weight.normal_(0.0, 0.01, generator=gen)
    train_recent, valid_recent = recent if uses_recent else (None, None)
    # alpha gets its own, larger step: where items never repeat it has to travel several units (to -3
    # .. -7 on the datasets measured) in the few hundred steps a small catalog's fit takes.
    rest = [p for n, p in head.named_parameters() if n != "alpha"]
    opt = torch.optim.AdamW([{"params": rest}, {"params": [head.alpha], "lr": SEEN_LR}], lr=lr, weight_decay=0.0)
    best, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(epochs):
        order = torch.randperm(len(states), generator=gen)
        total = 0.0
        head.train()
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            x = states[b]
            if dropout > 0:  # the mask from `gen`: the fit does not depend on the caller's RNG state
                x = x * torch.empty_like(x).bernoulli_(1.0 - dropout, generator=gen) / (1.0 - dropout)
            logits = head.logits(x)
            if uses_recent:
                logits = logits + head.history_logits(train_recent[b], targets[b])
            loss = nn.functional.cross_entropy(logits, targets[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        head.eval()
        with torch.no_grad():
            recall, ndcg = head_metrics(head(valid[0], valid_recent), valid[1])
        beta = [round(float(x), 4) for x in head.beta.detach()]
        alpha = round(float(head.alpha.detach().sum()), 4)
        history.append({"epoch": epoch + 1, "loss": total / len(states), "recall@10": recall, "ndcg@10": ndcg,
                        **({"beta": beta} if tables else {}), **({"alpha": alpha} if head.seen else {})})
        if log is not None:
            log(f"item head epoch {epoch + 1}: loss {total / len(states):.3f}, validation recall@10 {recall:.4f} "
                f"ndcg@10 {ndcg:.4f}" + (f", transition weights {beta}" if tables else "")
                + (f", seen-item weight {alpha}" if head.seen else ""))
        state = {k: v.clone() for k, v in head.state_dict().items()}
        if snapshots is not None:
            snapshots.append(state)
        if ndcg > best:
            best, stale = ndcg, 0
            best_state = state
        else:
            stale += 1
            if stale >= patience:
                break
    head.load_state_dict(best_state)
    return head.eval(), history


def head_metrics(logp: torch.Tensor, targets: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """``(recall@k, ndcg@k)`` of full ranking by ``logp [U, N]`` against ``targets [U]``."""
    rank = (logp > logp.gather(1, targets[:, None])).sum(1).float()
    hit = rank < k
    return float(hit.float().mean()), float(torch.where(hit, 1.0 / torch.log2(rank + 2.0), 0.0).mean())


def save_item_head(head: ItemHead, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write the head to a safetensors file atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"weight": head.linear.weight.detach().contiguous().cpu(),
               "bias": head.linear.bias.detach().contiguous().cpu(), "known": head.known.to(torch.uint8).cpu()}
    if bool(head.borrowed.any()):
        tensors["borrowed"] = head.borrowed.to(torch.uint8).cpu()
    if head.seen:
        tensors["alpha"] = head.alpha.detach().cpu()
    if head.transitions:
        tensors["beta"] = head.beta.detach().cpu()
        for d, t in enumerate(head.transitions):
            tensors.update({f"transitions.{d}.indptr": t.indptr.cpu().clone(),  # tables may share tensors
                            f"transitions.{d}.indices": t.indices.cpu().clone(),
                            f"transitions.{d}.values": t.values.cpu().clone()})
    info = {"weight": head.weight, "extra": head.extra, "seen": head.seen,
            "tables": [{"gap": t.gap, "kind": t.kind} for t in head.transitions], **(meta or {})}
    with atomic_file(path) as tmp:
        save_file(tensors, tmp, metadata={"genrec_item_head": json.dumps(info)})
    return path


def load_item_head(path: str | os.PathLike, hidden: int, num_items: int) -> ItemHead:
    """Load a head written by :func:`save_item_head`, checked against the model's width and the
    catalog size it will score."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        info = json.loads((f.metadata() or {}).get("genrec_item_head", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    weight = tensors.get("weight")
    if weight is None or tuple(weight.shape) != (num_items, hidden):
        got = None if weight is None else tuple(weight.shape)
        raise DataError(f"item head {path} has shape {got} but the run's model has width {hidden} and its catalog "
                        f"{num_items} items; refit it with `genrec head --run RUN`, or delete the file")
    tables, kinds = [], info.get("tables") or []
    while f"transitions.{len(tables)}.indptr" in tensors:
        d = len(tables)
        kind = kinds[d] if d < len(kinds) else {"gap": d + 1, "kind": "next"}  # files before similar tables
        tables.append(Transitions(tensors[f"transitions.{d}.indptr"], tensors[f"transitions.{d}.indices"],
                                  tensors[f"transitions.{d}.values"], gap=int(kind["gap"]), kind=str(kind["kind"])))
        if len(tables[-1].indptr) != num_items + 1:
            raise DataError(f"item head {path} holds transitions of {len(tables[-1].indptr) - 1} items but the run's "
                            f"catalog has {num_items}; refit it with `genrec head --run RUN`, or delete the file")
    seen = int(info.get("seen", 0)) if "alpha" in tensors else 0  # files before the seen-item term: none
    head = ItemHead(hidden, tensors["known"].bool(), float(info.get("weight", 1.0)), int(info.get("extra", 50)),
                    transitions=tables, seen=seen)
    head.linear.weight.data.copy_(weight)
    head.linear.bias.data.copy_(tensors["bias"])
    if "borrowed" in tensors:  # files before borrowed rows: none
        head.borrowed.copy_(tensors["borrowed"].bool())
    if tables:
        head.beta.data.copy_(tensors["beta"])
    if seen:
        head.alpha.data.copy_(tensors["alpha"])
    return head.eval()


def run_item_head(path: str | os.PathLike, hidden: int, num_items: int, device: Any = "cpu") -> ItemHead | None:
    """A run's item head on ``device`` (:func:`load_item_head`), or ``None`` when ``path`` does not exist
    or its weight is 0 (validation chose the codes alone)."""
    if not Path(path).is_file():
        return None
    head = load_item_head(path, hidden, num_items).to(device)
    if head.weight == 0:
        log.info("item head weight 0 (validation chose the codes alone): ranking by the codes")
        return None
    log.info("item head fused with the code scores (weight %s, %d extra candidates%s%s)", head.weight, head.extra,
             f", {len(head.transitions)} item-to-item tables" if head.transitions else "",
             f", seen-item weight {float(head.alpha.detach().sum()):.2f} on the last {head.seen} items" if head.seen else "")
    return head
