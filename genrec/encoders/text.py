"""Semantic item embeddings from item text, with an on-disk cache per text.

Two kinds of model:

- ``causal`` (a LLaMA-family LM such as the embedded SmolLM2-135M): masked mean of the last
  hidden state over the text's tokens (padding excluded);
- ``sentence`` (a BERT-style sentence encoder such as the embedded all-MiniLM-L6-v2): the
  model's own pooling (mean over tokens, or CLS) followed by L2 normalisation when its
  ``modules.json`` lists a Normalize step, as sentence-transformers does.

Without a ``template`` each configured field of an item is embedded as its own text
(``"Title: ..."``, ``"Description: ..."``) and the item vector is the mean over the fields the
item has; items with none of the fields embed their id. With a ``template`` (a ``str.format``
string over the item's fields) each item is one text.

Every text's vector is cached under ``<cache>/embeddings/<space>/`` where ``space`` hashes the
model identity, kind, ``max_length`` and dtype, and each row is keyed by the sha256 of its text:
rebuilding re-embeds nothing, and adding items embeds only their new texts.

Under ``accelerate launch`` / ``torchrun`` the texts to embed are split across the processes
(whole batches, round robin, each process on its own device) and gathered back, so N processes
give the same vectors as one, about N times faster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.data.dataset import TEXT_FIELDS, Item
from genrec.errors import ConfigError, DataError
from genrec.hub import ModelSource, as_dtype, load_causal_lm, load_encoder, resolve_model
from genrec.io import atomic_file, write_json
from genrec.registry import cache_dir as genrec_cache_dir
from genrec.runtime import Ranks, resolve_device, torch_threads

log = logging.getLogger(__name__)

POOLING_VERSION = 1  # bump when pooling changes, so old cached rows are not reused
CACHE_EVERY = 2048  # texts per cache shard written while embedding: an interrupted run keeps its work


@dataclass
class TextEncoderConfig:
    """How item texts become semantic embeddings."""

    model: str = "smollm2-135m"  # embedded alias (smollm2-135m, minilm), local path or hub name
    kind: str = "auto"  # auto | causal | sentence (auto: from the model's architecture)
    fields: list[str] = field(default_factory=lambda: list(TEXT_FIELDS))  # item fields embedded and averaged
    template: str | None = None  # e.g. "{title} by {brand}: {description}"; one text per item when set
    max_length: int = 128  # tokens per text; longer texts are truncated
    batch_size: int = 32  # texts per forward pass
    cache: bool = True  # reuse and store per-text vectors under <cache>/embeddings
    num_threads: int | None = None  # torch CPU threads while embedding (None: torch's default)
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:1, mps
    dtype: str = "float32"  # float32 | bfloat16 | float16 for the model's weights

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "causal", "sentence"):
            raise ValueError(f"text_encoder.kind must be auto, causal or sentence, got {self.kind!r}")
        if not self.fields:
            raise ValueError("text_encoder.fields must name at least one item field (e.g. [title])")
        if self.max_length < 1 or self.batch_size < 1:
            raise ValueError("text_encoder.max_length and text_encoder.batch_size must be >= 1")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("text_encoder.num_threads must be >= 1 or null")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"text_encoder.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


def item_texts(item: Item, cfg: TextEncoderConfig) -> list[str]:
    """The texts embedded for ``item``: one per non-empty field, one from the template, or its id."""
    values = {name: _field_value(item, name) for name in cfg.fields}
    if not any(values.values()):
        return [item.item_id]
    if cfg.template is None:
        return [item.text([name]) for name, value in values.items() if value]
    mapping = {"item_id": item.item_id, **{k: _field_value(item, k) for k in (*TEXT_FIELDS, *item.extra)}}
    try:
        return [cfg.template.format_map(mapping)]
    except KeyError as e:
        raise ConfigError(f"text_encoder.template refers to {{{e.args[0]}}}, which item {item.item_id!r} lacks; "
                          f"available: {', '.join('{' + k + '}' for k in mapping)}") from None
    except (ValueError, IndexError) as e:
        raise ConfigError(f"text_encoder.template {cfg.template!r} is not a valid format string ({e})") from None


def items_without_text(items: list[Item], cfg: TextEncoderConfig) -> list[str]:
    """Ids of the items that have none of ``cfg.fields`` (their id is embedded instead)."""
    return [it.item_id for it in items if not any(_field_value(it, name) for name in cfg.fields)]


def _field_value(item: Item, name: str) -> str:
    value = getattr(item, name, None) if name in TEXT_FIELDS else item.extra.get(name)
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return str(value).strip() if value is not None else ""


class TextEncoder:
    """A loaded model + tokenizer mapping texts to pooled vectors ``[T, H]``."""

    def __init__(self, cfg: TextEncoderConfig, source: ModelSource | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)  # before any loading: a missing GPU fails at once
        self.source = source or resolve_model(cfg.model)
        self.kind = cfg.kind if cfg.kind != "auto" else detect_kind(self.source)
        self.max_length = cfg.max_length
        self.normalize = False
        self.cls_pooling = False
        dtype = as_dtype(cfg.dtype)
        if self.kind == "causal":
            lm, self.tokenizer = load_causal_lm(self.source, dtype=dtype, device=str(self.device))
            self.model = lm.base_model  # the decoder stack: skips the [T, L, vocab] LM head
        else:
            self.model, self.tokenizer = load_encoder(self.source, dtype=dtype, device=str(self.device))
            self.normalize, self.cls_pooling = _sentence_pooling(Path(self.source.path))
            limit = getattr(self.tokenizer, "model_max_length", None)
            if isinstance(limit, int) and limit < self.max_length:
                self.max_length = limit
        self.model.eval()

    @property
    def identity(self) -> str:
        return self.source.identity

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        """Pooled float32 vectors ``[T, H]`` for one batch of texts.

        Padding is always on the right, whatever the tokenizer's default: real tokens then keep
        the positions they have alone (left padding shifts BERT's absolute positions), and a
        causal mask keeps them from seeing the padding, so batching does not change a vector.
        """
        enc = self.tokenizer(texts, padding=True, padding_side="right", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        keep = ("input_ids", "attention_mask") + (("token_type_ids",) if self.kind == "sentence" else ())
        enc = {k: v.to(self.device) for k, v in enc.items() if k in keep}
        hidden = self.model(**enc).last_hidden_state.float()  # [T, L, H]
        mask = enc["attention_mask"]
        if self.cls_pooling:
            pooled = hidden[:, 0]
        else:
            pooled = masked_mean(hidden, mask)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy().astype(np.float32)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, L, H]`` over positions where ``mask [B, L]`` is 1 → ``[B, H]``.

    Padded positions are zeroed with ``masked_fill`` rather than multiplied by 0, so a NaN in a
    padded position (possible for fully masked rows) cannot leak into the mean.
    """
    keep = mask.bool().unsqueeze(-1)
    summed = hidden.masked_fill(~keep, 0.0).sum(dim=1)
    return summed / keep.sum(dim=1).clamp(min=1).to(hidden.dtype)


def detect_kind(src: ModelSource) -> str:
    """``causal`` for GGUF / ``*ForCausalLM`` models, ``sentence`` for encoders (e.g. BertModel)."""
    if src.gguf_file:
        return "causal"
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(src.path)
    except OSError as e:
        raise ConfigError(f"cannot read the config of model {src.name!r} ({e}); set text_encoder.kind "
                          "explicitly or check the name") from None
    archs = getattr(config, "architectures", None) or []
    if archs:
        return "causal" if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) else "sentence"
    if src.kind == "local" and (Path(src.path) / "modules.json").is_file():
        return "sentence"
    return "causal"


