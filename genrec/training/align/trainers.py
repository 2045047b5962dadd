"""trl's DPO and GRPO trainers, set up for genrec's tokenized prompts and catalog-constrained items.

- **DPO** (:class:`TokenizedDPOTrainer`): trl's ``DPOTrainer`` tokenizes text prompts and
  completions itself; genrec's prompts are token ids rendered by the one serving renderer, and
  decoding then re-tokenizing them would not give the same ids (compact vocabularies, truncated
  prompts, item tokens). The subclass takes rows that are already ``prompt_ids`` /
  ``chosen_ids`` / ``rejected_ids`` and leaves the rest (collator, loss, reference handling,
  metrics) to trl. Reference = the starting run: for a LoRA run trl adds a frozen copy of the
  run's adapter (named ``ref``) next to the trained one on the same base model, so there is no
  second model; a ``full`` run gets a frozen copy of the model.
- **GRPO**: trl's ``GRPOTrainer`` with a ``rollout_func``
  (:class:`~genrec.training.align.data.TrieRollout`) that samples each group within the
  catalog trie instead of ``generate``, and :class:`~genrec.training.align.data.ItemReward` as
  the reward. trl computes the policy log-probs over the full vocabulary while the samples are
  drawn from the trie-renormalised distribution; the resulting update also raises the mass on
  valid continuations, which serving (constrained beam search) ignores anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

from genrec.training.align.config import AlignConfig


class TokenizedDPOTrainer(DPOTrainer):
    """``DPOTrainer`` over rows that are already tokenized (``prompt_ids``, ``chosen_ids``, ``rejected_ids``)."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"{dataset_name} dataset lacks the tokenized columns {sorted(missing)}")
        return dataset


def _common_args(cfg: AlignConfig, output_dir: str) -> dict[str, Any]:
    """The ``TrainingArguments`` fields both trainers share."""
    t = cfg.training
    return {"output_dir": output_dir, "per_device_train_batch_size": t.batch_size,
            "gradient_accumulation_steps": t.grad_accum, "learning_rate": t.learning_rate,
            "num_train_epochs": t.epochs, "max_steps": t.max_steps, "warmup_steps": t.warmup_ratio,
            "weight_decay": t.weight_decay, "max_grad_norm": t.max_grad_norm, "lr_scheduler_type": "cosine",
            "logging_steps": t.logging_steps, "save_strategy": "steps", "save_steps": t.save_steps,
            "save_total_limit": t.save_total_limit, "seed": cfg.seed, "data_seed": cfg.seed, "bf16": t.bf16,
            "use_cpu": not torch.cuda.is_available(), "report_to": [], "activation_checkpointing": False,
            "dataloader_num_workers": 0, "save_only_model": False, "disable_tqdm": False}


def expose_head_bias(model: Any) -> None:
    """trl's fused LM head reads ``lm_head.bias``; PEFT's ``TrainableTokensWrapper`` (the item-token
    rows of a LoRA run's tied or untied head) forwards only ``weight``. A head without a bias gets
    ``bias = None`` on the wrapper, which is what trl would read from the wrapped layer."""
    head = model.get_output_embeddings()
    adapter = getattr(head, "token_adapter", None)  # TrainableTokensWrapper
    if adapter is not None and "bias" not in vars(head) and getattr(adapter.base_layer, "bias", None) is None:
        head.__dict__["bias"] = None


@torch.no_grad()
def sync_reference_adapter(model: Any) -> int:
    """Copy every weight of the trained adapter ``default`` into trl's reference adapter ``ref``.

    trl copies the parameters named ``*.default.*``; the item-token rows
    (``...trainable_tokens_delta.default``) end in ``.default`` and would keep their fresh values,
    making the reference differ from the starting run on exactly the item tokens. Returns how
    many tensors were copied (0 when there is no ``ref`` adapter).
    """
    peft_config = getattr(model, "peft_config", {})
    if "ref" not in peft_config:
        return 0
    params = dict(model.named_parameters())
    copied = 0
    for name, p in params.items():
        if name.endswith(".default") or ".default." in name:
            ref = params.get(name[: -len(".default")] + ".ref" if name.endswith(".default")
                             else name.replace(".default.", ".ref."))
            if ref is not None:
                ref.copy_(p)
                copied += 1
    return copied


def _keep_float_adapter(model: Any) -> None:
    """Undo trl's bfloat16 cast of a quantized model's trainable weights when training in float32
    (CPU): the item-token rows would otherwise mix dtypes with the embedding they patch."""
    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()


def dpo_trainer(cfg: AlignConfig, policy: Any, rows: list[dict[str, list[int]]], output_dir: str,
                ref_model: Any, callbacks: list[Any]) -> DPOTrainer:
    """trl DPO over the preference ``rows`` (:func:`~genrec.training.align.data.preference_pairs`)."""
    from datasets import Dataset as HFDataset

    d = cfg.dpo
    loss_type, weights = [d.loss_type], [1.0]
    if d.sft_weight > 0:
        loss_type.append("sft")
        weights.append(d.sft_weight)
    expose_head_bias(policy.model)
    args = DPOConfig(**_common_args(cfg, output_dir), beta=d.beta, loss_type=loss_type, loss_weights=weights,
                     max_length=None, precompute_ref_log_probs=False, remove_unused_columns=False)
    trainer = TokenizedDPOTrainer(model=policy.model, ref_model=ref_model, args=args,
                                  train_dataset=HFDataset.from_list(rows), processing_class=policy.tokenizer,
                                  callbacks=callbacks)
    sync_reference_adapter(trainer.accelerator.unwrap_model(trainer.model))
    if not cfg.training.bf16:
        _keep_float_adapter(trainer.model)
    return trainer


def grpo_trainer(cfg: AlignConfig, policy: Any, num_prompts: int, targets: list[int], rollout: Any, reward: Any,
                 output_dir: str, callbacks: list[Any]) -> GRPOTrainer:
    """trl GRPO: the ``prompt`` column holds keys into the rollout's prompt table, ``target`` the true item."""
    import os

    from datasets import Dataset as HFDataset

    g = cfg.grpo
    expose_head_bias(policy.model)
    args = GRPOConfig(**_common_args(cfg, output_dir), num_generations=g.num_generations,
                      max_completion_length=policy.trie.depth, temperature=g.temperature, beta=g.beta,
                      epsilon=g.epsilon, loss_type=g.loss_type, scale_rewards=g.scale_rewards,
                      remove_unused_columns=False, log_completions=False, shuffle_dataset=True)
    data = HFDataset.from_dict({"prompt": [str(j) for j in range(num_prompts)], "target": [int(t) for t in targets]})
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is the documented hook we rely on
    trainer = GRPOTrainer(model=policy.model, reward_funcs=[reward], args=args, train_dataset=data,
                          processing_class=policy.tokenizer, rollout_func=rollout, callbacks=callbacks)
    sync_reference_adapter(trainer.accelerator.unwrap_model(trainer.model))
    if not cfg.training.bf16:
        _keep_float_adapter(trainer.model)
    return trainer
