"""Cold start: codes for new catalog items without rebuilding the tokenizer.

A new item has text but no interactions, so:

1. its semantic embedding comes from the text encoder recorded in config.json (or is given);
2. its behavior embedding is the mean behavior embedding of its ``k`` nearest existing items by
   semantic cosine similarity, measured after the semantic stream's preprocessing (centred: raw
   pooled LLM vectors are all nearly parallel), as items that read alike tend to be consumed alike;
3. each embedding goes through its stream's stored preprocessing and is routed down its stream's stored tree: nearest centroid per level for plain
   and residual trees; in balanced trees (whose cells are not Voronoi cells) the levels above
   the last follow the path of the nearest existing item in that stream, and the last level
   takes the nearest child;
4. the index must stay unique: if the routed index is already taken, the last position (the
   final level of the last stream) moves to the next-nearest child, then to a code no item
   uses under that prefix; only if all ``K`` are taken does the item join a ``<d_n>`` group
   (allowed only when that group is already disambiguated, so no index becomes a prefix of
   another).

Existing items keep their codes and token ids (tokens.json is append-only); the artifact is
rewritten atomically with ``version`` incremented.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from genrec.config import from_dict
from genrec.data.dataset import Item
from genrec.errors import DataError
from genrec.io import atomic_dir, write_json
from genrec.item_tokenizer.artifact import ItemTokenizer, load_item_tokenizer, write_item_codes
from genrec.item_tokenizer.codebook import Codebook
from genrec.item_tokenizer.preprocess import Preprocess
from genrec.item_tokenizer.stats import summary_stats

CHUNK = 65536


def nearest_rows(new: np.ndarray, table: np.ndarray, k: int, cosine: bool = False,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Indices ``[M, k]`` of the ``k`` rows of ``table [N, D]`` nearest to each row of
    ``new [M, D]`` (Euclidean, or cosine similarity), nearest first, after ``transform`` (applied
    to both); chunked over ``N`` so a memory-mapped million-row table never loads at once."""
    k = min(k, table.shape[0])
    q = np.asarray(new, dtype=np.float32)
    if transform is not None:
        q = transform(q)
    if cosine:
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for s in range(0, table.shape[0], CHUNK):
        block = np.asarray(table[s:s + CHUNK], dtype=np.float32)
        if transform is not None:
            block = transform(block)
        if cosine:
            score = q @ (block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)).T
        else:  # larger is nearer: -|b|^2 + 2 q.b  (|q|^2 is the same for every row)
            score = 2.0 * (q @ block.T) - np.einsum("ij,ij->i", block, block)[None, :]
        sims = np.concatenate([best_s, score], axis=1)
        ids = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + len(block)), score.shape)], axis=1)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(sims, top, 1), np.take_along_axis(ids, top, 1)
    return best_i


def semantic_neighbors(new: np.ndarray, existing: np.ndarray, k: int,
                       preprocess: Preprocess | None = None) -> np.ndarray:
    """The ``k`` most cosine-similar existing items ``[M, k]`` per new semantic embedding,
    compared after ``preprocess`` (the semantic tree's stored transform)."""
    return nearest_rows(new, existing, k, cosine=True, transform=None if preprocess is None else preprocess.apply)


def _semantic_embeddings(tok: ItemTokenizer, items: list[Item], given: np.ndarray | None,
                         progress: bool) -> np.ndarray:
    dim = int(tok.embeddings("semantic").shape[1])
    if given is None:
        enc = tok.config.get("encoders", {}).get("semantic", {})
        if enc.get("encoder") != "text":
            raise DataError(f"tokenizer {tok.path} was built from precomputed semantic embeddings: give each new "
                            f"item an \"embedding\" list of {dim} floats in the JSONL (same model as the build)")
        from genrec.encoders.text import TextEncoderConfig, embed_items

        cfg = from_dict(TextEncoderConfig, enc["config"], prefix="semantic.text.")
        given = embed_items(items, cfg, cache_dir=tok.config["config"].get("cache_dir"), progress=progress)
    given = np.asarray(given, dtype=np.float32)
    if given.shape != (len(items), dim):
        raise DataError(f"new items' semantic embeddings have shape {list(given.shape)}, expected "
                        f"[{len(items)}, {dim}] (the tokenizer's semantic width)")
    bad = np.flatnonzero(~np.isfinite(given).all(axis=1))
    if len(bad):
        raise DataError(f"{len(bad)} new item embedding(s) contain NaN or inf, e.g. "
                        f"{[items[i].item_id for i in bad[:5]]}")
    return given


