"""Behavior encoder: a Deep Interest Network (DIN) whose item table becomes the behavior embeddings.

DIN (Zhou et al., KDD 2018) scores a target item ``t`` for a history ``h_1..h_L``:

- a *local activation unit* MLP([h_l, t, h_l - t, h_l * t]) → one weight per history item;
- the user interest vector ``u(t) = sum_l w_l h_l`` depends on the target;
- ``score(t) = MLP([u(t), t, u(t) * t])`` (``head="mlp"``, DIN's head) or ``<u(t), t>``
  (``head="dot"``).

Choices made here, and why:

- **Softmax-normalised attention** (``attention_norm="softmax"``, default) instead of DIN's raw
  weights: training windows have histories of 1..max_history items, and raw weights make the
  norm of ``u(t)`` grow with the history length, which the head must then undo; with softmax
  ``u(t)`` is a convex combination of history embeddings, so items consumed in similar
  contexts are pulled towards the same region of the table. ``"none"`` keeps DIN's raw weights.
- **Sampled softmax**: every training window scores its positive next item against
  ``num_negatives`` items drawn uniformly from the catalog minus the positive (with
  replacement among themselves); uniform sampling needs no logQ correction.
- Only the training windows of the split are used (history → next item inside ``s[:n-2]``);
  validation targets serve early stopping only, test targets are never read.

The first attention layer is linear in ``[h, t, h - t, h * t]``, so it is evaluated as
``h A + t B + (h * t) C`` — scoring all ``N`` items for ``M`` history positions is then one
``[N, d] @ [d, M * a1]`` GEMM instead of materialising ``[M, N, 4d]``, and only real (non-pad)
history positions are ever computed, so padding cannot leak into scores or Dice statistics.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genrec.config import to_dict
from genrec.data.split import EvalSet, Split
from genrec.encoders.fit import fit, write_curves
from genrec.errors import ConfigError, DataError
from genrec.io import atomic_dir, provenance, write_json
from genrec.metrics import evaluate_scores
from genrec.runtime import resolve_device, reuse_freed_memory, torch_threads
from genrec.tracking import check_report_to

# Rows (history position x candidate item) per chunk of full-catalog scoring; bounds memory
# at roughly ROW_BUDGET * attention_hidden[0] * 4 bytes * a few activations.
ROW_BUDGET = 1 << 18


@dataclass
class DINConfig:
    """Settings of the DIN behavior encoder (YAML keys are the field names)."""

    dim: int = 64  # item embedding width = behavior embedding width
    max_history: int = 20  # most recent history items the model attends over
    num_negatives: int = 60  # uniformly sampled negatives per training window
    attention_hidden: list[int] = field(default_factory=lambda: [80, 40])  # local activation unit MLP sizes
    mlp_hidden: list[int] = field(default_factory=lambda: [200, 80])  # prediction MLP sizes (head="mlp")
    activation: str = "dice"  # hidden activation: "dice" (DIN's data-adaptive PReLU) or "prelu"
    attention_norm: str = "softmax"  # "softmax" over the history, or "none" (DIN's raw weights)
    head: str = "mlp"  # "mlp": MLP([u, t, u*t]) as in DIN; "dot": <u, t>
    dropout: float = 0.0  # dropout inside the prediction MLP
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0 = plain Adam behaviour
    batch_size: int = 1024  # training windows per step
    epochs: int = 30  # maximum epochs
    patience: int = 3  # evaluations without a better valid NDCG@10 before stopping
    eval_every: int = 1  # validate every N epochs; 0 = never validate, keep the last epoch
    eval_users: int = 2000  # validation users sampled (once, seeded) for early stopping; 0 = all
    seed: int = 42  # seeds initialisation, shuffling, negatives and dropout
    num_threads: int = 0  # torch CPU threads while training; 0 = leave torch's default (all cores)
    report_to: str = "none"  # per-epoch curves to: none | tensorboard | wandb | mlflow (genrec.tracking)
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        for key in ("dim", "max_history", "num_negatives", "batch_size", "epochs", "patience"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("eval_every", "eval_users", "num_threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key, sizes in {"attention_hidden": self.attention_hidden, "mlp_hidden": self.mlp_hidden}.items():
            if not sizes or any(int(s) < 1 for s in sizes):
                raise ValueError(f"{key} must be a non-empty list of positive sizes, got {sizes}")
        choices = {"activation": ("dice", "prelu"), "attention_norm": ("softmax", "none"), "head": ("mlp", "dot")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_report_to(self.report_to)
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}")


class Dice(nn.Module):
    """DIN's Dice: ``p * x + (1 - p) * alpha * x`` with ``p = sigmoid(batchnorm(x))``; ``x`` is ``[R, H]``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(hidden, affine=False, eps=1e-8)
        self.alpha = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # alpha + (1 - alpha) * p in one fused op: the [R, H] passes dominate DIN's cost on CPU.
        return x * torch.addcmul(self.alpha, torch.sigmoid(self.bn(x)), 1 - self.alpha)