def _sentence_pooling(path: Path) -> tuple[bool, bool]:
    """``(normalize, cls_pooling)`` from a sentence-transformers layout; mean pooling otherwise."""
    normalize = cls = False
    modules = path / "modules.json"
    if modules.is_file():
        for mod in json.loads(modules.read_text(encoding="utf-8")):
            kind = str(mod.get("type", ""))
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling") and (path / mod.get("path", "") / "config.json").is_file():
                pool = json.loads((path / mod["path"] / "config.json").read_text(encoding="utf-8"))
                cls = bool(pool.get("pooling_mode_cls_token"))
                if not (cls or pool.get("pooling_mode_mean_tokens", True)):
                    raise ConfigError(f"{path / mod['path'] / 'config.json'}: only mean or CLS pooling is "
                                      "supported for sentence encoders")
    return normalize, cls


def embed_items(items: list[Item], cfg: TextEncoderConfig | None = None, cache_dir: str | Path | None = None,
                progress: bool = True, encoder: TextEncoder | None = None) -> np.ndarray:
    """Semantic embeddings ``[N, H]`` (float32) for ``items``, in order.

    ``encoder`` reuses an already loaded model (its own model settings then apply); otherwise
    one is loaded only if some text is missing from the cache. ``cache_dir`` defaults to
    ``<genrec cache>/embeddings``.
    """
    cfg = cfg or TextEncoderConfig()
    if not items:
        raise DataError("no items to embed: the item list is empty")
    per_item = [item_texts(it, cfg) for it in items]
    unique = list(dict.fromkeys(t for texts in per_item for t in texts))
    if encoder is not None:
        source, kind, model_cfg = encoder.source, encoder.kind, encoder.cfg
    else:
        source, model_cfg = resolve_model(cfg.model), cfg
        kind = cfg.kind if cfg.kind != "auto" else detect_kind(source)
    # What changes a text's vector; batch size and device only move it by float rounding.
    space = {"model": source.identity, "kind": kind, "max_length": model_cfg.max_length,
             "dtype": model_cfg.dtype, "pooling": POOLING_VERSION}
    cache = None
    if cfg.cache:
        try:
            cache = EmbeddingCache.open(cache_dir, space)
        except OSError as e:
            log.warning("embedding cache unavailable (%s); embedding without it", e)
    vectors = cache.get(unique) if cache is not None else {}
    missing = [t for t in unique if t not in vectors]
    ranks = Ranks()
    if ranks.world > 1:  # embed what any process misses (caches are per machine), in one order everywhere
        missed = set().union(*ranks.gather(missing))
        missing = [t for t in unique if t in missed]
        vectors = {t: v for t, v in vectors.items() if t not in missed}
    log.info("embedding %d texts of %d items with %s (%d cached)", len(missing), len(items), source.name,
             len(unique) - len(missing))
    if missing:
        if encoder is None:
            encoder = TextEncoder(cfg, source)
        store = None
        if cache is not None:
            def store(rows: list[int], vecs: np.ndarray) -> None:
                try:
                    cache.put([missing[i] for i in rows], vecs)
                except OSError as e:  # the vectors are still good; only the next run pays again
                    log.warning("could not store embeddings in %s (%s)", cache.root, e)
        new = encode_texts(encoder, missing, cfg, progress=progress, checkpoint=store)
        vectors.update(zip(missing, new))
    dim = len(next(iter(vectors.values())))
    out = np.empty((len(items), dim), dtype=np.float32)
    for i, texts in enumerate(per_item):
        out[i] = np.mean([vectors[t] for t in texts], axis=0)
    return out


