"""The item head: one output row per catalog item on a generative model's final hidden state.

Index tokens are shared: an item's first code names a cluster of ~50 items, so a model that
emits codes generalises well but cannot hold "after this item comes exactly that one" — the
item-to-item transitions that repeat in the training sequences and that an ID-based SASRec
memorises. The head is a linear map ``logits [B, N] = states [B, H] · W^T + b`` fitted with a
full softmax over the catalog on the frozen model's states (each training prefix -> its next
item), and fused with the code scores at decoding (:func:`genrec.generation.fused_rerank`).
A linear map of the state learns such transitions only approximately, so the head also adds the
transition counts of the training sequences themselves: ``beta · log(1 + count(last -> j))`` for
the history's last item (:class:`Transitions`, ``beta`` learned with the rows).
Items without a training interaction (cold, or held out) have nothing to memorise: the head
gives them the uniform log-probability instead of a learned one, so they are ranked by their
codes alone.
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


class Transitions:
    """Item-to-item transition counts of training sequences as a sparse ``[N, N]`` table
    (CSR: ``indptr [N + 1]``, ``indices [E]`` next items, ``values [E]`` ``log(1 + count)``)."""

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> None:
        self.indptr, self.indices, self.values = indptr.long(), indices.long(), values.float()

    @classmethod
    def count(cls, sequences: Sequence[Sequence[int]], num_items: int) -> Transitions:
        """The table of every consecutive pair ``(a, b)`` of ``sequences`` (item indices)."""
        pairs = [np.stack([s[:-1], s[1:]], 1) for s in (np.asarray(q, dtype=np.int64) for q in sequences) if len(s) > 1]
        flat = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
        keys, counts = np.unique(flat[:, 0] * num_items + flat[:, 1], return_counts=True)
        rows, cols = keys // num_items, keys % num_items
        indptr = np.zeros(num_items + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(torch.from_numpy(np.cumsum(indptr)), torch.from_numpy(cols), torch.from_numpy(np.log1p(counts)))

    def __len__(self) -> int:
        return len(self.indices)

    def rows(self, last: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` dense ``log(1 + count(last[b] -> j))`` for ``last [B]`` item indices (``-1``: zeros)."""
        n = len(self.indptr) - 1
        out = torch.zeros((len(last), n), device=last.device)
        ok = (last >= 0) & (last < n)
        lo = torch.where(ok, self.indptr.to(last.device)[last.clamp(0, n - 1)], 0)
        width = torch.where(ok, self.indptr.to(last.device)[(last + 1).clamp(0, n)] - lo, 0)
        b = torch.repeat_interleave(torch.arange(len(last), device=last.device), width)
        at = torch.repeat_interleave(lo - width.cumsum(0) + width, width) + torch.arange(int(width.sum()),
                                                                                         device=last.device)
        out[b, self.indices.to(last.device)[at]] = self.values.to(last.device)[at]
        return out

    def to(self, device: Any) -> Transitions:
        return Transitions(self.indptr.to(device), self.indices.to(device), self.values.to(device))


