"""The files of a ``genrec train`` run directory: one place that knows them.

``genrec train`` writes, ``genrec recommend / evaluate / serve`` and the demo read::

    RUN/adapter_model.safetensors, adapter_config.json   (or full weights in ``full`` mode)
    RUN/tokenizer.json ...                                the extended tokenizer
    RUN/item_tokenizer/                                   copy of the item-code artifact
    RUN/config.yaml, RUN/provenance.json                  resolved config, seed, versions, checksums
    RUN/train_log.jsonl, RUN/loss_curve.png               per-term training log
    RUN/README.md                                         model card, written last: present = finished
    RUN/checkpoints/                                      Trainer checkpoints (for --resume)

Only file names and YAML here (no torch, no transformers), so the training and the inference
packages can both depend on it without depending on each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from genrec.errors import DataError

CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
CARD = "README.md"
TRAIN_LOG = "train_log.jsonl"
LOSS_CURVE = "loss_curve.png"
CHECKPOINTS = "checkpoints"
ITEM_TOKENIZER = "item_tokenizer"
STAGING = ".staging"
ADAPTER_CONFIG = "adapter_config.json"
FULL_CONFIG = "config.json"
FULL_WEIGHTS = "model.safetensors"
# What identifies a run's model for provenance (checksummed by ``genrec evaluate``).
IDENTITY_FILES = ("adapter_model.safetensors", ADAPTER_CONFIG, "model.safetensors", CONFIG, "tokenizer.json",
                  f"{ITEM_TOKENIZER}/item_codes.json")


def has_checkpoint(run: str | Path) -> bool:
    """Whether ``run/checkpoints`` holds a Trainer checkpoint to resume from."""
    ckpt = Path(run) / CHECKPOINTS
    return ckpt.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpt.iterdir())


def is_finished(run: str | Path) -> bool:
    """Whether training wrote its final artifacts (the model card is written last)."""
    return (Path(run) / CARD).is_file()


def require_loadable(run: str | Path) -> Path:
    """``run`` as a Path; :class:`DataError` unless it holds a config and an adapter or full weights."""
    run = Path(run)
    if not (run / CONFIG).is_file() or not ((run / ADAPTER_CONFIG).is_file() or (run / FULL_CONFIG).is_file()):
        raise DataError(f"{run} is not a finished genrec run directory (config.yaml and adapter_config.json or "
                        "config.json expected); train one with `genrec train --config recipes/train_ml100k.yaml`")
    return run


def read_config(run: str | Path) -> dict[str, Any]:
    """The resolved training config recorded in ``run/config.yaml`` (``{}`` when empty)."""
    return yaml.safe_load((Path(run) / CONFIG).read_text(encoding="utf-8")) or {}
