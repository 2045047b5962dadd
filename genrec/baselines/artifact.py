"""A ``genrec baseline`` output directory: its files, the SASRec checkpoint, re-scoring on given users.

``DIR`` (``genrec baseline --out``) holds ``metrics.json``, ``config.yaml``, ``provenance.json``
and, for SASRec, ``train_log.jsonl`` and ``model.pt`` (:func:`save_checkpoint`). :func:`rescore`
evaluates a saved baseline again on a subset of users with its own settings (popularity counts
are refit from the training prefixes as the baseline did; SASRec's ``model.pt`` is loaded), so
``genrec evaluate`` compares a model and the baselines on the same users.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from genrec.config import from_dict, to_dict
from genrec.data.dataset import Dataset
from genrec.data.split import hold_out_items, leave_one_out, recorded_holdout, subset
from genrec.encoders.sasrec import SASRec, SASRecConfig, evaluate_sasrec
from genrec.errors import DataError
from genrec.io import atomic_file, read_json
from genrec.metrics import METRIC_KEYS

METRICS = "metrics.json"
CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "model.pt"
ITEM_EMBEDDINGS = "item_embeddings.npy"  # SASRec: its item table [N, H], items.jsonl order


def metrics_record(valid: dict[str, float], test: dict[str, float],
                   test_cold: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """The ``metrics.json`` shape: exactly :data:`~genrec.metrics.METRIC_KEYS` per split, plus
    ``test_cold`` (with its ``users`` count) under the cold-start protocol."""
    record = {"valid": {k: float(valid[k]) for k in METRIC_KEYS}, "test": {k: float(test[k]) for k in METRIC_KEYS}}
    if test_cold is not None:
        record["test_cold"] = {**{k: float(test_cold[k]) for k in METRIC_KEYS}, "users": int(test_cold["users"])}
    return record


def read_provenance(baseline_dir: str | Path) -> dict:
    """``provenance.json`` of a baseline directory (``{}`` when absent)."""
    path = Path(baseline_dir) / PROVENANCE
    return read_json(path) if path.is_file() else {}


def save_checkpoint(model: SASRec, cfg: SASRecConfig, path: str | os.PathLike) -> None:
    """Write weights plus what :func:`load_sasrec` needs to rebuild the model (atomically)."""
    with atomic_file(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "num_items": model.num_items, "config": to_dict(cfg)}, tmp)


def load_sasrec(path: str | os.PathLike) -> tuple[SASRec, SASRecConfig]:
    """Rebuild a model saved by :func:`save_checkpoint` (in eval mode)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = from_dict(SASRecConfig, ckpt["config"])
    model = SASRec(ckpt["num_items"], cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.max_len,
                   item_embeddings=cfg.item_embeddings, text_features=ckpt["state_dict"].get("text_adapter.features"),
                   adapter_hidden=cfg.adapter_hidden, adapter_dropout=cfg.adapter_dropout)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


def among(score_fn: Callable[[np.ndarray], torch.Tensor], items: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """``score_fn`` with every item outside ``items`` ``[N]`` bool ranked last: the cold-start
    ranking is among the held-out items only (the shelf of new items)."""
    keep = torch.from_numpy(np.asarray(items, dtype=bool))

    def scores(histories: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            s = score_fn(histories).float()
        return s.masked_fill(~keep.to(s.device), float("-inf"))

    return scores


def recorded_config(baseline_dir: str | Path) -> dict | None:
    """The resolved config a baseline directory recorded (``config.yaml``), or ``None`` without one."""
    path = Path(baseline_dir) / CONFIG
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else None


def holdout(baseline_dir: str | Path) -> tuple[float, int]:
    """``(cold_items, cold_seed)`` of a baseline directory's config (``(0.0, 0)``: no items held out)."""
    return recorded_holdout(recorded_config(baseline_dir))


def rescore(baseline_dir: str | Path, data_dir: str | Path, split: str = "test",
            user_indices: Sequence[int] | None = None, progress: bool = False,
            cold_only: bool = False, exclude_history: bool | None = None) -> dict[str, float]:
    """Metrics of a ``genrec baseline`` output directory on ``split``, on the given users only.

    Re-scores the saved baseline with its own settings, so on all users the result equals its
    ``metrics.json``. ``user_indices=None``: all users (read from ``metrics.json`` when the
    settings are the baseline's own). ``cold_only`` (baselines trained under the cold-start
    protocol) ranks the held-out items only, as its ``test_cold``. ``exclude_history`` overrides
    the baseline's own ``exclude_history`` (``None``: keep it), to score it under another
    evaluation's protocol.
    """
    from dataclasses import replace

    from genrec.baselines.popularity import PopularityConfig, cold_popularity, evaluate_counts, fit_counts
    from genrec.metrics import evaluate_scores

    bdir = Path(baseline_dir)
    own = recorded_config(bdir) or {}
    if exclude_history is not None and bool(own.get("exclude_history", False)) == exclude_history:
        exclude_history = None  # the baseline's own protocol: its metrics.json holds the all-user numbers
    if user_indices is None and (exclude_history is None or cold_only):
        return {k: float(v) for k, v in read_json(bdir / METRICS)[f"{split}_cold" if cold_only else split].items()}
    model = read_provenance(bdir).get("model")
    if model not in ("pop", "sasrec"):
        raise DataError(f"{bdir} is not a `genrec baseline` output (provenance.json names model {model!r}, "
                        "expected pop or sasrec); re-evaluating it on a user subset needs its saved model")
    ds = Dataset.load(data_dir)
    if model == "pop":
        cfg = from_dict(PopularityConfig, own)
        net = None
    else:
        net, cfg = load_sasrec(bdir / CHECKPOINT)
    if exclude_history is not None:
        cfg = replace(cfg, exclude_history=exclude_history)
    full = leave_one_out(ds, cfg.max_len)
    sp, cold = hold_out_items(full, cfg.cold_items, cfg.cold_seed) if cfg.cold_items else (full, None)
    every = getattr(sp, split)
    data = subset(every, np.arange(len(every)) if user_indices is None else user_indices)
    if cold_only:
        if cold is None:
            raise DataError(f"{bdir} was not trained under the cold-start protocol (cold_items=0): it has no "
                            "held-out items to rank")
        if net is None:
            counts = torch.as_tensor(cold_popularity(full, cold), dtype=torch.float32)
            score_fn = among(lambda h: counts.expand(len(h), -1), cold)
        else:
            score_fn = among(net.score, cold)
        return evaluate_scores(score_fn, data, cfg.max_len, batch_size=cfg.eval_batch_size,
                               desc=f"{model} {split} cold", progress=progress)
    if net is None:
        valid_counts, test_counts = fit_counts(sp, cfg)
        return evaluate_counts(test_counts if split == "test" else valid_counts, data, cfg, desc=f"pop {split}",
                               progress=progress)
    return evaluate_sasrec(net, data, cfg, desc=f"sasrec {split}", progress=progress)

