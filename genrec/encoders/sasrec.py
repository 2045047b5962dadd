"""SASRec training (Kang & McAuley, ICDM 2018): the network is :mod:`genrec.encoders.sasrec_net`.

Training (:func:`train_sasrec`; the item tokenizer takes the trained item table as behaviour
embeddings, ``genrec baseline --model sasrec`` wraps it with artifact writing): training
examples are every target of every training prefix, each with its own history of at most
``max_len`` items — exactly :meth:`~genrec.data.split.Split.train_windows`, but batched: a
prefix of up to ``max_len + 1`` items is one row trained on all its positions (causal attention
makes position ``t`` see only ``row[0..t]``), and each later target of a longer prefix is one
extra row holding its last ``max_len`` history items with the loss on its last position.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from genrec.data.split import EvalSet, Split, pad_left
from genrec.encoders.fit import fit
from genrec.encoders.sasrec_net import SASRec
from genrec.encoders.text import TextEncoderConfig
from genrec.encoders.text_items import ID_INITS, ITEM_EMBEDDINGS, TEXT_NORMS
from genrec.errors import ConfigError
from genrec.metrics import evaluate_scores
from genrec.runtime import resolve_device, resolve_threads, torch_threads
from genrec.tracking import check_report_to

log = logging.getLogger(__name__)


LOSSES = ("ce", "bce")


@dataclass
class SASRecConfig:
    """Settings of ``genrec baseline --model sasrec`` (YAML keys = field names)."""

    hidden: int = 64  # width H of item/position embeddings and of every layer
    layers: int = 2  # number of self-attention blocks
    heads: int = 1  # attention heads; hidden must be divisible by it
    dropout: float = 0.5  # dropout on embeddings, attention and sub-layer outputs
    max_len: int = 20  # longest history the model reads; also the split's max_history
    window_stride: int = 1  # targets per extra row of prefixes > max_len+1 (1 = exact windows; see training_rows)
    loss: str = "ce"  # "ce": softmax over all items; "bce": one uniformly sampled negative (as in the paper)
    lr: float = 1e-3  # Adam learning rate
    batch_size: int = 128  # training rows per step (each row carries up to max_len targets)
    epochs: int = 200  # upper bound on training epochs
    patience: int = 10  # stop after this many evaluations without a better validation NDCG@10
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay
    seed: int = 42  # seeds torch, numpy and random; same seed → same metrics
    eval_every: int = 1  # validate every this many epochs
    eval_batch_size: int = 1024  # users scored at once during evaluation
    exclude_history: bool = False  # remove the user's history items from the ranking
    num_threads: int = 0  # torch CPU threads; 0 = all cores available to this process
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N; the result is on the CPU
    item_embeddings: str = "id"  # id: learned table | text: frozen text vectors through an MLP | text+id: their sum
    adapter_hidden: int = 256  # inner width of the text adapter MLP (0 = one linear projection)
    adapter_dropout: float | None = None  # dropout inside the text adapter; null = `dropout`
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)  # text encoder (item_embeddings text*)
    text_norm: str = "standardize"  # text vectors into the adapter: standardize (per dimension) | whiten (PCA)
    id_init: str = "normal"  # text+id ID rows start: normal (small random) | zero (the model starts from the text table)
    cold_items: float = 0.0  # share of items held out of training entirely (cold-start evaluation; 0 = off)
    cold_seed: int = 0  # which items are held out (the same seed holds out the same items in every baseline)
    report_to: str = "none"  # per-epoch curves to: none | tensorboard | wandb | mlflow (genrec.tracking)

    def __post_init__(self) -> None:
        positive = ("hidden", "layers", "heads", "max_len", "batch_size", "epochs", "patience", "eval_every",
                    "eval_batch_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 1 <= self.window_stride <= self.max_len:
            raise ValueError(f"window_stride must be in [1, max_len={self.max_len}], got {self.window_stride}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = all cores), got {self.num_threads}")
        if self.item_embeddings not in ITEM_EMBEDDINGS:
            raise ValueError(f"item_embeddings must be one of {ITEM_EMBEDDINGS}, got {self.item_embeddings!r}")
        if self.text_norm not in TEXT_NORMS:
            raise ValueError(f"text_norm must be one of {TEXT_NORMS}, got {self.text_norm!r}")
        if self.id_init not in ID_INITS:
            raise ValueError(f"id_init must be one of {ID_INITS}, got {self.id_init!r}")
        if self.id_init == "zero" and self.item_embeddings != "text+id":
            raise ValueError("id_init=zero needs item_embeddings: text+id (an ID table alone must start random)")
        if self.adapter_dropout is not None and not 0.0 <= self.adapter_dropout < 1.0:
            raise ValueError(f"adapter_dropout must be in [0, 1) or null (= dropout), got {self.adapter_dropout}")
        if self.adapter_hidden < 0:
            raise ValueError(f"adapter_hidden must be >= 0 (0 = linear), got {self.adapter_hidden}")
        if not 0.0 <= self.cold_items < 1.0:
            raise ValueError(f"cold_items must be in [0, 1) (share of items held out), got {self.cold_items}")
        if self.cold_items and self.loss != "ce":
            raise ValueError("cold_items needs loss: ce (held-out items are left out of the softmax)")
        check_report_to(self.report_to)


@dataclass
class SASRecResult:
    """Outcome of :func:`train_sasrec`; ``model`` holds the best-validation weights."""

    model: SASRec
    item_embeddings: np.ndarray  # float32 [N, H], row i = item index i
    valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    history: list[dict[str, Any]]  # one record per epoch (loss, seconds, valid metrics when evaluated)
    best_epoch: int
    seconds: float
    config: SASRecConfig = field(default_factory=SASRecConfig)


def training_rows(train: list[np.ndarray], max_len: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All training examples of ``train`` prefixes as rows (see module docstring).

    With ``stride > 1`` the later targets of a long prefix share rows: each row holds the
    ``max_len`` items before its last target and carries the loss on its last ``stride``
    positions, so every target still appears exactly once, with a history of at least
    ``max_len - stride + 1`` items (instead of exactly ``max_len``) for ``stride`` times fewer rows.

    Returns:
        ``inputs`` ``[R, max_len]`` left-padded item indices (``-1`` = padding) and
        ``targets`` ``[R, max_len]`` the next item at each position (``-1`` = no loss there).
    """
    if not 1 <= stride <= max_len:
        raise ValueError(f"window_stride must be in [1, max_len={max_len}], got {stride}")
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    tail_inputs: list[np.ndarray] = []
    tail_targets: list[np.ndarray] = []
    for prefix in train:
        if len(prefix) < 2:
            continue
        head = prefix[:max_len + 1]
        inputs.append(head[:-1])
        targets.append(head[1:])
        m = len(prefix)
        if m > max_len + 1:
            # windows[t - max_len - 1] = prefix[t - max_len : t + 1], the example of target t > max_len.
            windows = np.lib.stride_tricks.sliding_window_view(prefix, max_len + 1)[1:]
            ends = np.arange(m - 1, max_len, -stride)[::-1]  # last target of each row
            rows = windows[ends - max_len - 1]
            y = rows[:, 1:].copy()  # position j predicts target t = end - max_len + 1 + j
            j = np.arange(max_len)
            t = ends[:, None] - max_len + 1 + j[None, :]
            # Keep the row's last `stride` targets, and never a target the head row already covers.
            y[(j[None, :] < max_len - stride) | (t <= max_len)] = -1
            tail_inputs.append(rows[:, :-1])
            tail_targets.append(y)
    x = pad_left(inputs, max_len)
    y = pad_left(targets, max_len)
    if tail_inputs:
        x = np.concatenate([x, *tail_inputs])
        y = np.concatenate([y, *tail_targets])
    return x.astype(np.int64), y.astype(np.int64)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate_sasrec(model: SASRec, data: EvalSet, cfg: SASRecConfig, desc: str = "evaluate",
                    progress: bool = True) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on one evaluation set."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_scores(model.score, data, cfg.max_len, batch_size=cfg.eval_batch_size,
                               exclude_history=cfg.exclude_history, desc=desc, progress=progress)
    finally:
        model.train(was_training)


