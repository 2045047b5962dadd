"""Reconstruction loss: recover the target item from the summary-token state alone.

Two terms, each optional:

- ``embedding``: an MLP decoder maps the summary state ``[B, H]`` to the target item's semantic
  embedding space ``[B, D]``; loss = ``1 - cos(decoded, target_embedding)`` averaged over the batch.
- ``codes``: one linear classifier per index position predicts the target's code at that
  position (``<s0_*>``, ``<s1_*>``, ``<b0_*>``, ...) from the same state; loss = mean over
  positions of the cross-entropy.

Both force the summary state to carry the whole identity of the next item, which the
generated index tokens then only need to spell out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReconstructionLoss(nn.Module):
    """``forward(h [B, H], targets [B])`` → ``{"reconstruction_embedding": ..., "reconstruction_codes": ...}``.

    Args:
        hidden: LLM hidden size ``H``.
        semantic: ``[N, D]`` semantic item embeddings, or ``None`` to skip the embedding term.
        codes: ``[N, P]`` integer code per item and index position, or ``None`` to skip the code term.
        code_sizes: ``[P]`` number of distinct codes per position (classifier widths).
    """

    def __init__(self, hidden: int, semantic: torch.Tensor | None = None, codes: torch.Tensor | None = None,
                 code_sizes: list[int] | None = None) -> None:
        super().__init__()
        if semantic is None and codes is None:
            raise ValueError("losses.reconstruction needs the semantic embeddings, the item codes, or both")
        self.decoder = None
        if semantic is not None:
            d = semantic.shape[1]
            self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, d))
            self.register_buffer("semantic", F.normalize(semantic.detach().float(), dim=-1), persistent=False)
        self.code_heads = None
        if codes is not None:
            sizes = code_sizes or [int(codes[:, p].max()) + 1 for p in range(codes.shape[1])]
            self.code_heads = nn.ModuleList(nn.Linear(hidden, s) for s in sizes)
            self.register_buffer("codes", codes.detach().long(), persistent=False)

    def forward(self, h: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        h = h.float()
        out: dict[str, torch.Tensor] = {}
        if self.decoder is not None:
            decoded = F.normalize(self.decoder(h), dim=-1)
            out["reconstruction_embedding"] = (1.0 - (decoded * self.semantic[targets]).sum(-1)).mean()
        if self.code_heads is not None:
            codes = self.codes[targets]  # [B, P]
            terms = [F.cross_entropy(head(h), codes[:, p]) for p, head in enumerate(self.code_heads)]
            out["reconstruction_codes"] = torch.stack(terms).mean()
        return out
