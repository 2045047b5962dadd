"""The auxiliary heads: built from the recipe, attached to the model, found again by the Trainer.

The heads live in an :class:`AuxLosses` module attached to the base model as ``genrec_aux``
*before* PEFT wraps it and listed in ``modules_to_save``. That one placement makes the
Trainer's optimizer, device placement, DDP / DeepSpeed wrapping and checkpointing handle the
heads like any other trainable weight, and the saved adapter carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from genrec.errors import ConfigError
from genrec.training.losses import GlobalContrastiveLoss, ReconstructionLoss

AUX_MODULE = "genrec_aux"


class AuxLosses(nn.Module):
    """``forward(h [B, H], targets [B]) -> {term name: scalar}`` over the configured aux losses."""

    def __init__(self, contrastive: GlobalContrastiveLoss | None = None,
                 reconstruction: ReconstructionLoss | None = None) -> None:
        super().__init__()
        self.contrastive = contrastive
        self.reconstruction = reconstruction

    def forward(self, h: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for module in (self.contrastive, self.reconstruction):
            if module is not None:
                out.update(module(h, targets))
        return out


def find_aux(model: nn.Module) -> nn.Module | None:
    """The (possibly PEFT-wrapped) ``genrec_aux`` module inside ``model``, or ``None``."""
    for name, module in model.named_modules():
        if name.endswith(AUX_MODULE) and not name.endswith(f"{AUX_MODULE}.original_module"):
            return module
    return None


def attach_aux(model: Any, factory: Callable[[int], nn.Module]) -> None:
    """Build the heads for ``model``'s hidden size and attach them as :data:`AUX_MODULE`."""
    aux = factory(model.config.hidden_size).to(model.get_input_embeddings().weight.device)
    model.add_module(AUX_MODULE, aux)


def aux_factory(cfg: Any, tables: dict[str, torch.Tensor], codes: list[list[str]]):
    """A builder of the auxiliary heads for the weighted terms of ``cfg.losses`` (``None`` if none)."""
    active = {k for k, w in cfg.losses.weights.items() if w}  # names checked by LossConfig
    if not active:
        return None
    needed = {"contrastive_semantic": "semantic", "contrastive_behavior": "behavior",
              "reconstruction_embedding": "semantic"}
    missing = sorted({f"{k} (needs {needed[k]})" for k in active if k in needed and needed[k] not in tables})
    if missing:
        raise ConfigError(f"losses.weights: {', '.join(missing)} but the item tokenizer has only the stream(s) "
                          f"{sorted(tables)}; set those weights to 0 or use a tokenizer with both streams")
    contrastive_streams = {s: tables[s] for s in ("semantic", "behavior") if f"contrastive_{s}" in active}
    code_matrix = None
    sizes = None
    if "reconstruction_codes" in active:
        width = max(len(c) for c in codes)
        per_pos = [sorted({c[p] for c in codes if len(c) > p}) for p in range(width)]
        lookup = [{t: j for j, t in enumerate(toks)} for toks in per_pos]
        code_matrix = torch.tensor([[lookup[p].get(c[p], 0) if p < len(c) else 0 for p in range(width)]
                                    for c in codes])
        sizes = [max(len(x), 1) for x in per_pos]

    def build(hidden: int) -> torch.nn.Module:
        contrastive = (GlobalContrastiveLoss(hidden, contrastive_streams, cfg.losses.num_negatives,
                                             cfg.losses.temperature) if contrastive_streams else None)
        recon = None
        if "reconstruction_embedding" in active or "reconstruction_codes" in active:
            recon = ReconstructionLoss(hidden, tables["semantic"] if "reconstruction_embedding" in active else None,
                                       code_matrix, sizes)
        return AuxLosses(contrastive, recon)

    return build
