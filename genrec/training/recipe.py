"""``genrec train``: instruction-tune an LLM to generate item indices.

Straight line: load dataset + item tokenizer (checked against each other) → build the
instruction examples → load the base model, add the item vocabulary, attach PEFT and the
auxiliary heads → ``GenRecTrainer.train`` (resumable) → write the run directory (its files:
:mod:`genrec.run_dir`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from genrec import run_dir as layout
from genrec.config import load_config, to_dict
from genrec.data.dataset import Dataset
from genrec.data.split import hold_out_items, leave_one_out, recorded_holdout
from genrec.errors import ConfigError
from genrec.io import checksums, provenance, write_json
from genrec.tracking import hf_report_to
from genrec.training.config import COMPACT, SCRATCH, TrainConfig

log = logging.getLogger(__name__)

MASK_FROM = {"keep": None, "mask": 0, "deep": 1}  # losses.distill_history -> CodeDistillation(mask_from=)


def check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run whose recorded config differs from ``cfg`` (names the keys)."""
    saved_path = run_dir / layout.CONFIG
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text())
    now = to_dict(cfg)
    # a key added to a section since the run started reads as its default there
    for section, values in to_dict(TrainConfig(data=cfg.data, tokenizer=cfg.tokenizer)).items():
        if isinstance(values, dict) and isinstance(saved.get(section), dict):
            saved[section] = {**values, **saved[section]}
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

    from genrec.encoders.item_adapter import item_table
    from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer, stream_tables
    from genrec.tasks.collate import SUMMARY_TOKEN, Collator, RenderedExamples
    from genrec.tasks.prompts import TaskBuilder
    from genrec.training.aux import aux_factory
    from genrec.training.model import build_model, trainable_parameters
    from genrec.training.trainer import GenRecTrainer, JsonlLogger

    run_dir = cfg.run_dir
    ckpt_dir = run_dir / layout.CHECKPOINTS
    has_ckpt = layout.has_checkpoint(run_dir)
    if resume:
        if not has_ckpt:
            raise ConfigError(f"--resume: no checkpoint under {ckpt_dir}; start the run without --resume")
        check_resume(run_dir, cfg)
    elif layout.is_finished(run_dir) or has_ckpt:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose name=...")
    set_seed(cfg.seed)
    ds = Dataset.load(cfg.data)
    itok = load_item_tokenizer(cfg.tokenizer, dataset=cfg.data)
    codes = item_codes(itok, ds)
    tables = stream_tables(itok, ds)
    split, cold = held_out(cfg, itok, leave_one_out(ds, cfg.tasks.max_history))
    from genrec.training.item_head import similar_stream

    if (cfg.training.item_head and (cfg.training.item_head_similar or cfg.training.item_head_cold_neighbours)
            and similar_stream(itok, cfg.training.item_head_similar_stream) not in itok.order):
        raise ConfigError(f"training.item_head_similar_stream={cfg.training.item_head_similar_stream!r} is not a stream "
                          f"of tokenizer {itok.path} (streams {itok.order}); name one of them, or set "
                          "training.item_head_similar=0 and training.item_head_cold_neighbours=0")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / layout.CONFIG).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    builder = TaskBuilder(ds.items, codes, cfg.tasks.max_history, seed=cfg.seed)
    examples = list(builder.iter_examples(split, cfg.tasks.mix, None if cold is None else np.flatnonzero(~cold)))
    eval_rng = np.random.default_rng(cfg.seed)
    eval_users = eval_rng.permutation(len(split.valid))[: cfg.tasks.max_eval_examples]
    if cfg.tasks.sequence_format:  # validation loss in the format the run is served with
        eval_examples = [builder.make("sequence", [*split.valid.histories[u], int(split.valid.targets[u])])
                         for u in eval_users]
    else:
        eval_examples = [builder.make("seqrec", split.valid.histories[u], int(split.valid.targets[u]))
                         for u in eval_users]

    token_texts: dict[str, list[str]] = {}
    for it, toks in zip(ds.items, codes):
        for t in toks:
            token_texts.setdefault(t, []).append(it.display)
    table = item_table(tables, cfg.model.item_embeddings) if cfg.model.item_embeddings else None
    row_keep = None
    if cfg.model.item_row_min_count:
        from genrec.baselines.popularity import item_counts

        row_keep = torch.from_numpy(item_counts(split.train, split.num_items) >= cfg.model.item_row_min_count)
        log.info("learned item rows for %d of %d items (>= %d training interactions)", int(row_keep.sum()),
                 len(row_keep), cfg.model.item_row_min_count)
    model, tok, _ = build_model(cfg.model, itok.tokens, token_texts, cfg.seed, aux_factory(cfg, tables, codes),
                                _vocabulary_texts(examples) if cfg.model.tokenizer == COMPACT else None, table,
                                row_keep)
    trainable, total = trainable_parameters(model)
    log.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    sid = tok.convert_tokens_to_ids(SUMMARY_TOKEN)

    def encode(exs):
        try:
            return RenderedExamples(exs, tok, sid, cfg.tasks.max_length, cfg.tasks.use_chat_template, builder.index)
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
        metric_for_best_model=f"eval_{t.select_by}", greater_is_better=t.select_by != "loss", seed=cfg.seed, data_seed=cfg.seed,
        bf16=t.bf16, use_cpu=not torch.cuda.is_available(), report_to=hf_report_to(t.report_to), remove_unused_columns=False,
        deepspeed=t.deepspeed, dataloader_num_workers=t.dataloader_num_workers, save_only_model=False,
        # The aux heads run outside the wrapped forward: DDP must not mark them unused.
        ddp_find_unused_parameters=False,
    )
    callbacks = [JsonlLogger(run_dir / layout.TRAIN_LOG)]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    distill = (code_distillation(cfg, ds, [tok(ix, add_special_tokens=False)["input_ids"] for ix in builder.index],
                                 cold)
               if cfg.losses.weights.get("distill") else None)
    trainer = GenRecTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                            data_collator=Collator(tok.pad_token_id), loss_weights=dict(cfg.losses.weights),
                            distill=distill,
                            response_logits_only=t.response_logits_only, group_by_length=t.group_by_length,
                            ranker=None if t.select_by == "loss" else validation_ranker(cfg, split, tok, sid,
                                                                                         builder.index, codes),
                            callbacks=callbacks)
    for cb in trainer.callback_handler.callbacks:  # TensorBoard events in RUN/tensorboard, not in checkpoints/
        if type(cb).__name__ == "TensorBoardCallback" and getattr(cb, "logging_dir", None) is None:
            cb.logging_dir = str(run_dir / layout.TENSORBOARD)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if trainer.is_world_process_zero():
        head = item_head(cfg, trainer.model, split, tok, sid, builder.index, codes, itok, ds) if t.item_head else None
        _finalize(cfg, run_dir, trainer, tok, itok, ds, trainable, total, head)
    return run_dir


