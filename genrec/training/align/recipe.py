"""``genrec align``: preference alignment (DPO or GRPO, through trl) of a finished genrec run.

Straight line: check the starting run and the data (nothing written on failure) → check the
output directory (fresh, or ``--resume`` with the same config) → load the run as a trainable
policy → training-split prompts → DPO: mine (or reuse) hard negatives and build preference
pairs; GRPO: trie-constrained rollouts and item rewards → trl trains (resumable) → write the
run directory through a staging directory, the model card last.

The output is a run directory like ``genrec train``'s (:mod:`genrec.run_dir`): its
``config.yaml`` is the starting run's (model, tasks, data: how it is loaded and served) with
this ``name`` / ``output_dir`` and an ``align`` section (the resolved alignment config and the
starting run's path and model checksums), so ``genrec evaluate / recommend / serve`` and
``GenRecommender`` load it unchanged.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from genrec import run_dir as layout
from genrec.config import load_config, to_dict
from genrec.errors import ConfigError
from genrec.training.align.config import AlignConfig
from genrec.training.align.model import StartRun, check_start_run

log = logging.getLogger(__name__)
NEGATIVES = "negatives.jsonl"  # DPO: the mined hard negatives (cache, reused by --resume)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(AlignConfig, args.config, args.overrides)
    run(cfg, resume=args.resume)
    return 0


def run_config(cfg: AlignConfig, start: StartRun) -> dict[str, Any]:
    """The ``config.yaml`` of the aligned run: the starting run's, renamed, plus the ``align`` section."""
    out = dict(start.config)
    out.update(name=cfg.name, output_dir=cfg.output_dir, data=str(start.data))
    out["align"] = {**to_dict(cfg), "data": str(start.data), "start_run": str(start.path.resolve()),
                    "start_identity": start.identity()}
    return out


def check_resume(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume when the recorded ``align`` section differs (names the keys)."""
    from genrec.training.recipe import _diff_keys

    saved = (layout.read_config(run_dir) or {}).get("align") or {}
    diff = sorted(_diff_keys(saved, config["align"]))
    if diff:
        raise ConfigError(f"cannot resume {run_dir}: the config or the starting run changed since it started "
                          f"({', '.join(diff)}); resume with the same recipe, overrides and run=, or pick a new name=...")


def run(cfg: AlignConfig, resume: bool = False) -> Path:
    """Align and write the run directory; returns its path."""
    run_dir = cfg.run_dir
    start = check_start_run(cfg.run, cfg.data or None, run_dir)
    config = run_config(cfg, start)
    has_ckpt = layout.has_checkpoint(run_dir)
    if resume:
        if not has_ckpt:
            raise ConfigError(f"--resume: no checkpoint under {run_dir / layout.CHECKPOINTS}; start the run without "
                              "--resume")
        check_resume(run_dir, config)
    elif layout.is_finished(run_dir) or has_ckpt:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose name=...")
    elif (run_dir / layout.CONFIG).is_file():
        check_resume(run_dir, config)  # a start that stopped before its first checkpoint: same config only
    return _train(cfg, start, config, resume)


def _train(cfg: AlignConfig, start: StartRun, config: dict[str, Any], resume: bool) -> Path:
    from transformers import set_seed

    from genrec.data.split import leave_one_out
    from genrec.training.align import data as align_data
    from genrec.training.align.model import frozen_copy, load_policy
    from genrec.training.align.trainers import dpo_trainer, grpo_trainer
    from genrec.training.trainer import JsonlLogger

    run_dir = cfg.run_dir
    set_seed(cfg.seed)
    policy = load_policy(start, cfg.dtype or None)
    split = leave_one_out(policy.dataset, int(start.tasks.get("max_history", 20)))
    prompts = align_data.build_prompts(split, policy, start.tasks, cfg.prompts, cfg.max_prompts, cfg.seed)
    if not len(prompts):
        raise ConfigError(f"no training prompts: every user of {start.data} has a single training item; "
                          "use prompts=all or a dataset with longer sequences")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / layout.CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    log.info("%s: %d prompts from the training split (%s)", cfg.method, len(prompts), cfg.prompts)
    callbacks = [JsonlLogger(run_dir / layout.TRAIN_LOG)]
    ckpt = str(run_dir / layout.CHECKPOINTS)
    started = time.time()
    summary: dict[str, Any]
    if cfg.method == "dpo":
        d = cfg.dpo
        key = align_data.mining_key(config["align"]["start_identity"], {
            "prompts": cfg.prompts, "max_prompts": cfg.max_prompts, "seed": cfg.seed, "beams": d.beams,
            "negatives": d.negatives, "skip_top": d.skip_top, "exclude_seen": d.exclude_seen,
            "data": config["align"]["data"]})
        mined = align_data.load_or_mine(run_dir / NEGATIVES, key, lambda: align_data.mine_negatives(
            policy.model, prompts, policy.trie, d.beams, d.negatives, d.skip_top, d.exclude_seen))
        summary = align_data.negative_stats(mined)
        log.info("negatives: %s", summary)
        rows = align_data.preference_pairs(prompts, mined, policy.item_ids, policy.tokenizer.eos_token_id)
        if not rows:
            raise ConfigError("no preference pairs: the beams held no wrong item for any prompt; raise dpo.beams")
        ref = frozen_copy(policy.model) if start.mode == "full" else None
        trainer = dpo_trainer(cfg, policy, rows, ckpt, ref, callbacks)
    else:
        g = cfg.grpo
        reward = align_data.ItemReward(policy.item_ids, policy.tokenizer.eos_token_id, g.prefix_credit)
        rollout = align_data.TrieRollout(prompts.ids, policy.trie, g.temperature, cfg.seed)
        trainer = grpo_trainer(cfg, policy, len(prompts), prompts.targets.tolist(), rollout, reward, ckpt, callbacks)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if cfg.method == "grpo":
        summary = reward.summary()
    if trainer.is_world_process_zero():
        _finalize(cfg, start, config, trainer, policy, summary, time.time() - started, len(prompts))
    return run_dir


def _carry_aux_heads(start: Path, stage: Path) -> None:
    """Copy the starting run's auxiliary-head weights (``genrec_aux``, not loaded for alignment and
    not changed by it) into the saved weights, so the aligned run holds every tensor its start did."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    for name in ("adapter_model.safetensors", layout.FULL_WEIGHTS):
        src, dst = start / name, stage / name
        if not (src.is_file() and dst.is_file()):
            continue
        with safe_open(str(src), framework="pt") as f:
            aux = {k: f.get_tensor(k) for k in f.keys() if "genrec_aux" in k}  # noqa: SIM118 - not a dict
        if aux:
            tensors = load_file(str(dst))
            save_file({**aux, **tensors}, str(dst), metadata={"format": "pt"})


