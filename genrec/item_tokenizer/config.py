"""Recipe schema of ``genrec tokens build`` (see recipes/tokens_*.yaml and docs/item_tokenizer.md).

The encoder sections (``semantic.text``, ``behavior.din``, ``behavior.sasrec``) take the fields
of the encoders' own config dataclasses; they are checked against those schemas when the recipe
is loaded (importing the encoder modules only for the sections in use), so a misspelt key fails
before any training starts.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from genrec.config import from_dict
from genrec.errors import ConfigError

STREAMS = ("semantic", "behavior")


@dataclass
class KMeansConfig:
    """How one stream's codes are clustered (genrec.item_tokenizer.tree)."""

    method: str = "balanced"  # balanced (equal-size hierarchical) | plain (hierarchical) | residual (RQ-KMeans)
    # | sklearn (plain, each node clustered by sklearn.cluster.KMeans: the reference k-means)
    k: int | list[int] = 256  # branching per level: one K for all levels, or a list [K_0, K_1, ...]
    depth: int | str = 2  # levels; "auto" = smallest L with K_0*...*K_{L-1} >= items (unique when balanced)
    iters: int = 10  # Lloyd iterations per node before the balanced assignment
    tol: float = 0.01  # Lloyd stops once fewer than tol * points change cluster
    sample_per_cluster: int = 64  # centroids are fitted on at most K * this points of a node
    init: str = "k-means++"  # k-means++ | random
    refine: int = 2  # balanced k-means rounds (re-centre, re-assign) after the first balanced assignment
    threads: int = 1  # BLAS threads while clustering; 0 = library default (all cores), see docs
    # preprocessing of the embeddings before clustering
    # (genrec.item_tokenizer.preprocess). Centring alone does not move Euclidean k-means; with
    # `normalize` the clustering sees the directions of the centred vectors (cosine geometry).
    center: bool = True  # subtract the mean embedding (pooled LLM vectors share a large common part)
    normalize: bool = True  # then L2-normalise every row (spherical k-means on centred vectors)
    whiten: bool = False  # PCA-whiten after centring (unit variance in every direction); measured
    #                       worse on ML-100K and Scientific (docs/item_tokenizer.md)

    def __post_init__(self) -> None:
        if self.method not in ("balanced", "plain", "residual", "sklearn"):
            raise ValueError(f"kmeans.method must be balanced, plain, residual or sklearn, got {self.method!r}")
        ks = [self.k] if isinstance(self.k, int) else self.k
        if not isinstance(ks, list) or not ks or any(not isinstance(v, int) or isinstance(v, bool) or v < 2
                                                      for v in ks):
            raise ValueError(f"kmeans.k must be an integer >= 2 or a list of them, got {self.k!r}")
        if self.depth != "auto" and (not isinstance(self.depth, int) or self.depth < 1):
            raise ValueError(f"kmeans.depth must be a positive integer or 'auto', got {self.depth!r}")
        if isinstance(self.k, list) and isinstance(self.depth, int) and len(self.k) != self.depth:
            raise ValueError(f"kmeans.k lists {len(self.k)} levels but kmeans.depth is {self.depth}; "
                             "make them agree or set depth: auto")
        if self.init not in ("k-means++", "random"):
            raise ValueError(f"kmeans.init must be k-means++ or random, got {self.init!r}")
        if self.threads < 0:
            raise ValueError(f"kmeans.threads must be >= 0 (0 = all cores), got {self.threads}")
        if self.iters < 0 or self.refine < 0 or self.sample_per_cluster < 1 or not 0 <= self.tol < 1:
            raise ValueError("kmeans.iters and kmeans.refine must be >= 0, kmeans.sample_per_cluster >= 1, "
                             "kmeans.tol in [0, 1)")


@dataclass
class SemanticConfig:
    """Semantic stream: item text -> embedding -> codes."""

    encoder: str = "text"  # "text": embed item text with `text`; "precomputed": load `embeddings`
    embeddings: str | None = None  # .npy [num_items, D], rows in items.jsonl order (encoder: precomputed)
    text: Any = None  # genrec.encoders.text.TextEncoderConfig fields (model, fields, max_length, ...)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)

    def __post_init__(self) -> None:
        if self.encoder not in ("text", "precomputed"):
            raise ValueError(f"semantic.encoder must be text or precomputed, got {self.encoder!r}")
        if self.encoder == "precomputed" and not self.embeddings:
            raise ValueError("semantic.encoder is precomputed: set semantic.embeddings to an .npy file")


