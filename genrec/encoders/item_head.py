"""The item head: one output row per catalog item on a generative model's final hidden state.

Index tokens are shared: an item's first code names a cluster of ~50 items, so a model that
emits codes generalises well but cannot hold "after this item comes exactly that one" — the
item-to-item transitions that repeat in the training sequences and that an ID-based SASRec
memorises. The head is a linear map ``logits [B, N] = states [B, H] · W^T + b`` fitted with a
full softmax over the catalog on the frozen model's states (each training prefix -> its next
item), and fused with the code scores at decoding (:func:`genrec.generation.fused_rerank`).
Items without a training interaction (cold, or held out) have nothing to memorise: the head
gives them the uniform log-probability instead of a learned one, so they are ranked by their
codes alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genrec.errors import DataError
from genrec.io import atomic_file

log = logging.getLogger(__name__)


class ItemHead(nn.Module):
    """``forward(states [B, H]) -> [B, N]`` item log-probs; items where ``known [N]`` is false get
    ``log(1 / #known)``. ``weight``: the head's weight in the fused score; ``extra``: how many of
    its best items join the beam's candidates."""

    def __init__(self, hidden: int, known: torch.Tensor, weight: float = 1.0, extra: int = 50) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, len(known))
        self.register_buffer("known", torch.as_tensor(known, dtype=torch.bool))
        self.weight, self.extra = float(weight), int(extra)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` raw logits of ``states [B, H]``."""
        return self.linear(states.to(self.linear.weight.dtype))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(self.logits(states).float(), dim=-1)
        uniform = -float(np.log(max(int(self.known.sum()), 1)))
        return torch.where(self.known, lp, torch.full_like(lp, uniform))


def fit_item_head(states: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
                  valid: tuple[torch.Tensor, torch.Tensor], *, epochs: int = 12, patience: int = 3,
                  lr: float = 3e-3, batch_size: int = 512, dropout: float = 0.2, seed: int = 0,
                  log: Callable[[str], Any] | None = None) -> tuple[ItemHead, list[dict[str, float]]]:
    """Fit a head on ``states [T, H]`` -> ``targets [T]`` (full-softmax cross-entropy, AdamW,
    dropout on the states), keeping the epoch with the best NDCG@10 of the head alone on
    ``valid = (states [U, H], targets [U])``. Returns the head and one record per epoch."""
    gen = torch.Generator().manual_seed(seed)
    head = ItemHead(states.shape[1], known)
    with torch.no_grad():  # start at the training popularity: the bias of a model that knows nothing else
        counts = torch.bincount(targets, minlength=len(known)).float()
        head.linear.bias.copy_(torch.log(counts + 1.0) - torch.log(counts.sum() + len(known)))
        head.linear.weight.normal_(0.0, 0.01, generator=gen)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    best, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(epochs):
        order = torch.randperm(len(states), generator=gen)
        total = 0.0
        head.train()
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            x = nn.functional.dropout(states[b], dropout, training=True)
            loss = nn.functional.cross_entropy(head.logits(x), targets[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        head.eval()
        with torch.no_grad():
            recall, ndcg = head_metrics(head(valid[0]), valid[1])
        history.append({"epoch": epoch + 1, "loss": total / len(states), "recall@10": recall, "ndcg@10": ndcg})
        if log is not None:
            log(f"item head epoch {epoch + 1}: loss {total / len(states):.3f}, validation recall@10 {recall:.4f} "
                f"ndcg@10 {ndcg:.4f}")
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
    head = ItemHead(hidden, tensors["known"].bool(), float(info.get("weight", 1.0)), int(info.get("extra", 50)))
    head.linear.weight.data.copy_(weight)
    head.linear.bias.data.copy_(tensors["bias"])
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
    log.info("item head fused with the code scores (weight %s, %d extra candidates)", head.weight, head.extra)
    return head
