"""A ``genrec baseline`` output directory: its files, the SASRec checkpoint, re-scoring on given users.

``DIR`` (``genrec baseline --out``) holds ``metrics.json``, ``config.yaml``, ``provenance.json``
and, for SASRec, ``train_log.jsonl`` and ``model.pt`` (:func:`save_checkpoint`). :func:`rescore`
evaluates a saved baseline again on a subset of users with its own settings (popularity counts
are refit from the training prefixes as the baseline did; SASRec's ``model.pt`` is loaded), so
``genrec evaluate`` compares a model and the baselines on the same users.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from genrec.config import from_dict, to_dict
from genrec.data.dataset import Dataset
from genrec.data.split import hold_out_items, leave_one_out, subset
from genrec.encoders.sasrec import SASRec, SASRecConfig, evaluate_sasrec
from genrec.errors import DataError
from genrec.io import read_json
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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": model.state_dict(), "num_items": model.num_items, "config": to_dict(cfg)}, tmp)
    os.replace(tmp, path)


def load_sasrec(path: str | os.PathLike) -> tuple[SASRec, SASRecConfig]:
    """Rebuild a model saved by :func:`save_checkpoint` (in eval mode)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = from_dict(SASRecConfig, ckpt["config"])
    model = SASRec(ckpt["num_items"], cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.max_len,
                   item_embeddings=cfg.item_embeddings, text_features=ckpt["state_dict"].get("text_adapter.features"),
                   adapter_hidden=cfg.adapter_hidden)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


def rescore(baseline_dir: str | Path, data_dir: str | Path, split: str = "test",
            user_indices: Sequence[int] | None = None, progress: bool = False) -> dict[str, float]:
    """Metrics of a ``genrec baseline`` output directory on ``split``, on the given users only.

    Re-scores the saved baseline with its own settings, so on all users the result equals its
    ``metrics.json``. ``user_indices=None`` reads ``metrics.json``.
    """
    from genrec.baselines.popularity import PopularityConfig, evaluate_counts, fit_counts

    bdir = Path(baseline_dir)
    if user_indices is None:
        return {k: float(v) for k, v in read_json(bdir / METRICS)[split].items()}
    model = read_provenance(bdir).get("model")
    ds = Dataset.load(data_dir)
    if model == "pop":
        cfg = from_dict(PopularityConfig, yaml.safe_load((bdir / CONFIG).read_text(encoding="utf-8")))
        sp = leave_one_out(ds, cfg.max_len)
        if cfg.cold_items:
            sp, _ = hold_out_items(sp, cfg.cold_items, cfg.cold_seed)
        valid_counts, test_counts = fit_counts(sp, cfg)
        counts = test_counts if split == "test" else valid_counts
        return evaluate_counts(counts, subset(getattr(sp, split), user_indices), cfg, desc=f"pop {split}",
                               progress=progress)
    if model == "sasrec":
        net, cfg = load_sasrec(bdir / CHECKPOINT)
        sp = leave_one_out(ds, cfg.max_len)
        if cfg.cold_items:
            sp, _ = hold_out_items(sp, cfg.cold_items, cfg.cold_seed)
        return evaluate_sasrec(net, subset(getattr(sp, split), user_indices), cfg, desc=f"sasrec {split}",
                               progress=progress)
    raise DataError(f"{bdir} is not a `genrec baseline` output (provenance.json names model {model!r}, expected "
                    "pop or sasrec); re-evaluating it on a user subset needs its saved model")
