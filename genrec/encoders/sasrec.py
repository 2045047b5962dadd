"""SASRec: a causal self-attention next-item model (Kang & McAuley, ICDM 2018).

The model reads a left-padded history ``[B, L]`` of item indices (``-1`` = padding) and
produces one hidden state per position; the score of item ``i`` at a position is the dot
product with row ``i`` of the item table, which is shared between input and output (tied
embeddings). After training, :meth:`SASRec.item_embeddings` is a behaviour embedding of the
catalog (``[N, H]``, row ``i`` = item index ``i``).

Item index ``0`` is a real item in the canonical dataset, so inside the model every index is
shifted by one and row ``0`` of the table is the padding row.

Positions are counted from the first real item of each row (``0, 1, 2, ...`` whatever the
padding). With causal attention the state at position ``t`` is then exactly the encoding of the
window ``row[0..t]`` on its own, so training on every position of a row is the same as training
on each of its prefixes as a separate example.

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
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genrec.data.split import EvalSet, Split, pad_left
from genrec.encoders.fit import fit
from genrec.errors import ConfigError
from genrec.metrics import evaluate_scores
from genrec.runtime import resolve_threads, torch_threads

log = logging.getLogger(__name__)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t`` that are not padding."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, L, H]``, ``allowed`` ``[B, 1, L, L]`` bool → ``[B, L, H]``."""
        b, length, hidden = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, length, hidden))


class Block(nn.Module):
    """Pre-norm transformer block: attention and a two-layer feed-forward, each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.norm2 = nn.LayerNorm(hidden)
        # The paper's point-wise feed-forward keeps the inner width equal to the hidden size.
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender with a tied item table.

    Args:
        num_items: catalog size ``N`` (item indices ``0..N-1``).
        hidden: embedding and layer width ``H``.
        layers: number of transformer blocks.
        heads: attention heads (``hidden`` must be divisible by it).
        dropout: dropout on embeddings, attention weights and sub-layer outputs.
        max_len: longest history ``L`` the model reads (longer inputs keep their last ``L`` items).
    """

    def __init__(self, num_items: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2, max_len: int = 20) -> None:
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small normal init keeps the initial logits near zero, so the softmax starts close to uniform.
        std = 1.0 / math.sqrt(self.item_emb.embedding_dim)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif p.dim() == 2:
                nn.init.normal_(p, std=std if "emb" in name else 0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @property
    def device(self) -> torch.device:
        return self.item_emb.weight.device

    def encode(self, seqs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Hidden states ``[B, L, H]`` for left-padded histories ``[B, L]`` (``-1`` = padding).

        Padding positions come out as zeros. ``L`` may be at most ``max_len``.
        """
        seqs = torch.as_tensor(seqs, dtype=torch.long, device=self.device)
        if seqs.shape[1] > self.max_len:
            seqs = seqs[:, -self.max_len:]
        valid = seqs >= 0  # [B, L]
        tokens = torch.where(valid, seqs + 1, torch.zeros_like(seqs))
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        x = self.item_emb(tokens) + self.pos_emb(positions)
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        length = seqs.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=self.device)
        # Padding queries may attend to themselves only, so no softmax row is empty (which would give NaN).
        allowed = (causal & (valid[:, None, :] | eye)).unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed) * valid.unsqueeze(-1)
        return self.norm(x) * valid.unsqueeze(-1)

    def forward(self, seqs: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.encode(seqs)

    def item_weight(self) -> torch.Tensor:
        """The output item table ``[N, H]`` (the shared table without its padding row)."""
        return self.item_emb.weight[1:]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the whole catalog ``[..., N]`` for hidden states ``[..., H]``."""
        return hidden @ self.item_weight().T

    def score(self, seqs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Next-item scores ``[B, N]`` for left-padded histories ``[B, L]`` (last column = latest item)."""
        return self.logits(self.encode(seqs)[:, -1])

    def item_embeddings(self) -> np.ndarray:
        """Item table as ``float32`` ``[N, H]``; row ``i`` is item index ``i`` (no padding row)."""
        return self.item_weight().detach().cpu().float().numpy().copy()


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


def _batch_loss(model: SASRec, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss over the positions of ``x`` ``[B, L]`` that carry a target in ``y`` ``[B, L]``."""
    mask = y >= 0
    hidden = model.encode(x)[mask]  # [T, H]; only target positions reach the output layer
    target = y[mask]  # [T]
    if loss == "ce":
        return F.cross_entropy(model.logits(hidden), target)
    # One negative per position, uniform over the catalog minus the target.
    n = model.num_items
    negative = (target + torch.randint(1, max(n, 2), target.shape)) % n
    table = model.item_weight()
    pos = (hidden * table[target]).sum(-1)
    neg = (hidden * table[negative]).sum(-1)
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def _train_epoch(model: SASRec, optim: torch.optim.Optimizer, inputs: np.ndarray, targets: np.ndarray,
                 order: np.ndarray, cfg: SASRecConfig, desc: str, progress: bool) -> float:
    """One pass over the rows in ``order``; returns the mean loss per row."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(range(0, len(order), cfg.batch_size), desc=desc, disable=not progress, leave=False)
    for lo in bar:
        idx = order[lo:lo + cfg.batch_size]
        loss = _batch_loss(model, torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx]), cfg.loss)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / count


def train_sasrec(split: Split, cfg: SASRecConfig, progress: bool = True,
                 log_path: str | os.PathLike | None = None) -> SASRecResult:
    """Train SASRec on ``split.train``, early-stop on validation NDCG@10, evaluate on test.

    Deterministic given ``cfg.seed``. ``log_path`` receives one JSON line per epoch and a final
    line with the best epoch and both metric sets.
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
        model = SASRec(split.num_items, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.max_len)
        optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        log.info("SASRec: %d training rows, %d targets, %d items, %d threads", len(inputs),
                 int((targets >= 0).sum()), split.num_items, torch.get_num_threads())
        t0 = 0.0

        def run_epoch(epoch: int) -> dict[str, Any]:
            nonlocal t0
            t0 = time.perf_counter()
            loss = _train_epoch(model, optim, inputs, targets, rng.permutation(len(inputs)), cfg,
                                f"epoch {epoch}", progress)
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
    return SASRecResult(model=model, item_embeddings=model.item_embeddings(), valid_metrics=fitted.best_metrics,
                        test_metrics=test_metrics, history=fitted.history, best_epoch=fitted.best_epoch,
                        seconds=seconds, config=cfg)
