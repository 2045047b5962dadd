"""Embedding preprocessing before clustering: centre, optionally whiten and L2-normalise.

Pooled LLM states share a large common component: mean-pooled SmolLM2-135M vectors of two
random Scientific items have cosine similarity of about 0.97 (docs/item_tokenizer.md). k-means on
such vectors spends its centroids on the few directions of largest spread that the shared
component and a handful of outlier dimensions dominate. Each stream's ``kmeans`` section
therefore transforms the embeddings first (all affine or per-row, fitted on the build items):

1. ``center`` (default on): subtract the mean embedding;
2. ``whiten`` (default off): PCA whitening, ``x W`` with ``W = V diag(1 / sqrt(max(lambda, eps
   * lambda_max)))`` from the eigendecomposition of the covariance (implies centring);
3. ``normalize`` (default off): scale every row to unit L2 norm (spherical k-means).

The fitted transform is stored with the stream's tree (``centroids_<stream>.npz``); centroids
live in the transformed space, ``embeddings_<stream>.npy`` keeps the encoder's raw output, and
cold-start items go through the same stored transform before they are routed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 65536
EIG_FLOOR = 1e-6  # whitening: eigenvalues below EIG_FLOOR * largest are raised to it


@dataclass
class Preprocess:
    """A fitted transform ``[N, D] -> [N, D]``: ``x - mean``, then ``@ whiten``, then row normalisation."""

    mean: np.ndarray | None = None  # [D] float32
    whiten: np.ndarray | None = None  # [D, D] float32
    normalize: bool = False

    @property
    def is_identity(self) -> bool:
        return self.mean is None and self.whiten is None and not self.normalize

    def describe(self) -> dict[str, bool]:
        return {"center": self.mean is not None, "whiten": self.whiten is not None, "normalize": self.normalize}

    @classmethod
    def fit(cls, x: np.ndarray, center: bool = True, whiten: bool = False, normalize: bool = False) -> Preprocess:
        """Fit on ``x [N, D]`` (chunked, float64 sums, so the result does not depend on chunking order)."""
        n, d = x.shape
        mean = None
        if center or whiten:
            total = np.zeros(d, dtype=np.float64)
            for s in range(0, n, CHUNK):
                total += np.asarray(x[s:s + CHUNK], dtype=np.float64).sum(axis=0)
            mean = (total / max(n, 1)).astype(np.float32)
        w = None
        if whiten:
            cov = np.zeros((d, d), dtype=np.float64)
            for s in range(0, n, CHUNK):
                block = np.asarray(x[s:s + CHUNK], dtype=np.float64) - mean
                cov += block.T @ block
            cov /= max(n - 1, 1)
            lam, vec = np.linalg.eigh(cov)
            lam = np.maximum(lam, EIG_FLOOR * max(float(lam.max()), 1e-30))
            vec *= np.sign(vec[np.argmax(np.abs(vec), axis=0), np.arange(d)])  # deterministic signs
            w = (vec / np.sqrt(lam)).astype(np.float32)
        return cls(mean, w, bool(normalize))

    def apply(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Transformed float32 copy of ``x [N, D]`` (or ``x`` itself, modified, with ``inplace``)."""
        out = x if inplace else np.array(x, dtype=np.float32)
        if out.dtype != np.float32:
            raise TypeError("in-place preprocessing needs a float32 array")
        if self.is_identity:
            return out
        for s in range(0, out.shape[0], CHUNK):
            block = out[s:s + CHUNK]
            if self.mean is not None:
                block -= self.mean
            if self.whiten is not None:
                block[...] = block @ self.whiten
            if self.normalize:
                block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"pre_meta": np.array(json.dumps(self.describe()))}
        if self.mean is not None:
            arrays["pre_mean"] = self.mean
        if self.whiten is not None:
            arrays["pre_whiten"] = self.whiten
        return arrays

    @classmethod
    def from_arrays(cls, z: Any) -> Preprocess:
        """From an opened ``.npz``; files written before preprocessing existed give the identity."""
        if "pre_meta" not in z:
            return cls()
        meta = json.loads(str(z["pre_meta"]))
        return cls(z.get("pre_mean"), z.get("pre_whiten"),
                   bool(meta.get("normalize", False)))


def mean_pair_cosine(x: np.ndarray, pairs: int = 2000, seed: int = 0) -> float:
    """Mean cosine similarity of ``pairs`` random pairs of distinct rows of ``x`` (seeded)."""
    n = x.shape[0]
    if n < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, pairs)
    b = (a + rng.integers(1, n, pairs)) % n  # never the same row
    xa, xb = np.asarray(x[a], np.float64), np.asarray(x[b], np.float64)
    num = (xa * xb).sum(axis=1)
    den = np.maximum(np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1), 1e-12)
    return float((num / den).mean())