def _batch_loss(model: SASRec, x: torch.Tensor, y: torch.Tensor, loss: str,
                absent: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over the positions of ``x`` ``[B, L]`` that carry a target in ``y`` ``[B, L]``.

    ``absent`` ``[N]`` bool marks items that do not exist at training time (cold-start hold-out):
    they are left out of the softmax.
    """
    mask = y >= 0
    table = model.item_weight()  # [N, H], computed once per batch
    hidden = model.encode(x, table)[mask]  # [T, H]; only target positions reach the output layer
    target = y[mask]  # [T]
    if loss == "ce":
        logits = model.logits(hidden, table)
        if absent is not None:
            logits = logits.masked_fill(absent, float("-inf"))
        return F.cross_entropy(logits, target)
    # One negative per position, uniform over the catalog minus the target.
    n = model.num_items
    negative = (target + torch.randint(1, max(n, 2), target.shape, device=target.device)) % n
    pos = (hidden * table[target]).sum(-1)
    neg = (hidden * table[negative]).sum(-1)
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def _train_epoch(model: SASRec, optim: torch.optim.Optimizer, inputs: np.ndarray, targets: np.ndarray,
                 order: np.ndarray, cfg: SASRecConfig, desc: str, progress: bool,
                 absent: torch.Tensor | None = None) -> float:
    """One pass over the rows in ``order``; returns the mean loss per row."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(range(0, len(order), cfg.batch_size), desc=desc, disable=not progress, leave=False)
    for lo in bar:
        idx = order[lo:lo + cfg.batch_size]
        x, y = torch.from_numpy(inputs[idx]).to(model.device), torch.from_numpy(targets[idx]).to(model.device)
        loss = _batch_loss(model, x, y, cfg.loss, absent)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / count


def build_sasrec(split: Split, cfg: SASRecConfig, text_features: np.ndarray | None = None) -> SASRec:
    """A fresh model for ``split``; with text item embeddings, ``text_features`` ``[N, D]``
    (:func:`~genrec.encoders.text_items.item_text_features`) are required. ``text+id`` keeps an ID
    part only for items that occur in the training prefixes (``cfg.id_init``: its starting rows)."""
    if cfg.item_embeddings != "id":
        if text_features is None:
            raise ConfigError(f"item_embeddings={cfg.item_embeddings} needs the items' text vectors; pass the "
                              "dataset's items (genrec baseline does) or use item_embeddings=id")
        if len(text_features) != split.num_items:
            raise ConfigError(f"text features have {len(text_features)} rows but the dataset has "
                              f"{split.num_items} items; recompute them from this dataset's items.jsonl")
    model = SASRec(split.num_items, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.max_len,
                   item_embeddings=cfg.item_embeddings, text_features=text_features,
                   adapter_hidden=cfg.adapter_hidden, adapter_dropout=cfg.adapter_dropout)
    if cfg.item_embeddings == "text+id":
        known = np.zeros(split.num_items, dtype=bool)
        for prefix in split.train:
            known[prefix] = True
        model.id_known.copy_(torch.from_numpy(known))
        if cfg.id_init == "zero":
            # Each ID row then learns only what the item's text table leaves out.
            with torch.no_grad():
                model.item_emb.weight.zero_()
    return model


def train_sasrec(split: Split, cfg: SASRecConfig, progress: bool = True,
                 log_path: str | os.PathLike | None = None, text_features: np.ndarray | None = None,
                 absent: np.ndarray | None = None) -> SASRecResult:
    """Train SASRec on ``split.train``, early-stop on validation NDCG@10, evaluate on test.

    Deterministic given ``cfg.seed``. ``log_path`` receives one JSON line per epoch and a final
    line with the best epoch and both metric sets. ``text_features`` ``[N, D]`` feed text item
    embeddings; ``absent`` ``[N]`` bool marks items held out of training (left out of the softmax).
    """
    if split.max_history != cfg.max_len:
        raise ConfigError(f"max_len ({cfg.max_len}) differs from the split's max_history ({split.max_history}); "
                          "build the split with leave_one_out(ds, max_history=cfg.max_len)")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(resolve_threads(cfg.num_threads)))
        logf = stack.enter_context(open(log_path, "a", encoding="utf-8")) if log_path is not None else None
        seed_everything(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        inputs, targets = training_rows(split.train, cfg.max_len, cfg.window_stride)
        if len(inputs) == 0:
            raise ConfigError("no training examples: every user's training prefix has fewer than 2 items")
        device = resolve_device(cfg.device)
        model = build_sasrec(split, cfg, text_features).to(device)
        absent_t = torch.from_numpy(np.asarray(absent, dtype=bool)).to(device) if absent is not None else None
        optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        log.info("SASRec (%s items): %d training rows, %d targets, %d items, %d threads", cfg.item_embeddings,
                 len(inputs), int((targets >= 0).sum()), split.num_items, torch.get_num_threads())
        t0 = 0.0

        def run_epoch(epoch: int) -> dict[str, Any]:
            nonlocal t0
            t0 = time.perf_counter()
            loss = _train_epoch(model, optim, inputs, targets, rng.permutation(len(inputs)), cfg,
                                f"epoch {epoch}", progress, absent_t)
            return {"loss": round(loss, 6)}

        def validate(epoch: int, record: dict[str, Any]) -> dict[str, float]:
            record["valid"] = evaluate_sasrec(model, split.valid, cfg, desc="valid", progress=progress)
            return record["valid"]

        def on_record(record: dict[str, Any]) -> None:
            record["seconds"] = round(time.perf_counter() - t0, 3)
            valid = record.get("valid")
            log.info("epoch %d loss %.4f%s (%.1fs)", record["epoch"], record["loss"],
                     f" valid ndcg@10 {valid['ndcg@10']:.4f} recall@10 {valid['recall@10']:.4f}" if valid else "",
                     record["seconds"])

        fitted = fit(model, cfg.epochs, run_epoch, validate, patience=cfg.patience, log=logf, on_record=on_record,
                     report_to=cfg.report_to, log_path=log_path, name="sasrec",
                     due=lambda epoch: epoch % cfg.eval_every == 0 or epoch == cfg.epochs)
        if fitted.stopped_early:
            log.info("early stop at epoch %d: no validation NDCG@10 gain in %d evaluations (best epoch %d)",
                     fitted.history[-1]["epoch"], cfg.patience, fitted.best_epoch)
        model.eval()
        test_metrics = evaluate_sasrec(model, split.test, cfg, desc="test", progress=progress)
        seconds = time.perf_counter() - start
        if logf:
            logf.write(json.dumps({"final": True, "best_epoch": fitted.best_epoch, "valid": fitted.best_metrics,
                                   "test": test_metrics, "seconds": round(seconds, 3)}) + "\n")
    model.cpu()
    return SASRecResult(model=model, item_embeddings=model.item_embeddings(), valid_metrics=fitted.best_metrics,
                        test_metrics=test_metrics, history=fitted.history, best_epoch=fitted.best_epoch,
                        seconds=seconds, config=cfg)