def item_head(cfg: TrainConfig, model: Any, split: Any, tok: Any, sid: int, index: list[str],
              codes: list[list[str]], itok: Any, ds: Dataset) -> tuple[Any, dict]:
    """``training.item_head``: the trained model's item head and its fit report
    (:mod:`genrec.training.item_head`), on ``training.item_head_users`` seeded validation users."""
    from genrec.training.item_head import catalog_embeddings, fit_for_model, head_users

    render, trie = serving_renderer(cfg, tok, sid, index, codes)
    valid, picks = head_users(split.valid, cfg.training.item_head_users, cfg.training.item_head_epoch_users, cfg.seed)
    core = getattr(model, "module", model)
    return fit_for_model(core, render, trie, split.train, valid.histories, valid.targets, split.num_items,
                         max_history=cfg.tasks.max_history, num_beams=cfg.training.ranking_beams, seed=cfg.seed,
                         transitions=cfg.training.item_head_transitions, similar=cfg.training.item_head_similar,
                         seen=cfg.training.item_head_seen, cold_neighbours=cfg.training.item_head_cold_neighbours,
                         epoch_users=picks, select=cfg.training.item_head_select,
                         weight_rule=cfg.training.item_head_weight_rule,
                         embeddings=catalog_embeddings(itok, cfg.training.item_head_similar_stream,
                                                       [it.item_id for it in ds.items])
                         if cfg.training.item_head_similar or cfg.training.item_head_cold_neighbours else None)