@dataclass
class BehaviorConfig:
    """Behavior stream: interactions -> item embedding table -> codes."""

    encoder: str = "din"  # din | sasrec | precomputed
    embeddings: str | None = None  # .npy [num_items, D], rows in items.jsonl order (encoder: precomputed)
    din: Any = None  # genrec.encoders.din.DINConfig fields (dim, epochs, num_negatives, ...)
    sasrec: Any = None  # genrec.encoders.sasrec.SASRecConfig fields (hidden, epochs, ...)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)

    def __post_init__(self) -> None:
        if self.encoder not in ("din", "sasrec", "precomputed"):
            raise ValueError(f"behavior.encoder must be din, sasrec or precomputed, got {self.encoder!r}")
        if self.encoder == "precomputed" and not self.embeddings:
            raise ValueError("behavior.encoder is precomputed: set behavior.embeddings to an .npy file")


@dataclass
class ColdStartConfig:
    """How `genrec tokens assign` codes new items."""

    neighbors: int = 10  # behavior embedding of a new item = mean over its k nearest semantic neighbours
    # Cold-start evaluation: build on the other items only (the behavior encoder never sees an
    # interaction with the held-out ones), then code the held-out share as new items. Same items as
    # `genrec baseline ... cold_items=` and `genrec train ... tasks.cold_items=` with the same seed.
    cold_items: float = 0.0  # share of the catalog held out (0 = off)
    cold_seed: int = 0  # which items are held out

    def __post_init__(self) -> None:
        if self.neighbors < 1:
            raise ValueError(f"cold_start.neighbors must be >= 1, got {self.neighbors}")
        if not 0.0 <= self.cold_items < 1.0:
            raise ValueError(f"cold_start.cold_items must be in [0, 1) (share of items held out), got "
                             f"{self.cold_items}")


@dataclass
class TokenizerConfig:
    """A dual-stream item tokenizer build."""

    name: str = "tokenizer"  # artifact directory: <out_dir>/<name>
    data: str = ""  # dataset directory (genrec data prepare / fetch); optional when both streams are precomputed
    out_dir: str = "tokenizers_out"  # parent directory of the artifact
    seed: int = 0  # seeds clustering, and the encoders unless their own `seed` is set
    max_history: int = 20  # history length of the leave-one-out split the behavior encoder trains on
    order: list[str] = field(default_factory=lambda: list(STREAMS))  # streams in index order
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    cache_dir: str | None = None  # text-embedding cache (default: <genrec cache>/embeddings)
    plots: bool = True  # write cluster-size PNGs
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"name must be a plain directory name, got {self.name!r}")
        if (not self.order or len(set(self.order)) != len(self.order)
                or any(s not in STREAMS for s in self.order)):
            raise ValueError(f"order must list distinct streams among {list(STREAMS)}, got {self.order!r}")
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")
        if self.cold_start.cold_items and "semantic" not in self.order:
            raise ValueError("cold_start.cold_items needs the semantic stream: held-out items are placed "
                             "from their text")
        if ("semantic" in self.order and self.semantic.encoder == "text") or self.semantic.text is not None:
            self.semantic.text = _sub_config("genrec.encoders.text", "TextEncoderConfig", self.semantic.text,
                                             "semantic.text", {})
        beh = self.behavior
        if ("behavior" in self.order and beh.encoder == "din") or beh.din is not None:
            beh.din = _sub_config("genrec.encoders.din", "DINConfig", beh.din, "behavior.din",
                                  {"seed": self.seed, "max_history": self.max_history})
            if beh.din.max_history > self.max_history:
                raise ValueError(f"behavior.din.max_history ({beh.din.max_history}) exceeds max_history "
                                 f"({self.max_history})")
        if ("behavior" in self.order and beh.encoder == "sasrec") or beh.sasrec is not None:
            beh.sasrec = _sub_config("genrec.encoders.sasrec", "SASRecConfig",
                                     beh.sasrec, "behavior.sasrec", {"seed": self.seed, "max_len": self.max_history})
            if beh.sasrec.max_len != self.max_history:
                raise ValueError(f"behavior.sasrec.max_len ({beh.sasrec.max_len}) must equal max_history "
                                 f"({self.max_history})")


def _sub_config(modules: str | tuple[str, ...], cls_name: str, value: Any, key: str,
                defaults: dict[str, Any]) -> Any:
    """Build an encoder's config dataclass from a recipe section (``None`` = its defaults);
    ``defaults`` fill keys the section leaves out (e.g. the tokenizer's seed)."""
    cls = None
    for mod in (modules,) if isinstance(modules, str) else modules:
        try:
            cls = getattr(importlib.import_module(mod), cls_name, None)
        except ImportError:
            continue
        if cls is not None:
            break
    if cls is None:
        raise ConfigError(f"{key} needs {cls_name} from {modules}, which is not available in this install")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} must be a mapping of {cls_name} fields, got {value!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    merged = {k: v for k, v in defaults.items() if k in names}
    merged.update(value or {})
    try:
        return from_dict(cls, merged, prefix=f"{key}.")
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if key in msg else f"{key}: {msg}") from None