def _act(name: str, hidden: int) -> nn.Module:
    return Dice(hidden) if name == "dice" else nn.PReLU(hidden, init=0.25)


def _mlp(sizes: list[int], activation: str, dropout: float) -> nn.Sequential:
    """Hidden layers ``sizes[0] → ... → sizes[-1]`` then a scalar output; input ``[R, sizes[0]]``."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), _act(activation, b)]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 1))


class DIN(nn.Module):
    """DIN over item indices shifted by one (index 0 is the zero padding row)."""

    def __init__(self, num_items: int, cfg: DINConfig) -> None:
        super().__init__()
        d, a = cfg.dim, [int(s) for s in cfg.attention_hidden]
        self.cfg = cfg
        self.emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=d ** -0.5)
        with torch.no_grad():
            self.emb.weight[0].zero_()
        # First attention layer, split into the h, t and h*t parts of W [h, t, h-t, h*t].
        self.att_h = nn.Linear(d, a[0])
        self.att_t = nn.Linear(d, a[0], bias=False)
        self.att_ht = nn.Linear(d, a[0], bias=False)
        self.att_act = _act(cfg.activation, a[0])
        self.att_rest = _mlp(a, cfg.activation, 0.0)
        self.head = _mlp([3 * d] + [int(s) for s in cfg.mlp_hidden], cfg.activation, cfg.dropout) \
            if cfg.head == "mlp" else None

    def _attention(self, h: torch.Tensor, t: torch.Tensor, rows_b: torch.Tensor | None) -> torch.Tensor:
        """Activation-unit logits ``[M, C]`` for history rows ``h [M, d]``.

        ``t`` is ``[B, C, d]`` (candidates of user ``rows_b[m]`` for row ``m``) or ``[C, d]``
        (shared by every row, ``rows_b`` unused).
        """
        ph = self.att_h(h)  # [M, a1]
        if t.dim() == 3:
            first = ph[:, None] + self.att_t(t)[rows_b] + self.att_ht(h[:, None] * t[rows_b])
        else:
            m, d = h.shape
            g = h[:, :, None] * self.att_ht.weight.t()[None]  # [M, d, a1]
            prod = (t @ g.permute(1, 0, 2).reshape(d, -1)).view(len(t), m, -1).transpose(0, 1)
            first = ph[:, None] + self.att_t(t)[None] + prod
        m, c, k = first.shape
        return self.att_rest(self.att_act(first.reshape(m * c, k))).view(m, c)

    def _pool(self, hist: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Interest ``[B, C, d]`` from shifted histories ``[B, L]`` and attention logits ``[B, L, C]``.

        Logits at pad positions are ignored whatever their value, so padding cannot leak.
        """
        pad = (hist == 0)[..., None]
        if self.cfg.attention_norm == "softmax":
            # An all-pad history gives NaN rows; its interest is defined as zero.
            w = torch.nan_to_num(torch.softmax(logits.masked_fill(pad, -torch.inf), dim=1), nan=0.0)
        else:
            w = logits.masked_fill(pad, 0.0)
        return torch.einsum("blc,bld->bcd", w, self.emb(hist))

    def _score(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` from interests ``[B, C, d]`` and targets ``[B, C, d]``."""
        if self.head is None:
            return (u * t).sum(-1)
        b, c, d = u.shape
        x = torch.cat([u, t, u * t], dim=-1).view(b * c, 3 * d)
        return self.head(x).view(b, c)

    def forward(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` of shifted candidates ``[B, C]`` given shifted histories ``[B, L]``."""
        t = self.emb(cand)  # [B, C, d]
        rows_b, rows_l = (hist > 0).nonzero(as_tuple=True)  # only real history positions are computed
        logits = t.new_zeros(*hist.shape, cand.shape[1])
        logits[rows_b, rows_l] = self._attention(self.emb(hist[rows_b, rows_l]), t, rows_b)
        return self._score(self._pool(hist, logits), t)

    @torch.no_grad()
    def score_all(self, histories: np.ndarray, users_per_chunk: int = 64) -> torch.Tensor:
        """Scores ``[B, N]`` of every item for left-padded histories ``[B, L]`` (item indices, ``-1`` = pad).

        The activation unit sees only the (history item, target item) pair, so its logits are
        computed once per distinct history item of the batch (``[U, N]``) and gathered per user.
        """
        items = self.emb.weight[1:]  # [N, d]
        hist = torch.as_tensor(np.asarray(histories), dtype=torch.long, device=items.device) + 1
        n = len(items)
        uniq, inv = torch.unique(hist, return_inverse=True)  # inv: [B, L] rows of `pair`
        hu = self.emb(uniq)
        pair = items.new_empty(len(uniq), n)
        step = max(1, ROW_BUDGET // len(uniq))
        for i in range(0, n, step):
            pair[:, i:i + step] = self._attention(hu, items[i:i + step], None)
        out = items.new_empty(len(hist), n)
        step = max(1, ROW_BUDGET // (4 * users_per_chunk))  # head rows per chunk: users x items
        for s in range(0, len(hist), users_per_chunk):
            hb, ib = hist[s:s + users_per_chunk], inv[s:s + users_per_chunk]
            for i in range(0, n, step):
                t = items[i:i + step]
                u = self._pool(hb, pair[:, i:i + step][ib])  # [b, c, d]
                out[s:s + len(hb), i:i + len(t)] = self._score(u, t[None].expand(len(hb), -1, -1))
        return out


@dataclass
class DINResult:
    """A trained behavior encoder."""

    item_embeddings: np.ndarray  # [N, dim] float32, row i = item index i
    valid_metrics: dict[str, float]  # full-ranking metrics of the kept model on the validation users used
    history: list[dict[str, Any]]  # per epoch: loss, seconds, valid metrics (when evaluated)
    model: DIN
    best_epoch: int  # epoch whose weights were kept


def train_windows(split: Split, max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """All training windows: left-padded histories ``[W, max_history]`` (``-1`` pad) and targets ``[W]``."""
    hists, targets = [], []
    for prefix in split.train:
        if len(prefix) < 2:
            continue
        padded = np.concatenate([np.full(max_history, -1, np.int64), prefix])
        hists.append(np.lib.stride_tricks.sliding_window_view(padded, max_history)[1:len(prefix)])
        targets.append(prefix[1:])
    if not hists:
        raise DataError("the split has no training windows (every user's training prefix is shorter than 2); "
                        "DIN needs users with at least 4 interactions")
    return np.concatenate(hists).astype(np.int64), np.concatenate(targets).astype(np.int64)


def evaluate_din(model: DIN, data: EvalSet, max_history: int, progress: bool = False,
                 desc: str = "evaluate") -> dict[str, float]:
    """Full-ranking Recall/NDCG@5/10/20 of ``model`` on ``data`` (every item scored)."""
    model.eval()
    with reuse_freed_memory():
        # Large batches share more history items, so score_all's per-item attention reuse pays more.
        return evaluate_scores(model.score_all, data, max_history, batch_size=2048, desc=desc,
                               progress=progress)


def train_din(split: Split, cfg: DINConfig, progress: bool = True, log_path: Path | None = None) -> DINResult:
    """Train DIN on ``split``'s training windows with sampled softmax; early-stop on valid NDCG@10.

    Trains on ``cfg.device``; the returned model is on the CPU. Negatives and shuffling come from
    CPU generators, so a GPU run draws the same samples as a CPU run.
    """
    n = split.num_items
    if cfg.num_negatives >= n:
        raise DataError(f"num_negatives={cfg.num_negatives} must be smaller than the number of items ({n}); "
                        "lower num_negatives")
    if cfg.max_history > split.max_history:
        raise ConfigError(f"max_history={cfg.max_history} exceeds the split's max_history={split.max_history}; "
                          "lower max_history or split with a longer history")
    hists, targets = train_windows(split, cfg.max_history)
    hists_t, targets_t = torch.from_numpy(hists + 1), torch.from_numpy(targets + 1)
    valid = split.valid
    if 0 < cfg.eval_users < len(valid):
        idx = np.sort(np.random.default_rng(cfg.seed).choice(len(valid), cfg.eval_users, replace=False))
        valid = EvalSet(valid.users[idx], [valid.histories[i] for i in idx], valid.targets[idx])
    device = resolve_device(cfg.device)
    if device.type == "cuda":  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch_threads(cfg.num_threads))
            log = stack.enter_context(open(log_path, "w", encoding="utf-8")) if log_path else None
            stack.enter_context(torch.random.fork_rng(devices=[]))
            stack.enter_context(reuse_freed_memory())
            torch.manual_seed(cfg.seed)
            return _fit(split, cfg, hists_t.to(device), targets_t.to(device), valid, progress, log, log_path)
    finally:
        torch.use_deterministic_algorithms(prev_det)


def _fit(split: Split, cfg: DINConfig, hists: torch.Tensor, targets: torch.Tensor, valid: EvalSet,
         progress: bool, log: Any, log_path: Path | None) -> DINResult:
    n = split.num_items
    device = hists.device
    model = DIN(n, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    def run_epoch(epoch: int) -> dict[str, Any]:
        model.train()
        start, total, count = time.perf_counter(), 0.0, 0
        order = torch.from_numpy(rng.permutation(len(targets))).to(device)
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"DIN epoch {epoch}", disable=not progress,
                   leave=False)
        for s in bar:
            idx = order[s:s + cfg.batch_size]
            pos = targets[idx]  # shifted, 1..N
            # Uniform over the N - 1 other items: draw from N - 1 slots and skip the positive.
            neg = torch.randint(1, n, (len(idx), cfg.num_negatives), generator=gen).to(device)
            neg = neg + (neg >= pos[:, None]).long()
            logits = model(hists[idx], torch.cat([pos[:, None], neg], dim=1))
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long, device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}")
        return {"loss": total / count, "train_seconds": time.perf_counter() - start}

    def validate(epoch: int, record: dict[str, Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        record["valid"] = evaluate_din(model, valid, cfg.max_history, progress, desc=f"DIN valid {epoch}")
        record["eval_seconds"] = time.perf_counter() - t0
        return record["valid"]

    fitted = fit(model, cfg.epochs, run_epoch, validate, patience=cfg.patience, log=log,
                 report_to=cfg.report_to, log_path=log_path, name="din",
                 due=lambda epoch: bool(cfg.eval_every) and epoch % cfg.eval_every == 0)
    if fitted.best_epoch:
        best_epoch, metrics = fitted.best_epoch, fitted.best_metrics
    else:
        best_epoch = fitted.history[-1]["epoch"]
        metrics = evaluate_din(model, valid, cfg.max_history, progress, desc="DIN valid")
    model.eval().cpu()
    emb = model.emb.weight.detach()[1:].numpy().astype(np.float32, copy=True)
    return DINResult(item_embeddings=emb, valid_metrics=metrics, history=fitted.history, model=model,
                     best_epoch=best_epoch)


def save_result(result: DINResult, cfg: DINConfig, out_dir: str | Path, metrics: dict[str, Any],
                inputs: dict[str, str] | None = None) -> Path:
    """Write ``item_embeddings.npy`` ``[N, dim]``, ``model.pt``, ``metrics.json``, ``history.jsonl`` (with
    its ``loss_curve.png`` / ``valid_curve.png``) and ``manifest.json`` (resolved config, seed, versions, input checksums) atomically to ``out_dir``."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "item_embeddings.npy", result.item_embeddings)
        torch.save(result.model.state_dict(), tmp / "model.pt")
        write_json(tmp / "metrics.json", metrics)
        (tmp / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.history), encoding="utf-8")
        write_curves(result.history, tmp / "history.jsonl")
        write_json(tmp / "manifest.json", provenance(config=to_dict(cfg), seed=cfg.seed, inputs=inputs))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m genrec.encoders.din --data DIR [--out DIR] [--log FILE] [key=value ...]``: train, evaluate, save."""
    import argparse

    from genrec.config import load_config
    from genrec.data.dataset import Dataset
    from genrec.data.split import leave_one_out
    from genrec.io import checksums

    p = argparse.ArgumentParser(prog="python -m genrec.encoders.din", description=main.__doc__)
    p.add_argument("--data", required=True, help="canonical dataset directory (genrec data prepare)")
    p.add_argument("--out", help="directory for the embeddings, model, metrics and manifest")
    p.add_argument("--log", help="JSONL file receiving one record per epoch while training")
    p.add_argument("--config", help="optional YAML with DINConfig keys")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="DINConfig overrides, e.g. epochs=10")
    args = p.parse_args(argv)
    cfg = load_config(DINConfig, args.config, args.overrides)
    split = leave_one_out(Dataset.load(args.data), cfg.max_history)
    t0 = time.perf_counter()
    result = train_din(split, cfg, progress=True, log_path=Path(args.log) if args.log else None)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result.model.to(resolve_device(cfg.device))
    metrics = {"train_seconds": round(train_s, 1), "best_epoch": result.best_epoch,
               "epochs_run": len(result.history), "valid_subset": result.valid_metrics,
               "valid": evaluate_din(result.model, split.valid, cfg.max_history, True, "valid (all users)"),
               "test": evaluate_din(result.model, split.test, cfg.max_history, True, "test (all users)")}
    metrics["full_eval_seconds"] = round(time.perf_counter() - t0, 1)
    result.model.cpu()
    print(json.dumps(metrics, indent=2))
    if args.out:
        save_result(result, cfg, args.out, metrics, checksums([Path(args.data) / "sequences.jsonl"]))
    return 0


if __name__ == "__main__":
    import sys

    from genrec.errors import GenrecError

    try:
        sys.exit(main())
    except GenrecError as e:  # one clear line and exit status 2, as the genrec CLI does
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
