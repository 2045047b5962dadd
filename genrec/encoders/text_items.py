"""Item representations from item text for sequential models (SASRec ``item_embeddings: text | text+id``).

An LLM (or sentence encoder) embeds each item's text once (:func:`item_text_features`, the same
encoder and on-disk cache as the item tokenizer's semantic stream); the vectors stay frozen and
a small learned MLP (:class:`TextAdapter`) maps them into the model's item space. Items then
share what the text says about them: an item with few or no interactions still gets a
representation, and an item added to the catalog after training only needs its text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrec.data.dataset import Item

ITEM_EMBEDDINGS = ("id", "text", "text+id")
TEXT_NORMS = ("standardize", "whiten")
ID_INITS = ("normal", "zero")


def standardize(x: np.ndarray) -> np.ndarray:
    """Centre each dimension and scale it to unit variance over the items (``[N, D]`` float32).

    Mean-pooled LLM states share a large common direction and very unequal dimension scales;
    standardising lets the adapter start from features of comparable size.
    """
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(std > 1e-6, std, 1.0)).astype(np.float32)


def whiten(x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """PCA-whiten the items' text vectors ``[N, D]`` → ``[N, D]`` float32.

    Centres them and rotates onto the principal axes of their covariance, each scaled to unit
    variance, so no handful of directions (the encoder's anisotropy) dominates the adapter's
    input. ``eps`` (relative to the largest eigenvalue) keeps near-empty directions from being
    blown up into noise.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    val, vec = np.linalg.eigh(x.T @ x / max(len(x), 1))
    val = np.clip(val, 0.0, None)
    return ((x @ vec) / np.sqrt(val + eps * max(float(val.max()), 1e-12))).astype(np.float32)


def normalize_features(x: np.ndarray, norm: str = "standardize") -> np.ndarray:
    """``x`` ``[N, D]`` under ``norm``: ``standardize`` (per dimension) or ``whiten`` (PCA)."""
    if norm not in TEXT_NORMS:
        raise ValueError(f"text_norm must be one of {TEXT_NORMS}, got {norm!r}")
    return standardize(x) if norm == "standardize" else whiten(x)


class TextAdapter(nn.Module):
    """Frozen text features ``[N, D]`` → item table ``[N, H]`` through a small MLP.

    Args:
        features: normalised text vectors ``[N, D]``, row ``i`` = item index ``i`` (kept as a
            buffer, so checkpoints are self-contained).
        hidden: output width ``H`` (the sequence model's hidden size).
        adapter_hidden: inner width of the two-layer MLP; ``0`` = a single linear projection.
        dropout: dropout between the MLP's layers.
    """

    def __init__(self, features: torch.Tensor, hidden: int, adapter_hidden: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("features", features.float())
        dim = features.shape[1]
        if adapter_hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(dim, adapter_hidden), nn.GELU(), nn.Dropout(dropout),
                                                nn.Linear(adapter_hidden, hidden))
        else:
            self.net = nn.Linear(dim, hidden)

    def forward(self) -> torch.Tensor:
        """The text part of the item table ``[N, H]``."""
        return self.net(self.features)


def item_text_features(items: list[Item], text_cfg: object, cache_dir: str | Path | None = None,
                       progress: bool = True, norm: str = "standardize") -> np.ndarray:
    """Normalised text vectors ``[N, D]`` of ``items`` (``items.jsonl`` order; ``norm``: see
    :func:`normalize_features`).

    ``text_cfg`` is a :class:`~genrec.encoders.text.TextEncoderConfig`; vectors are read from and
    written to the same per-text cache the item tokenizer's semantic stream uses.
    """
    from genrec.encoders.text import embed_items

    return normalize_features(embed_items(items, text_cfg, cache_dir=cache_dir, progress=progress), norm)
