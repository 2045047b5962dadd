"""``genrec train``: instruction-tune an LLM to generate item indices.

Straight line: load dataset + item tokenizer (checked against each other) → build the
instruction examples → load the base model, add the item vocabulary, attach PEFT and the
auxiliary heads → ``GenRecTrainer.train`` (resumable) → write the run directory::

    RUN/adapter_model.safetensors, adapter_config.json   (or full weights in ``full`` mode)
    RUN/tokenizer.json ...                                the extended tokenizer
    RUN/item_tokenizer/                                   copy of the item-code artifact
    RUN/config.yaml, RUN/provenance.json                  resolved config, seed, versions, checksums
    RUN/train_log.jsonl, RUN/loss_curve.png               per-term training log
    RUN/README.md                                         model card: how trained, how to load
    RUN/checkpoints/                                      Trainer checkpoints (for --resume)
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from genrec.config import load_config, to_dict
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out
from genrec.errors import ConfigError
from genrec.io import checksums, provenance, write_json
from genrec.modeling import ModelConfig
from genrec.tasks.prompts import TEMPLATES

AUX_TERMS = ("contrastive_semantic", "contrastive_behavior", "reconstruction_embedding", "reconstruction_codes")

log = logging.getLogger(__name__)


@dataclass
class TasksConfig:
    mix: dict[str, float] = field(default_factory=lambda: {
        "seqrec": 1.0, "item2index": 1.0, "index2item": 1.0, "fusion_titles": 0.2, "fusion_next_title": 0.2,
    })  # task → share of its natural size (windows for history tasks, catalog for item tasks)
    max_history: int = 20  # items shown in history prompts
    max_length: int = 512  # tokens per example (prompt left-truncated beyond)
    use_chat_template: bool = True  # render with the base model's chat template when it has one
    max_eval_examples: int = 512  # validation examples (next-item on the valid split) for eval loss

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(TEMPLATES))
        if unknown:
            raise ValueError(f"tasks.mix names unknown tasks {unknown}; valid: {sorted(TEMPLATES)}")
        if any(not isinstance(v, (int, float)) or v < 0 for v in self.mix.values()) or not any(self.mix.values()):
            raise ValueError(f"tasks.mix shares must be numbers >= 0, at least one > 0; got {self.mix}")


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: {
        "contrastive_semantic": 0.1, "contrastive_behavior": 0.1, "reconstruction_embedding": 0.1,
    })  # aux term → weight (LM loss has weight 1); a term with weight 0 is not computed
    num_negatives: int = 2048  # sampled catalog negatives for the contrastive loss (whole catalog if smaller)
    temperature: float = 0.07  # InfoNCE temperature

    def __post_init__(self) -> None:
        unknown = sorted(k for k, w in self.weights.items() if w and k not in AUX_TERMS)
        if unknown:
            raise ValueError(f"losses.weights names unknown terms {unknown}; valid: {list(AUX_TERMS)} "
                             "(the LM loss always has weight 1)")
        if self.num_negatives < 1:
            raise ValueError(f"losses.num_negatives must be >= 1, got {self.num_negatives}")
        if self.temperature <= 0:
            raise ValueError(f"losses.temperature must be > 0, got {self.temperature}")


@dataclass
class TrainingConfig:
    learning_rate: float = 2e-4  # peak learning rate (cosine decay)
    epochs: float = 1.0  # passes over the example mix (ignored when max_steps > 0)
    max_steps: int = -1  # hard cap on optimizer steps (-1: use epochs)
    batch_size: int = 8  # per-device batch size
    grad_accum: int = 1  # gradient accumulation steps
    warmup_ratio: float = 0.03  # linear warm-up share of the schedule
    weight_decay: float = 0.0  # AdamW weight decay
    logging_steps: int = 10  # log every N steps
    eval_steps: int = 100  # evaluate (validation loss) and checkpoint every N steps
    save_total_limit: int = 2  # checkpoints kept
    early_stopping_patience: int = 3  # evaluations without validation improvement before stopping (0: off)
    bf16: bool = False  # bfloat16 autocast (GPUs with bf16 support)
    deepspeed: str | None = None  # path to a DeepSpeed JSON config (see recipes/accelerate/)
    dataloader_num_workers: int = 0  # DataLoader workers
    response_logits_only: bool = True  # LM head on response positions only (same loss, far less compute)


@dataclass
class TrainConfig:
    name: str = "genrec"  # run name; the run directory is output_dir/name
    data: str = ""  # canonical dataset directory
    tokenizer: str = ""  # tokenizers_out/NAME built from the same dataset
    output_dir: str = "runs"  # parent of the run directory
    seed: int = 42  # seeds example sampling, init and training
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data: set the dataset directory (e.g. data=runs/demo/data/ml-100k)")
        if not self.tokenizer:
            raise ValueError("tokenizer: set the item tokenizer directory (e.g. tokenizer=tokenizers_out/ml-100k)")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def aux_factory(cfg: TrainConfig, tables: dict[str, torch.Tensor], codes: list[list[str]]):
    """A builder of the auxiliary heads for the weighted terms of ``cfg.losses`` (``None`` if none)."""
    from genrec.losses import GlobalContrastiveLoss, ReconstructionLoss
    from genrec.trainer import AuxLosses

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


def check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run whose recorded config differs from ``cfg`` (names the keys)."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text())
    now = to_dict(cfg)
    diff = sorted(_diff_keys(saved, now))
    if diff:
        raise ConfigError(f"cannot resume {run_dir}: the config changed since it started ({', '.join(diff)}); "
                          "resume with the same recipe and overrides, or pick a new name=...")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def main(args: argparse.Namespace) -> int:
    cfg = load_config(TrainConfig, args.config, args.overrides)
    run(cfg, resume=args.resume)
    return 0


def run(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train and write the run directory; returns its path."""
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

    from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer, stream_tables
    from genrec.modeling import build_model, trainable_parameters
    from genrec.tasks.collate import SUMMARY_TOKEN, Collator, RenderedExamples
    from genrec.tasks.prompts import TaskBuilder
    from genrec.trainer import GenRecTrainer, JsonlLogger

    run_dir = cfg.run_dir
    ckpt_dir = run_dir / "checkpoints"
    has_ckpt = ckpt_dir.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpt_dir.iterdir())
    if resume:
        if not has_ckpt:
            raise ConfigError(f"--resume: no checkpoint under {ckpt_dir}; start the run without --resume")
        check_resume(run_dir, cfg)
    elif (run_dir / "README.md").is_file() or has_ckpt:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose name=...")
    set_seed(cfg.seed)
    ds = Dataset.load(cfg.data)
    itok = load_item_tokenizer(cfg.tokenizer, dataset=cfg.data)
    codes = item_codes(itok, ds)
    tables = stream_tables(itok, ds)
    split = leave_one_out(ds, cfg.tasks.max_history)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    builder = TaskBuilder(ds.items, codes, cfg.tasks.max_history, seed=cfg.seed)
    examples = list(builder.iter_examples(split, cfg.tasks.mix))
    eval_rng = np.random.default_rng(cfg.seed)
    eval_users = eval_rng.permutation(len(split.valid))[: cfg.tasks.max_eval_examples]
    eval_examples = [builder.make("seqrec", split.valid.histories[u], int(split.valid.targets[u])) for u in eval_users]

    token_texts: dict[str, list[str]] = {}
    for it, toks in zip(ds.items, codes):
        for t in toks:
            token_texts.setdefault(t, []).append(it.display)
    model, tok, _ = build_model(cfg.model, itok.tokens, token_texts, cfg.seed, aux_factory(cfg, tables, codes))
    trainable, total = trainable_parameters(model)
    log.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    sid = tok.convert_tokens_to_ids(SUMMARY_TOKEN)

    def encode(exs):
        try:
            return RenderedExamples(exs, tok, sid, cfg.tasks.max_length, cfg.tasks.use_chat_template)
        except ValueError as e:  # a response longer than the example budget
            raise ConfigError(f"tasks.max_length={cfg.tasks.max_length} is too small: {e}; raise it") from None

    train_data = encode(examples)  # tokenised lazily: bounded runs touch few of the examples
    eval_data = encode(eval_examples)
    t = cfg.training
    args = TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate, num_train_epochs=t.epochs,
        max_steps=t.max_steps, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, lr_scheduler_type="cosine",
        logging_steps=t.logging_steps, eval_strategy="steps", eval_steps=t.eval_steps, save_strategy="steps",
        save_steps=t.eval_steps, save_total_limit=t.save_total_limit, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=False, seed=cfg.seed, data_seed=cfg.seed,
        bf16=t.bf16, use_cpu=not torch.cuda.is_available(), report_to=[], remove_unused_columns=False,
        deepspeed=t.deepspeed, dataloader_num_workers=t.dataloader_num_workers, save_only_model=False,
        # The aux heads run outside the wrapped forward: DDP must not mark them unused.
        ddp_find_unused_parameters=False,
    )
    callbacks = [JsonlLogger(run_dir / "train_log.jsonl")]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer = GenRecTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                            data_collator=Collator(tok.pad_token_id), loss_weights=dict(cfg.losses.weights),
                            response_logits_only=t.response_logits_only,
                            callbacks=callbacks)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if trainer.is_world_process_zero():
        _finalize(cfg, run_dir, trainer, tok, itok, ds, trainable, total)
    return run_dir