class ItemHead(nn.Module):
    """``forward(states [B, H], last [B] | None) -> [B, N]`` item log-probs; items where ``known [N]``
    is false get ``log(1 / #known)``. ``weight``: the head's weight in the fused score; ``extra``:
    how many of its best items join the beam's candidates. With ``transitions`` the logits add
    ``beta · log(1 + count(last item -> j))`` (``beta`` learned), when ``last`` is given."""

    def __init__(self, hidden: int, known: torch.Tensor, weight: float = 1.0, extra: int = 50,
                 transitions: Transitions | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, len(known))
        self.register_buffer("known", torch.as_tensor(known, dtype=torch.bool))
        self.beta = nn.Parameter(torch.tensor(1.0 if transitions is not None else 0.0))
        self.transitions = transitions
        self.weight, self.extra = float(weight), int(extra)

    def logits(self, states: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N]`` raw logits of ``states [B, H]`` (plus the transition term of ``last [B]``)."""
        out = self.linear(states.to(self.linear.weight.dtype))
        if self.transitions is not None and last is not None:
            out = out + self.beta * self.transitions.rows(last.to(out.device)).to(out.dtype)
        return out

    def forward(self, states: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        lp = torch.log_softmax(self.logits(states, last).float(), dim=-1)
        uniform = -float(np.log(max(int(self.known.sum()), 1)))
        return torch.where(self.known, lp, torch.full_like(lp, uniform))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ItemHead:
        super()._apply(fn, *args, **kwargs)
        if self.transitions is not None:
            self.transitions = self.transitions.to(self.known.device)
        return self


def fit_item_head(states: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
                  valid: tuple[torch.Tensor, torch.Tensor], *, epochs: int = 12, patience: int = 3,
                  lr: float = 3e-3, batch_size: int = 512, dropout: float = 0.2, seed: int = 0,
                  transitions: Transitions | None = None, lasts: tuple[torch.Tensor, torch.Tensor] | None = None,
                  log: Callable[[str], Any] | None = None) -> tuple[ItemHead, list[dict[str, float]]]:
    """Fit a head on ``states [T, H]`` -> ``targets [T]`` (full-softmax cross-entropy, AdamW,
    dropout on the states), keeping the epoch with the best NDCG@10 of the head alone on
    ``valid = (states [U, H], targets [U])``. With ``transitions`` (counted on the same training
    sequences) and ``lasts = (last items [T], validation last items [U])`` the head learns the
    weight of the transition term; each training example's own transition is left out of its
    count, as a new user's is. Returns the head and one record per epoch."""
    gen = torch.Generator().manual_seed(seed)
    use_t = transitions is not None and lasts is not None
    head = ItemHead(states.shape[1], known, transitions=transitions if use_t else None)
    with torch.no_grad():  # start at the training popularity: the bias of a model that knows nothing else
        counts = torch.bincount(targets, minlength=len(known)).float()
        head.linear.bias.copy_(torch.log(counts + 1.0) - torch.log(counts.sum() + len(known)))
        head.linear.weight.normal_(0.0, 0.01, generator=gen)
    train_last, valid_last = lasts if use_t else (None, None)
    params = [head.linear.weight, head.linear.bias] + ([head.beta] if use_t else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    best, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(epochs):
        order = torch.randperm(len(states), generator=gen)
        total = 0.0
        head.train()
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            x = nn.functional.dropout(states[b], dropout, training=True)
            logits = head.logits(x)
            if use_t:
                table = head.transitions.rows(train_last[b])  # [b, N]
                at = (torch.arange(len(b)), targets[b])
                table[at] = torch.log(torch.expm1(table[at]).clamp(min=1.0))  # count - 1 at the own target
                logits = logits + head.beta * table
            loss = nn.functional.cross_entropy(logits, targets[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        head.eval()
        with torch.no_grad():
            recall, ndcg = head_metrics(head(valid[0], valid_last), valid[1])
        history.append({"epoch": epoch + 1, "loss": total / len(states), "recall@10": recall, "ndcg@10": ndcg,
                        **({"beta": float(head.beta.detach())} if use_t else {})})
        if log is not None:
            log(f"item head epoch {epoch + 1}: loss {total / len(states):.3f}, validation recall@10 {recall:.4f} "
                f"ndcg@10 {ndcg:.4f}" + (f", transition weight {float(head.beta.detach()):.3f}" if use_t else ""))
        if ndcg > best:
            best, stale = ndcg, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
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
    if head.transitions is not None:
        t = head.transitions
        tensors.update({"beta": head.beta.detach().reshape(1).cpu(), "transitions.indptr": t.indptr.cpu(),
                        "transitions.indices": t.indices.cpu(), "transitions.values": t.values.cpu()})
    info = {"weight": head.weight, "extra": head.extra, **(meta or {})}
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
    transitions = None
    if "transitions.indptr" in tensors:
        transitions = Transitions(tensors["transitions.indptr"], tensors["transitions.indices"],
                                  tensors["transitions.values"])
        if len(transitions.indptr) != num_items + 1:
            raise DataError(f"item head {path} holds transitions of {len(transitions.indptr) - 1} items but the run's "
                            f"catalog has {num_items}; refit it with `genrec head --run RUN`, or delete the file")
    head = ItemHead(hidden, tensors["known"].bool(), float(info.get("weight", 1.0)), int(info.get("extra", 50)),
                    transitions=transitions)
    head.linear.weight.data.copy_(weight)
    head.linear.bias.data.copy_(tensors["bias"])
    if transitions is not None:
        head.beta.data.copy_(tensors["beta"][0])
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
    log.info("item head fused with the code scores (weight %s, %d extra candidates%s)", head.weight, head.extra,
             "" if head.transitions is None else f", {len(head.transitions)} transitions")
    return head