def _finalize(cfg: AlignConfig, start: StartRun, config: dict[str, Any], trainer: Any, policy: Any,
              summary: dict[str, Any], seconds: float, num_prompts: int) -> None:
    """Write the final artifacts through a staging directory, the model card last."""
    from genrec.io import checksums, provenance, write_json
    from genrec.training.align.card import model_card
    from genrec.training.report import loss_curve

    run_dir = cfg.run_dir
    stage = run_dir / layout.STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if start.mode == "full":
        model.save_pretrained(stage)
    else:  # the trained adapter only (trl keeps the reference as a second adapter, "ref")
        model.save_pretrained(stage, selected_adapters=["default"])
    _carry_aux_heads(start.path, stage)
    policy.tokenizer.save_pretrained(stage)
    shutil.copytree(start.path / layout.ITEM_TOKENIZER, stage / layout.ITEM_TOKENIZER)
    # The catalog and the base model's identity travel with the run, as genrec train writes them.
    catalog = start.path / layout.CATALOG
    shutil.copyfile(catalog if catalog.is_file() else start.data / "items.jsonl", stage / layout.CATALOG)
    base = layout.read_base(start.path)
    if base is not None:
        write_json(stage / layout.BASE_MODEL, base)
    (stage / layout.CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    inputs = checksums([start.data / "items.jsonl", start.data / "sequences.jsonl"]
                       + [start.path / f for f in layout.IDENTITY_FILES])
    prov = provenance(config, cfg.seed, inputs)
    prov["align"] = {"method": cfg.method, "prompts": num_prompts, "seconds": round(seconds, 1), **summary}
    write_json(stage / layout.PROVENANCE, prov)
    log_path = run_dir / layout.TRAIN_LOG
    if log_path.is_file():
        loss_curve(log_path, stage / layout.LOSS_CURVE)
    peft_card = (stage / layout.CARD).read_text(encoding="utf-8") if (stage / layout.CARD).is_file() else ""
    meta = layout.card_metadata(layout.split_card(peft_card)[0], (base or {}).get("canonical"),
                                "peft" if start.mode != "full" else "transformers",
                                "adapter" if start.mode != "full" else "finetune")
    body = model_card(cfg, start, trainer.state, summary, seconds, num_prompts)
    (stage / layout.CARD).write_text(layout.join_card(meta, body), encoding="utf-8")
    layout.publish(stage, run_dir)
    log.info("wrote %s", run_dir)