def assign_new_items(tokenizer_dir: str | Path, new_items: list[Item], *,
                     semantic_embeddings: np.ndarray | None = None, neighbors: int | None = None,
                     progress: bool = True) -> dict[str, list[str]]:
    """Give ``new_items`` unique indices and add them to the artifact; returns their tokens.

    ``semantic_embeddings [M, D]`` replaces the text encoder (required when the build used
    precomputed semantic embeddings). ``neighbors`` overrides ``cold_start.neighbors``.
    """
    tok = load_item_tokenizer(tokenizer_dir)
    if "semantic" not in tok.order:
        raise DataError(f"tokenizer {tok.path} has no semantic stream; new items cannot be placed without one")
    ids = [it.item_id for it in new_items]
    dup = sorted({i for i in ids if i in tok.item_tokens} | {i for i, c in Counter(ids).items() if c > 1})
    if dup:
        raise DataError(f"new item id(s) {dup[:5]} already exist in {tok.path} or repeat in the input; "
                        "item ids must be unique")
    k = neighbors or int(tok.config["config"].get("cold_start", {}).get("neighbors", 10))
    sem = _semantic_embeddings(tok, new_items, semantic_embeddings, progress)
    vectors = {"semantic": sem}
    trees = {s: tok.tree(s) for s in tok.order}
    if "behavior" in tok.order:
        nb = semantic_neighbors(sem, tok.embeddings("semantic"), k, trees["semantic"].preprocess)
        beh = tok.embeddings("behavior")
        vectors["behavior"] = np.stack([np.asarray(beh[np.sort(row)], dtype=np.float32).mean(axis=0) for row in nb])

    cb = tok.codebook()
    taken: dict[tuple[int, ...], list[int]] = {}  # base index -> its members' <d_n> numbers (-1: none)
    for row, d in zip(map(tuple, cb.codes.tolist()), cb.disamb.tolist()):
        taken.setdefault(row, []).append(d)
    new_codes, new_d = [], []
    tables = {s: tok.embeddings(s) for s in tok.order}
    # balanced trees: follow the nearest existing item's path (see CodeTree.route)
    paths: dict[str, np.ndarray | None] = {}
    col = 0
    for s in tok.order:
        width = len(tok.ks[s])
        paths[s] = None
        if trees[s].method == "balanced":
            near = nearest_rows(vectors[s], tables[s], 1, transform=trees[s].preprocess.apply)[:, 0]
            paths[s] = cb.codes[near, col:col + width]
        col += width
    for i, item in enumerate(new_items):
        base: list[int] = []
        prefs: list[int] = []
        for s in tok.order:
            hint = None if paths[s] is None else paths[s][i].tolist()
            codes, prefs = trees[s].route(vectors[s][i], tables[s], hint)
            base.extend(codes)
        chosen, d = _unique_index(base, prefs, taken, item.item_id)
        taken.setdefault(chosen, []).append(d)
        new_codes.append(chosen)
        new_d.append(d)

    added = np.asarray(new_codes, np.int32).reshape(len(ids), -1)
    all_cb = Codebook(cb.item_ids + ids, cb.order, cb.ks, np.concatenate([cb.codes, added]),
                      np.concatenate([cb.disamb, np.asarray(new_d, np.int64)]))
    if all_cb.unique_rate != 1.0:  # guarded by construction; a failure here is a bug, never written out
        raise RuntimeError("cold-start assignment produced a duplicate index")
    _rewrite(tok, all_cb, new_items, vectors, k)
    tokens = all_cb.item_tokens()
    return {item_id: tokens[len(cb.item_ids) + j] for j, item_id in enumerate(ids)}