def encode_texts(encoder: TextEncoder, texts: list[str], cfg: TextEncoderConfig, progress: bool = True,
                 checkpoint: Callable[[list[int], np.ndarray], None] | None = None) -> np.ndarray:
    """Vectors ``[T, H]`` for ``texts`` in order; batched longest-first to cut padding.

    ``checkpoint(rows, vectors)`` receives the finished rows every :data:`CACHE_EVERY` texts and
    at the end (the embedding cache stores them, so an interrupted run loses at most that much).
    Under several processes (:class:`~genrec.runtime.Ranks`) each encodes every N-th batch of the
    same longest-first order and every process receives all vectors: batches, hence vectors, are
    those of a single-process run; ``checkpoint`` sees this process's rows only.
    """
    lengths = [len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
    ranks = Ranks()
    mine = [batches[b] for b in ranks.mine(len(batches))]
    out: np.ndarray | None = None
    done: list[int] = []
    with torch_threads(cfg.num_threads), tqdm(total=sum(map(len, mine)), desc="embedding texts", unit="text",
                                         disable=not progress or not ranks.is_main) as bar:
        for b, idx in enumerate(mine):
            vec = encoder.encode([texts[i] for i in idx])
            if out is None:
                out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
            bad = ~np.isfinite(vec).all(axis=1)
            if bad.any():
                text = texts[idx[int(np.argmax(bad))]]
                raise DataError(f"the embedding of text {text[:80]!r} is not finite (NaN/inf) with model "
                                f"{encoder.source.name!r} in {encoder.cfg.dtype}; half precision overflows "
                                "on some models (use text_encoder.dtype=float32), in float32 the weights "
                                "themselves are broken")
            out[idx] = vec
            bar.update(len(idx))
            done.extend(idx)
            if checkpoint is not None and (len(done) >= CACHE_EVERY or b == len(mine) - 1):
                checkpoint(done, out[done])
                done = []
    if ranks.world > 1:
        rows = [i for idx in mine for i in idx]
        for got_rows, got in ranks.gather((rows, out[rows] if out is not None else None)):
            if got is not None:
                if out is None:
                    out = np.empty((len(texts), got.shape[1]), dtype=np.float32)
                out[got_rows] = got
    assert out is not None
    return out


class EmbeddingCache:
    """Vectors of one embedding space keyed by sha256 of their text, in append-only ``.npz`` shards.

    Each :meth:`put` writes one new shard atomically, so concurrent readers never see a partial
    file; past ``MAX_SHARDS`` shards they are merged into one.
    """

    MAX_SHARDS = 8

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, cache_dir: str | Path | None, space: dict[str, Any]) -> EmbeddingCache:
        base = Path(cache_dir) if cache_dir is not None else genrec_cache_dir() / "embeddings"
        root = base / hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()[:16]
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "space.json").is_file():
            write_json(root / "space.json", space)  # lets a person tell the spaces apart
        return cls(root)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _shards(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.npz"))

    def _read(self, shard: Path) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(shard) as z:
                return z["keys"], z["vectors"]
        except FileNotFoundError:  # merged away by a concurrent writer
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            log.warning("ignoring unreadable embedding cache shard %s (%s)", shard, e)
            return None

    def get(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``{text: vector [H]}`` for the texts present in the cache."""
        wanted = {self.key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        for shard in self._shards():
            data = self._read(shard)
            if data is None:
                continue
            keys, vectors = data
            for row, k in enumerate(keys.tolist()):
                text = wanted.get(k)
                if text is not None and text not in found:
                    found[text] = vectors[row].astype(np.float32)
        return found

    def put(self, texts: list[str], vectors: np.ndarray) -> None:
        """Store ``vectors [T, H]`` for ``texts`` as one new shard."""
        keys = np.asarray([self.key(t) for t in texts])
        name = hashlib.sha256("".join(keys.tolist()).encode()).hexdigest()[:16]
        self._write(self.root / f"shard-{name}.npz", keys, np.asarray(vectors, dtype=np.float32))
        shards = self._shards()
        if len(shards) > self.MAX_SHARDS:
            self._merge(shards)

    def _write(self, path: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=keys, vectors=vectors)

    def _merge(self, shards: list[Path]) -> None:
        rows: dict[str, np.ndarray] = {}
        for shard in shards:
            data = self._read(shard)
            if data is not None:
                for k, v in zip(data[0].tolist(), data[1]):
                    rows.setdefault(k, v)
        keys = np.asarray(list(rows))
        name = hashlib.sha256("".join(keys.tolist()).encode()).hexdigest()[:16]
        merged = self.root / f"shard-{name}.npz"
        self._write(merged, keys, np.stack(list(rows.values())).astype(np.float32))
        for shard in shards:
            if shard != merged:
                with contextlib.suppress(FileNotFoundError):
                    shard.unlink()