def held_out(cfg: TrainConfig, itok: Any, split: Any) -> tuple[Any, np.ndarray | None]:
    """The cold-start protocol of ``tasks.cold_items``: ``(split without the held-out items, cold [N] bool)``,
    or ``(split, None)`` when off. The tokenizer must have held out the same items."""
    from genrec.item_tokenizer.artifact import held_out_share

    want, built = recorded_holdout(vars(cfg.tasks)), held_out_share(itok)
    if built[0] and built != want:
        raise ConfigError(f"tokenizer {itok.path} was built with cold_start.cold_items={built[0]} cold_seed={built[1]} "
                          f"(for a cold-start evaluation) but the run has tasks.cold_items={cfg.tasks.cold_items} "
                          f"tasks.cold_seed={cfg.tasks.cold_seed}; set tasks.cold_items={built[0]} tasks.cold_seed={built[1]}, "
                          "or use a tokenizer built without held-out items")
    if not want[0]:
        return split, None
    if not built[0]:
        raise ConfigError(f"tasks.cold_items={want[0]} needs a tokenizer built without those items (tokenizer "
                          f"{itok.path} coded them from their interactions): build one with `genrec tokens build ... "
                          f"cold_start.cold_items={want[0]} cold_start.cold_seed={want[1]}`")
    split, cold = hold_out_items(split, *want)
    log.info("cold-start protocol: %d of %d items held out of training", int(cold.sum()), len(cold))
    return split, cold


def code_distillation(cfg: TrainConfig, ds: Dataset, item_token_ids: list[list[int]],
                      cold: np.ndarray | None = None) -> Any:
    """The ``distill`` term: the SASRec of ``losses.distill_teacher``, checked against the dataset and
    the cold-start protocol (``cold [N]``: held-out items, given no teacher mass), with the history
    rule of ``losses.distill_history``."""
    from genrec.baselines.artifact import CHECKPOINT, load_sasrec
    from genrec.training.losses.distill import CodeDistillation

    path = Path(cfg.losses.distill_teacher) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"losses.distill_teacher: {path} does not exist; train the teacher with `genrec baseline "
                          f"--model sasrec --data {cfg.data} --out DIR` and pass DIR")
    teacher, tcfg = load_sasrec(path)
    if teacher.num_items != ds.num_items:
        raise ConfigError(f"losses.distill_teacher was trained on {teacher.num_items} items but {cfg.data} has "
                          f"{ds.num_items}; train the teacher on this dataset")
    if recorded_holdout(vars(tcfg)) != recorded_holdout(vars(cfg.tasks)):
        raise ConfigError(f"losses.distill_teacher was trained with cold_items={tcfg.cold_items} "
                          f"cold_seed={tcfg.cold_seed} but the run has tasks.cold_items={cfg.tasks.cold_items} "
                          f"tasks.cold_seed={cfg.tasks.cold_seed}; train the teacher under the same hold-out "
                          f"(`genrec baseline --model sasrec ... cold_items={cfg.tasks.cold_items} "
                          f"cold_seed={cfg.tasks.cold_seed}`)")
    log.info("distilling from %s (temperature %s, the history's items: %s)", path, cfg.losses.distill_temperature,
             cfg.losses.distill_history)
    return CodeDistillation(teacher, item_token_ids, cfg.losses.distill_temperature,
                            None if cold is None else torch.from_numpy(cold),
                            mask_from=MASK_FROM[cfg.losses.distill_history])


def _vocabulary_texts(examples: list[Any]) -> tuple[list[str], list[str]]:
    """``(instruction texts, example texts)``: the words a ``compact`` tokenizer is built from."""
    from genrec.tasks.collate import FALLBACK_TEMPLATE, SYSTEM_PROMPT
    from genrec.tasks.prompts import TEMPLATES

    always = [FALLBACK_TEMPLATE, SYSTEM_PROMPT] + [t for ts in TEMPLATES.values() for t in ts]
    return always, [t for ex in examples for t in (ex.prompt, ex.response)]


def serving_renderer(cfg: TrainConfig, tok: Any, sid: int, index: list[str], codes: list[list[str]]) -> tuple[Any, Any]:
    """``(render, trie)``: ``render(history) -> (prompt ids, (positions, items))``, the serving prompt of
    a history (:func:`genrec.tasks.collate.history_prompt`), and the catalog trie."""
    from genrec.generation import ItemTrie, item_token_ids
    from genrec.tasks.collate import history_prompt

    ids = item_token_ids(codes, tok)
    trie = ItemTrie.from_sequences(ids, tok.eos_token_id, len(tok))

    def render(history: Any) -> Any:
        return history_prompt(tok, sid, history, index, None, ids, cfg.tasks.max_history,
                              cfg.tasks.max_length - trie.depth, cfg.tasks.use_chat_template, cfg.tasks.sequence_format)

    return render, trie


