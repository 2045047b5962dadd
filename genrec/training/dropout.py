"""Dropout for fully trained LLaMA-family models (``model.dropout``).

LLaMA has no dropout besides its (default 0) attention dropout. Small models trained from
scratch on sparse interaction data overfit without it, as SASRec does without its 0.2-0.5.
``add_dropout`` puts dropout where SASRec has it, active only in training mode, so evaluation
and decoding are unchanged (the saved ``config.json`` records ``attention_dropout``; the hooks are
not saved):

- on the token embeddings (``[B, T, H]``);
- on the attention probabilities (the attention modules' own ``attention_dropout``);
- on each sub-layer's output before it joins the residual stream (``o_proj`` of attention,
  ``down_proj`` of the MLP).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genrec.errors import ConfigError

SUBLAYER_OUTPUTS = ("o_proj", "down_proj")


def add_dropout(model: Any, p: float) -> int:
    """Register dropout ``p`` on ``model`` (see the module docstring); returns the number of
    places it acts on (embeddings + attention modules + sub-layer outputs). ``p == 0`` is a no-op."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return 0

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        return F.dropout(output, p, module.training) if isinstance(output, torch.Tensor) else output

    places = 0
    emb = model.get_input_embeddings()
    emb.register_forward_hook(hook)
    places += 1
    for name, module in model.named_modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
            places += 1
        elif name.rsplit(".", 1)[-1] in SUBLAYER_OUTPUTS and isinstance(module, torch.nn.Linear):
            module.register_forward_hook(hook)
            places += 1
    if places == 1:
        raise ConfigError(f"model.dropout: {type(model).__name__} has no attention modules with an "
                          f"`attention_dropout` nor {list(SUBLAYER_OUTPUTS)} layers; use a LLaMA-family "
                          "model or set model.dropout: 0")
    if hasattr(model.config, "attention_dropout"):
        model.config.attention_dropout = p
    return places
