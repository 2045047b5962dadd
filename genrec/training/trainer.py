"""One ``transformers.Trainer`` subclass: LM loss + weighted auxiliary losses, each logged.

The auxiliary heads (:mod:`genrec.training.aux`) are found in the model with
:func:`~genrec.training.aux.find_aux` and fed the summary-token state of each example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from genrec.training.aux import find_aux
from genrec.training.losses import weighted_total


def supports_response_logits(model: nn.Module) -> bool:
    """Whether the LM head is a plain linear map of the last hidden state (no logit scaling or
    soft-capping), so :func:`response_lm_loss` equals the model's own loss."""
    cfg = getattr(model, "config", None)
    return not any(getattr(cfg, key, None) not in (None, 1.0) for key in
                   ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"))


def response_lm_loss(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the labelled (response) positions only.

    ``hidden [B, L, H]`` is the final (normed) hidden state, ``labels [B, L]`` with ``-100`` on
    ignored positions. Only the ``T`` positions that predict a label go through the LM head
    (``[T, V]`` logits instead of ``[B, L, V]``): responses are a few tokens of a long prompt, and
    the head over a 50k vocabulary dominates a small model's step. Same value as the model's
    mean token loss.
    """
    target = labels[:, 1:]
    b, p = (target != -100).nonzero(as_tuple=True)
    if len(b) == 0:
        return hidden.sum() * 0.0
    logits = model.get_output_embeddings()(hidden[b, p])  # [T, V]
    return nn.functional.cross_entropy(logits.float(), target[b, p])


class GenRecTrainer(Trainer):
    """Trainer whose loss is ``lm + Σ weight · aux_term``.

    Extra batch keys (from :class:`genrec.tasks.collate.Collator`): ``summary_pos [B]`` and
    ``targets [B]`` (``-1`` for examples without a target item; they get the LM loss only).
    """

    def __init__(self, *args: Any, loss_weights: dict[str, float] | None = None,
                 response_logits_only: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_weights = dict(loss_weights or {})
        self.response_logits_only = response_logits_only
        # compute_loss averages each term itself; let the Trainer scale for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = {}
        self._term_counts: dict[str, int] = {}

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        summary_pos = inputs.pop("summary_pos")
        targets = inputs.pop("targets")
        aux = find_aux(model) if any(k != "lm" and w for k, w in self.loss_weights.items()) else None
        core = self.accelerator.unwrap_model(model)  # DDP / DeepSpeed wrappers hide config and LM head
        if self.response_logits_only and supports_response_logits(core):
            labels = inputs.pop("labels")
            outputs = model(**inputs, output_hidden_states=True, logits_to_keep=1)
            lm = response_lm_loss(core, outputs.hidden_states[-1], labels)
        else:
            outputs = model(**inputs, output_hidden_states=aux is not None)
            lm = outputs.loss
        terms: dict[str, torch.Tensor] = {"lm": lm}
        rows = (targets >= 0).nonzero(as_tuple=True)[0]
        if aux is not None and len(rows):
            h = outputs.hidden_states[-1][rows, summary_pos[rows]]  # [B', H]
            terms.update(aux(h, targets[rows]))
        weights = {k: w for k, w in self.loss_weights.items() if k in terms}
        loss = weighted_total(terms, weights)
        if aux is not None and not len(rows) and core is not model and model.training:
            # DDP (find_unused_parameters=False) needs a gradient for every trainable weight each
            # step: a batch without target items still runs the heads, at weight 0.
            h = outputs.hidden_states[-1][:1, -1]
            loss = loss + 0.0 * sum(aux(h, torch.zeros(1, dtype=torch.long, device=h.device)).values())
        if model.training:
            for name, value in terms.items():
                self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value.detach())
                self._term_counts[name] = self._term_counts.get(name, 0) + 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_counts:
            for name, total in self._term_sums.items():
                logs[f"loss_{name}"] = round(total / self._term_counts[name], 6)
            self._term_sums.clear()
            self._term_counts.clear()
        super().log(logs, start_time)


class JsonlLogger(TrainerCallback):
    """Append every log record (step, epoch, per-term losses, eval loss) to a JSONL file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
