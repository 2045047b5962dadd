"""The files of a ``genrec train`` run directory: one place that knows them.

``genrec train`` writes, ``genrec recommend / evaluate / serve`` and the demo read::

    RUN/adapter_model.safetensors, adapter_config.json   (or full weights in ``full`` mode)
    RUN/tokenizer.json ...                                the extended tokenizer
    RUN/item_tokenizer/                                   copy of the item-code artifact
    RUN/catalog.jsonl                                     the items served (the dataset's items.jsonl)
    RUN/base_model.json                                   base model: name, local path, canonical hub id
    RUN/config.yaml, RUN/provenance.json                  resolved config, seed, versions, checksums
    RUN/train_log.jsonl, RUN/loss_curve.png               per-term training log
    RUN/tensorboard/                                      event files (training.report_to: tensorboard)
    RUN/item_head.safetensors, item_head.json             optional item head and its fit report (`genrec head`)
    RUN/README.md                                         model card, written last: present = finished
    RUN/checkpoints/                                      Trainer checkpoints (for --resume)

``genrec export`` writes the same layout (without log, curve and checkpoints) plus
``export.json``; a merged export holds full weights (``config.json``) instead of an adapter.
The model card starts with Hugging Face metadata (YAML front matter: ``library_name``,
``base_model``, ``tags``), read and written here.

Only file names and YAML here (no torch, no transformers), so the training and the inference
packages can both depend on it without depending on each other.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from genrec.errors import DataError

CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
CARD = "README.md"
TRAIN_LOG = "train_log.jsonl"
LOSS_CURVE = "loss_curve.png"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
ITEM_TOKENIZER = "item_tokenizer"
STAGING = ".staging"
ADAPTER_CONFIG = "adapter_config.json"
FULL_CONFIG = "config.json"
FULL_WEIGHTS = "model.safetensors"
CATALOG = "catalog.jsonl"
BASE_MODEL = "base_model.json"
EXPORT = "export.json"
ITEM_HEAD = "item_head.safetensors"
ITEM_HEAD_REPORT = "item_head.json"
CARD_TAGS = ("genrec", "recommendation", "generative-recommendation")
# What identifies a run's model for provenance (checksummed by ``genrec evaluate``).
IDENTITY_FILES = ("adapter_model.safetensors", ADAPTER_CONFIG, "model.safetensors", CONFIG, "tokenizer.json",
                  f"{ITEM_TOKENIZER}/item_codes.json", CATALOG, ITEM_HEAD)


def publish(stage: Path, run: Path) -> None:
    """Move every file of a finished ``stage`` directory into the run directory ``run`` (replacing
    what is there) and remove ``stage``. The model card moves last: a run counts as finished
    (:func:`is_finished`) only once everything else is in place."""
    for entry in sorted(stage.iterdir(), key=lambda p: p.name == CARD):
        dest = run / entry.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(entry, dest)
    stage.rmdir()


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


def has_adapter(run: str | Path) -> bool:
    """Whether ``run`` holds a PEFT adapter (else full weights: a ``full`` run or a merged export)."""
    return (Path(run) / ADAPTER_CONFIG).is_file()


def read_base(run: str | Path) -> dict[str, Any] | None:
    """The base-model record of ``run/base_model.json``; ``None`` for runs written without one."""
    path = Path(run) / BASE_MODEL
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a model card: the ``---``-fenced YAML front matter and the Markdown after it."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 3)
        if end != -1:
            meta = yaml.safe_load(text[4:end]) or {}
            if isinstance(meta, dict):
                return meta, text[end + 5:].lstrip("\n")
    return {}, text


def join_card(meta: Mapping[str, Any], body: str) -> str:
    """A model card from its metadata (front matter, omitted when empty) and Markdown body."""
    head = f"---\n{yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True)}---\n\n" if meta else ""
    return head + body.rstrip("\n") + "\n"


def card_metadata(meta: Mapping[str, Any], base: str | None, library: str, relation: str) -> dict[str, Any]:
    """``meta`` (e.g. what PEFT's ``save_pretrained`` wrote) with genrec's fields set.

    ``base``: the base model's canonical hub id (``base_model``; dropped when unknown, since a local
    path is no hub id); ``relation``: ``adapter`` or ``finetune`` (the ``base_model:`` tag);
    ``library``: ``peft`` or ``transformers``. Other keys and tags are kept; the genrec tags are added.
    """
    out = dict(meta)
    out["library_name"] = library
    out.setdefault("pipeline_tag", "text-generation")
    tags = [str(t) for t in out.get("tags") or [] if not str(t).startswith("base_model:")]
    if base:
        out["base_model"] = base
        tags.append(f"base_model:{relation}:{base}")
    else:
        out.pop("base_model", None)
    out["tags"] = tags + [t for t in CARD_TAGS if t not in tags]
    return out