def _unique_index(base: list[int], prefs: list[int], taken: dict[tuple[int, ...], list[int]],
                  item_id: str) -> tuple[tuple[int, ...], int]:
    """The routed index if free, else the best free code at the last position, else a ``<d_n>``."""
    for code in [base[-1], *prefs]:
        cand = tuple(base[:-1]) + (int(code),)
        if cand not in taken:
            return cand, -1
    group = taken[tuple(base)]
    if -1 in group:
        raise DataError(f"item {item_id!r}: every code under its index prefix is taken and the matching "
                        "index has no disambiguation token; rebuild the tokenizer with the new items")
    return tuple(base), max(group) + 1


def _rewrite(tok: ItemTokenizer, cb: Codebook, new_items: list[Item], vectors: dict[str, np.ndarray],
             k: int) -> None:
    """Write the extended artifact next to the old one and swap it in (version + 1)."""
    old = tok.path
    rewritten = {"item_codes.json", "tokens.json", "stats.json", "new_items.jsonl",
                 *(f"embeddings_{s}.npy" for s in tok.order), *(f"cluster_sizes_{s}.png" for s in tok.order)}
    with atomic_dir(old) as tmp:
        for f in sorted(old.iterdir()):
            if f.is_file() and f.name not in rewritten:
                _link_or_copy(f, tmp / f.name)
        for s in tok.order:
            src = tok.embeddings(s)
            dst = np.lib.format.open_memmap(tmp / f"embeddings_{s}.npy", mode="w+", dtype=np.float32,
                                            shape=(src.shape[0] + len(new_items), src.shape[1]))
            for a in range(0, src.shape[0], CHUNK):
                b = min(a + CHUNK, src.shape[0])
                dst[a:b] = src[a:b]
            dst[src.shape[0]:] = vectors[s]
            dst.flush()
            del dst
        write_item_codes(tmp / "item_codes.json", cb.item_ids, cb.item_tokens())
        known = set(tok.tokens)
        write_json(tmp / "tokens.json", list(tok.tokens) + [t for t in cb.vocabulary() if t not in known])
        keep = ("method", "dim", "encoder", "preprocess", "mean_cosine")
        meta = {s: {key: v for key, v in tok.stats["streams"][s].items() if key in keep}
                for s in tok.order}
        stats = summary_stats(cb, meta, version=tok.version + 1)
        for key in ("num_build_items", "encoders", "timings_s"):
            if key in tok.stats:
                stats[key] = tok.stats[key]
        stats["cold_start"] = list(tok.stats.get("cold_start", [])) + [{
            "version": stats["version"], "items": len(new_items), "neighbors": k,
            "disambiguated": int((cb.disamb[-len(new_items):] >= 0).sum()), "created_unix": int(time.time())}]
        write_json(tmp / "stats.json", stats)
        with open(tmp / "new_items.jsonl", "w", encoding="utf-8") as f:
            prev = old / "new_items.jsonl"
            if prev.is_file():
                f.write(prev.read_text(encoding="utf-8"))
            f.writelines(json.dumps(asdict(item), ensure_ascii=False) + "\n" for item in new_items)
        if tok.config.get("config", {}).get("plots", True):
            from genrec.item_tokenizer.plots import plot_cluster_sizes

            col = 0
            for s in tok.order:
                width = len(cb.ks[s])
                plot_cluster_sizes(cb.codes[:, col:col + width], cb.ks[s],
                                   f"{old.name}: {s} stream ({len(cb.item_ids):,} items, v{stats['version']})",
                                   tmp / f"cluster_sizes_{s}.png")
                col += width


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link unchanged files into the new version (no copy of large centroids); copy if the
    filesystem refuses links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