def validation_ranker(cfg: TrainConfig, split: Any, tok: Any, sid: int, index: list[str],
                      codes: list[list[str]]) -> Any:
    """The ranker of ``training.select_by``: ``training.ranking_users`` seeded validation users, their
    serving prompts (:func:`serving_renderer`) and the catalog trie."""
    from genrec.training.ranking import ValidationRanker

    rng = np.random.default_rng(cfg.seed + 1)
    users = np.sort(rng.permutation(len(split.valid))[: cfg.training.ranking_users])
    render, trie = serving_renderer(cfg, tok, sid, index, codes)
    rendered = [render(split.valid.histories[u]) for u in users]
    return ValidationRanker([p for p, _ in rendered], split.valid.targets[users], trie, cfg.training.ranking_beams,
                            [at for _, at in rendered])


def _finalize(cfg: TrainConfig, run_dir: Path, trainer: Any, tok: Any, itok: Any, ds: Dataset,
              trainable: int, total: int, head: tuple[Any, dict] | None = None) -> None:
    """Write the final artifacts through a staging directory, the model card last."""
    from genrec.hub import base_record
    from genrec.training.report import loss_curve, model_card

    stage = run_dir / layout.STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    trainer.model.save_pretrained(stage)
    if head is not None:
        from genrec.encoders.item_head import save_item_head

        save_item_head(head[0], stage / layout.ITEM_HEAD, {"data": str(cfg.data), "seed": cfg.seed})
        write_json(stage / layout.ITEM_HEAD_REPORT, head[1])
    tok.save_pretrained(stage)
    shutil.copytree(itok.path, stage / layout.ITEM_TOKENIZER)
    inputs = checksums([Path(cfg.data) / "items.jsonl", Path(cfg.data) / "sequences.jsonl",
                        Path(itok.path) / "item_codes.json"])
    prov = provenance(to_dict(cfg), cfg.seed, inputs)
    prov["distributed"] = {"world_size": trainer.args.world_size,
                           "type": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],
                           "device": str(trainer.args.device)}
    write_json(stage / layout.PROVENANCE, prov)
    # The catalog and the base model's identity travel with the run: serving needs no dataset dir.
    shutil.copyfile(Path(cfg.data) / "items.jsonl", stage / layout.CATALOG)
    base = None if cfg.model.base == SCRATCH else base_record(cfg.model.base)
    if base is not None:
        write_json(stage / layout.BASE_MODEL, base)
    log_path = run_dir / layout.TRAIN_LOG
    if log_path.is_file():
        loss_curve(log_path, stage / layout.LOSS_CURVE)
    peft_card = (stage / layout.CARD).read_text(encoding="utf-8") if (stage / layout.CARD).is_file() else ""
    card = model_card(cfg, trainer.state, trainable, total, ds, base, peft_card)
    if head is not None:
        by_w, w = head[1]["by_weight"], head[0].weight
        from genrec.training.item_head import similar_stream

        orders, near = len(head[1].get("transitions") or []), len(head[1].get("similar") or [])
        counts = f" plus the transition counts of the last {orders} history items" if orders else ""
        counts += (f"{' and' if orders else ' plus'} the nearest items of the last {near} by "
                   f"{similar_stream(itok, cfg.training.item_head_similar_stream)} embedding") if near else ""
        if head[1].get("seen"):
            counts += f", and a learned weight {head[1]['seen_weight']:.2f} on the history's own items"
        card += (f"\n## Item head\n\n`{layout.ITEM_HEAD}`: one output row per item on the final hidden state{counts}, "
                 f"fused with the code scores at weight {w}, epoch {head[1]['epoch']} of the fit (chosen by "
                 f"{'the fused ranking' if head[1]['select'] == 'fused' else 'its own NDCG@10'}; validation NDCG@10 {by_w[str(w)]['ndcg@10']:.4f}; the codes alone "
                 f"{by_w['0.0']['ndcg@10']:.4f}; {head[1]['validation_users']} users, `{layout.ITEM_HEAD_REPORT}`). "
                 "`--no-item-head` ranks by the codes alone."
                 + (f" The {head[1]['borrowed']} items that were never a training target borrow the mean row of their "
                    f"{head[1]['cold_neighbours']} nearest trained items." if head[1].get("borrowed") else "") + "\n")
    (stage / layout.CARD).write_text(card, encoding="utf-8")
    layout.publish(stage, run_dir)
    log.info("wrote %s", run_dir)

