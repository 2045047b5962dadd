"""Auxiliary losses combined with the LM loss through an explicit ``{name: weight}`` mapping."""

from __future__ import annotations

import torch

from genrec.training.losses.contrastive import GlobalContrastiveLoss
from genrec.training.losses.reconstruction import ReconstructionLoss

__all__ = ["GlobalContrastiveLoss", "ReconstructionLoss", "weighted_total"]


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``sum(weights[name] * terms[name])`` over the terms present; ``lm`` defaults to weight 1.

    A weight named for a term that was not computed is an error (it would silently do nothing).
    """
    unknown = set(weights) - set(terms)
    if unknown:
        raise ValueError(f"loss weights name terms that were not computed: {sorted(unknown)} "
                         f"(computed: {sorted(terms)})")
    total = None
    for name, value in terms.items():
        w = weights.get(name, 1.0 if name == "lm" else 0.0)
        if w:
            total = w * value if total is None else total + w * value
    if total is None:
        raise ValueError("every loss term has weight 0")
    return total
