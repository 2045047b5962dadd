"""Global contrastive loss: align the summary-token state with the target item's embeddings.

EAGER-LLM's auxiliary objective: the LLM's hidden state at the summary position is
L2-normalised, projected by one linear head per stream (semantic, behavior), and trained with
InfoNCE to pick the target item's stream embedding among sampled catalog negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContrastiveHead(nn.Module):
    """Projection ``[B, H] → [B, D]`` followed by L2 normalisation."""

    def __init__(self, hidden: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(F.normalize(h.float(), dim=-1)), dim=-1)


def sample_negatives(batch: int, num_items: int, count: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Item indices ``[count]`` shared by the batch, without replacement.

    With ``count >= num_items`` the whole catalog is returned (exact softmax over items).
    Sharing negatives across the batch keeps the cost at one ``[B, count]`` matmul.
    """
    if count >= num_items:
        return torch.arange(num_items, device=device)
    return torch.randperm(num_items, generator=generator, device="cpu")[:count].to(device)


def info_nce(query: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
             temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE of ``query`` against its target row of ``table`` versus sampled negatives.

    Args:
        query: ``[B, D]`` L2-normalised projections.
        table: ``[N, D]`` item embeddings of one stream (normalised here).
        targets: ``[B]`` target item indices.
        negatives: ``[M]`` negative item indices shared by the batch; a negative equal to a
            row's target is masked out for that row.
    Returns:
        Scalar mean loss.
    """
    table = F.normalize(table.float(), dim=-1)
    pos = (query * table[targets]).sum(-1, keepdim=True)  # [B, 1]
    neg = query @ table[negatives].T  # [B, M]
    neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


class GlobalContrastiveLoss(nn.Module):
    """Semantic + behavior InfoNCE from the summary state.

    ``forward(h [B, H], targets [B])`` returns ``{"contrastive_semantic": loss, "contrastive_behavior": loss}``
    for the streams whose embedding table was given.
    """

    def __init__(self, hidden: int, tables: dict[str, torch.Tensor], num_negatives: int = 2048,
                 temperature: float = 0.07) -> None:
        super().__init__()
        if not tables:
            raise ValueError("losses.contrastive needs at least one stream embedding table")
        sizes = {name: t.shape[0] for name, t in tables.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"stream embedding tables cover different item counts: {sizes}")
        self.num_items = next(iter(sizes.values()))
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.heads = nn.ModuleDict({name: ContrastiveHead(hidden, t.shape[1]) for name, t in tables.items()})
        for name, t in tables.items():
            self.register_buffer(f"table_{name}", t.detach().float().clone(), persistent=False)

    def forward(self, h: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        # The global RNG (seeded by the trainer, saved in checkpoints) keeps resumed runs identical.
        negatives = sample_negatives(len(targets), self.num_items, self.num_negatives, None, h.device)
        out = {}
        for name, head in self.heads.items():
            table = getattr(self, f"table_{name}")
            out[f"contrastive_{name}"] = info_nce(head(h), table, targets, negatives, self.temperature)
        return out