def _finalize(cfg: TrainConfig, run_dir: Path, trainer: Any, tok: Any, itok: Any, ds: Dataset,
              trainable: int, total: int) -> None:
    """Write the final artifacts through a staging directory, the model card last."""
    from genrec.train_report import loss_curve, model_card

    stage = run_dir / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    trainer.model.save_pretrained(stage)
    tok.save_pretrained(stage)
    shutil.copytree(itok.path, stage / "item_tokenizer")
    inputs = checksums([Path(cfg.data) / "items.jsonl", Path(cfg.data) / "sequences.jsonl",
                        Path(itok.path) / "item_codes.json"])
    prov = provenance(to_dict(cfg), cfg.seed, inputs)
    prov["distributed"] = {"world_size": trainer.args.world_size,
                           "type": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],
                           "device": str(trainer.args.device)}
    write_json(stage / "provenance.json", prov)
    log_path = run_dir / "train_log.jsonl"
    if log_path.is_file():
        loss_curve(log_path, stage / "loss_curve.png")
    (stage / "README.md").write_text(model_card(cfg, trainer.state, trainable, total, ds))
    for entry in sorted(stage.iterdir(), key=lambda p: p.name == "README.md"):
        dest = run_dir / entry.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(entry, dest)
    stage.rmdir()
    log.info("wrote %s", run_dir)

