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

from genrec.encoders.item_adapter import embed_with_items, find_item_adapter
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


def untied_missing_keys(model: nn.Module, missing: list[str]) -> list[str]:
    """The keys of ``missing`` (from ``load_state_dict(strict=False)``) that are not the output
    embedding's weight shared with the input embeddings: safetensors stores a tied tensor once,
    so a checkpoint of a tied model always "misses" its LM head, while the loaded input rows fill
    both."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or inp is None or out.weight is not inp.weight:
        return list(missing)
    shared = {name for name, p in model.named_parameters(remove_duplicate=False) if p is out.weight}
    return [key for key in missing if key not in shared]


class GenRecTrainer(Trainer):
    """Trainer whose loss is ``lm + Σ weight · aux_term``.

    Extra batch keys (from :class:`genrec.tasks.collate.Collator`): ``aux_rows [T]``, ``aux_pos [T]``
    and ``aux_targets [T]``, the summary states the auxiliary losses read and their target items
    (examples without a target item get the LM loss only); ``item_rows [I]``, ``item_pos [I]`` and
    ``item_ids [I]``, where the history-item adapter (:mod:`genrec.encoders.item_adapter`) adds
    its vectors. With a ``ranker`` every evaluation also ranks validation users
    (``eval_ndcg@10`` ...), for checkpoint selection and early stopping.
    """

    def __init__(self, *args: Any, loss_weights: dict[str, float] | None = None,
                 response_logits_only: bool = True, ranker: Any = None, group_by_length: bool = False,
                 distill: nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_weights = dict(loss_weights or {})
        self.distill = distill  # CodeDistillation (losses.weights.distill), outside the model: never saved
        self.response_logits_only = response_logits_only
        self.ranker = ranker  # model -> {metric: value} on validation users
        self.group_by_length = group_by_length  # batches of similar lengths (datasets with .lengths())
        # compute_loss averages each term itself; let the Trainer scale for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = {}
        self._term_counts: dict[str, int] = {}

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        aux_rows, aux_pos, aux_targets = inputs.pop("aux_rows"), inputs.pop("aux_pos"), inputs.pop("aux_targets")
        aux_hist = inputs.pop("aux_hist", None)
        item_rows, item_pos, item_ids = inputs.pop("item_rows"), inputs.pop("item_pos"), inputs.pop("item_ids")
        aux = find_aux(model) if any(k not in ("lm", "distill") and w for k, w in self.loss_weights.items()) else None
        distill = self.distill if self.loss_weights.get("distill") and aux_hist is not None else None
        core = self.accelerator.unwrap_model(model)  # DDP / DeepSpeed wrappers hide config and LM head
        adapter = find_item_adapter(model)
        if adapter is not None:
            ids = inputs.pop("input_ids")
            inputs["inputs_embeds"] = embed_with_items(core, ids, item_rows, item_pos, item_ids, adapter)
        if self.response_logits_only and supports_response_logits(core):
            labels = inputs.pop("labels")
            outputs = model(**inputs, output_hidden_states=True, logits_to_keep=1)
            lm = response_lm_loss(core, outputs.hidden_states[-1], labels)
        else:
            outputs = model(**inputs, output_hidden_states=aux is not None or distill is not None)
            lm = outputs.loss
        terms: dict[str, torch.Tensor] = {"lm": lm}
        if aux is not None and len(aux_rows):
            h = outputs.hidden_states[-1][aux_rows, aux_pos]  # [T, H]
            terms.update(aux(h, aux_targets))
        if distill is not None:
            terms["distill"] = distill(core.get_output_embeddings(), outputs.hidden_states[-1], aux_rows, aux_pos,
                                       aux_hist, aux_targets)
        weights = {k: w for k, w in self.loss_weights.items() if k in terms}
        loss = weighted_total(terms, weights)
        if aux is not None and not len(aux_rows) and core is not model and model.training:
            # DDP (find_unused_parameters=False) needs a gradient for every trainable weight each
            # step: a batch without target items still runs the heads, at weight 0.
            h = outputs.hidden_states[-1][:1, -1]
            loss = loss + 0.0 * sum(aux(h, torch.zeros(1, dtype=torch.long, device=h.device)).values())
        if model.training:
            for name, value in terms.items():
                self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value.detach())
                self._term_counts[name] = self._term_counts.get(name, 0) + 1
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """HF's length-grouped sampler over the dataset's own length estimates: batches of similar
        lengths waste little compute on padding, and megabatches keep the order random."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_length and hasattr(dataset, "lengths"):
            from transformers.trainer_pt_utils import LengthGroupedSampler

            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=dataset.lengths())
        return super()._get_train_sampler(train_dataset)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's evaluation, plus the ranker's metrics (``{prefix}_ndcg@10`` ...)."""
        output = super().evaluation_loop(*args, **kwargs)
        if self.ranker is not None:
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            for name, value in self.ranker(self.accelerator.unwrap_model(self.model)).items():
                output.metrics[f"{prefix}_{name}"] = round(value, 6)
        return output

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """The Trainer's warnings after reloading a checkpoint, without the false "missing
        lm_head.weight" of models whose LM head is tied to the input embeddings."""
        if hasattr(load_result, "_replace"):  # torch's _IncompatibleKeys named tuple
            core = self.accelerator.unwrap_model(self.model)
            load_result = load_result._replace(missing_keys=untied_missing_keys(core, list(load_result.missing_keys)))
        super()._issue_warnings_after_load(load_result)

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
