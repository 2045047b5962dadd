"""``genrec baseline``: train / fit a baseline on a dataset directory and write its artifacts.

``DIR2`` (``--out``) receives, all at once when the run succeeds (nothing when it fails):

- ``metrics.json``    ``{"valid": {"recall@5", ..., "ndcg@20"}, "test": {...}}``
- ``config.yaml``     the resolved config (usable again with ``--config``)
- ``provenance.json`` config, seed, library versions, dataset checksums, model and split
- ``train_log.jsonl`` one line per epoch plus a final line (SASRec)
- ``loss_curve.png``, ``valid_curve.png`` its training loss and validation metrics per epoch (SASRec);
  ``tensorboard/sasrec/`` with ``report_to: tensorboard``
- ``model.pt``        best-validation weights, loadable with :func:`genrec.baselines.artifact.load_sasrec` (SASRec)
- ``item_embeddings.npy`` the trained item table ``[items, hidden]`` in ``items.jsonl`` order (SASRec): a
  behavior stream for the item tokenizer (``behavior.encoder=precomputed behavior.embeddings=...``)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from genrec.baselines.artifact import (
    CHECKPOINT,
    CONFIG,
    ITEM_EMBEDDINGS,
    METRICS,
    PROVENANCE,
    TRAIN_LOG,
    among,
    metrics_record,
    save_checkpoint,
)
from genrec.baselines.popularity import PopularityConfig, cold_popularity, evaluate_popularity
from genrec.config import load_config, to_dict
from genrec.data.dataset import Dataset
from genrec.data.split import hold_out_items, leave_one_out, subset
from genrec.encoders.sasrec import SASRecConfig, train_sasrec
from genrec.encoders.text_items import item_text_features
from genrec.errors import ConfigError
from genrec.io import atomic_dir, checksums, provenance, write_json
from genrec.metrics import METRIC_KEYS, evaluate_scores

log = logging.getLogger(__name__)

CONFIGS: dict[str, type] = {"pop": PopularityConfig, "sasrec": SASRecConfig}
DATASET_FILES = ("items.jsonl", "sequences.jsonl", "stats.json", "manifest.json")


def run_baseline(data: str | Path, model: str, out: str | Path, config: str | Path | None = None,
                 overrides: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Load, split, train/fit, evaluate and write ``out`` atomically; returns the metrics record."""
    if model not in CONFIGS:
        raise ConfigError(f"unknown baseline {model!r}; choose one of: {', '.join(CONFIGS)}")
    data, out = Path(data), Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory; choose another output path")
    if out.resolve() == data.resolve():
        raise ConfigError(f"--out {out} is the dataset directory itself; choose a separate output directory")
    cfg = load_config(CONFIGS[model], config, overrides or [])
    ds = Dataset.load(data)
    full = split = leave_one_out(ds, max_history=cfg.max_len)
    cold = None
    if cfg.cold_items:
        split, cold = hold_out_items(full, cfg.cold_items, cfg.cold_seed)
        cold_users = np.flatnonzero(cold[split.test.targets])
        log.info("cold-start protocol: %d of %d items held out of training; %d test users have one as target",
                 int(cold.sum()), split.num_items, len(cold_users))
    inputs = checksums([data / name for name in DATASET_FILES])
    text = None
    if model == "sasrec" and cfg.item_embeddings != "id":
        text = item_text_features(ds.items, cfg.text, progress=progress, norm=cfg.text_norm)
    with atomic_dir(out) as tmp:
        test_cold = None
        if model == "pop":
            pop = evaluate_popularity(split, cfg, progress=progress)
            if cold is not None:
                counts = torch.as_tensor(cold_popularity(full, cold), dtype=torch.float32)
                test_cold = evaluate_scores(among(lambda h: counts.expand(len(h), -1), cold),
                                            subset(split.test, cold_users), cfg.max_len, batch_size=cfg.eval_batch_size,
                                            desc="test cold", progress=progress)
            seed, extra, valid, test = None, {}, pop.valid_metrics, pop.test_metrics
        else:
            res = train_sasrec(split, cfg, progress=progress, log_path=tmp / TRAIN_LOG, text_features=text,
                               absent=cold)
            save_checkpoint(res.model, cfg, tmp / CHECKPOINT)
            np.save(tmp / ITEM_EMBEDDINGS, res.model.item_embeddings())
            if cold is not None:
                res.model.eval()
                test_cold = evaluate_scores(among(res.model.score, cold), subset(split.test, cold_users), cfg.max_len,
                                            batch_size=cfg.eval_batch_size, desc="test cold", progress=progress)
            seed, valid, test = cfg.seed, res.valid_metrics, res.test_metrics
            extra = {"best_epoch": res.best_epoch, "epochs_run": len(res.history),
                     "train_seconds": round(res.seconds, 2)}
        if test_cold is not None:
            test_cold["users"] = len(cold_users)
            extra["cold_items"] = int(cold.sum())
        record = metrics_record(valid, test, test_cold)
        write_json(tmp / METRICS, record)
        (tmp / CONFIG).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
        prov = provenance(config=to_dict(cfg), seed=seed, inputs=inputs)
        prov.update({"model": model, "dataset": str(data.resolve()),
                     "dataset_stats": {k: ds.stats.get(k) for k in ("users", "items", "interactions")},
                     "split": {"protocol": "leave_one_out", "max_history": cfg.max_len}, **extra})
        write_json(tmp / PROVENANCE, prov)
    return record


def format_metrics(record: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table of ``metrics.json``."""
    lines = ["split      " + "  ".join(f"{k:>9}" for k in METRIC_KEYS)]
    for name in ("valid", "test", "test_cold"):
        if name in record:
            lines.append(f"{name:<10} " + "  ".join(f"{record[name][k]:9.4f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    record = run_baseline(args.data, args.model, args.out, args.config, args.overrides)
    print(format_metrics(record))
    print(f"wrote {args.out}/metrics.json")
    return 0
