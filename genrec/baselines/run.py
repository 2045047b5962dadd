"""``genrec baseline``: train / fit a baseline on a dataset directory and write its artifacts.

``DIR2`` (``--out``) receives, all at once when the run succeeds (nothing when it fails):

- ``metrics.json``    ``{"valid": {"recall@5", ..., "ndcg@20"}, "test": {...}}``
- ``config.yaml``     the resolved config (usable again with ``--config``)
- ``provenance.json`` config, seed, library versions, dataset checksums, model and split
- ``train_log.jsonl`` one line per epoch plus a final line (SASRec)
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
import yaml

from genrec.baselines.artifact import (
    CHECKPOINT,
    CONFIG,
    ITEM_EMBEDDINGS,
    METRICS,
    PROVENANCE,
    TRAIN_LOG,
    metrics_record,
    save_checkpoint,
)
from genrec.baselines.popularity import PopularityConfig, evaluate_popularity
from genrec.config import load_config, to_dict
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out
from genrec.encoders.sasrec import SASRecConfig, train_sasrec
from genrec.errors import ConfigError
from genrec.io import atomic_dir, checksums, provenance, write_json
from genrec.metrics import METRIC_KEYS

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
    split = leave_one_out(ds, max_history=cfg.max_len)
    inputs = checksums([data / name for name in DATASET_FILES])
    with atomic_dir(out) as tmp:
        if model == "pop":
            pop = evaluate_popularity(split, cfg, progress=progress)
            record = metrics_record(pop.valid_metrics, pop.test_metrics)
            seed, extra = None, {}
        else:
            res = train_sasrec(split, cfg, progress=progress, log_path=tmp / TRAIN_LOG)
            save_checkpoint(res.model, cfg, tmp / CHECKPOINT)
            np.save(tmp / ITEM_EMBEDDINGS, res.model.item_embeddings())
            record = metrics_record(res.valid_metrics, res.test_metrics)
            seed = cfg.seed
            extra = {"best_epoch": res.best_epoch, "epochs_run": len(res.history),
                     "train_seconds": round(res.seconds, 2)}
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
    lines = ["split  " + "  ".join(f"{k:>9}" for k in METRIC_KEYS)]
    for name in ("valid", "test"):
        lines.append(f"{name:<6} " + "  ".join(f"{record[name][k]:9.4f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    record = run_baseline(args.data, args.model, args.out, args.config, args.overrides)
    print(format_metrics(record))
    print(f"wrote {args.out}/metrics.json")
    return 0
