"""``genrec tokens build | inspect | assign``: the dual-stream item tokenizer stage.

``build_tokenizer(cfg)`` runs straight through: load the dataset, embed each stream (text
encoder for semantic, DIN / SASRec on the split's training part for behavior, or precomputed
``.npy``), fit one code tree per stream, combine the codes into unique item indices, and write
the artifact described in :mod:`genrec.item_tokenizer.artifact` in one atomic rename.

Under ``accelerate launch`` / ``torchrun`` every process takes part in the text embedding of the
semantic stream (the texts split across processes, :mod:`genrec.encoders.text`); the main
process then builds and writes the artifact alone, and the others return.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from genrec.config import load_config, to_dict
from genrec.data.dataset import Dataset
from genrec.errors import ConfigError, DataError
from genrec.io import atomic_dir, checksums, provenance, write_json
from genrec.item_tokenizer.artifact import (
    check_dataset,
    dataset_record,
    load_item_tokenizer,
    write_item_codes,
)
from genrec.item_tokenizer.codebook import Codebook
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.item_tokenizer.preprocess import Preprocess, mean_pair_cosine
from genrec.item_tokenizer.stats import level_table, summary_stats
from genrec.item_tokenizer.tree import fit_tree, resolve_branching
from genrec.item_tokenizer.vocab import index_string
from genrec.runtime import Ranks

log = logging.getLogger(__name__)
FINITE_CHUNK = 65536


def check_finite(x: np.ndarray, item_ids: list[str], stream: str, source: str) -> None:
    """Raise :class:`DataError` naming how many rows of ``x [N, D]`` hold NaN/inf and which items."""
    bad: list[int] = []
    for s in range(0, x.shape[0], FINITE_CHUNK):
        bad.extend((s + np.flatnonzero(~np.isfinite(x[s:s + FINITE_CHUNK]).all(axis=1))).tolist())
    if bad:
        ids = [item_ids[i] for i in bad[:5]]
        raise DataError(f"{len(bad)} {stream} embedding row(s) from {source} contain NaN or inf, e.g. items "
                        f"{ids}{' ...' if len(bad) > 5 else ''}; fix or re-compute those embeddings")


def load_precomputed(path: str, n: int | None, stream: str) -> np.ndarray:
    """A precomputed ``[N, D]`` embedding file, checked against the catalog size (through a memory
    map, before anything is read) and then loaded as float32 (preprocessing transforms it in place)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{stream}.embeddings file {p} does not exist; give an .npy of shape [num_items, D]")
    try:
        x = np.load(p, mmap_mode="r")
    except ValueError as e:
        raise DataError(f"{p} is not a readable .npy array ({e})") from None
    if x.ndim != 2 or x.shape[0] == 0 or (n is not None and x.shape[0] != n):
        want = f"[{n}, D]" if n is not None else "[N, D]"
        raise DataError(f"{p} has shape {list(x.shape)}; {stream} embeddings must be {want} with rows in "
                        "items.jsonl order")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{p} has dtype {x.dtype}; embeddings must be floating point")
    del x  # unmap: the array is read once, into memory it owns
    return np.load(p).astype(np.float32, copy=False)


def stream_embeddings(stream: str, cfg: TokenizerConfig, ds: Dataset | None, n: int | None,
                      log_dir: Path, done: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings ``[N, D]`` of one stream and a record of how they were made (``done``: already
    computed results by stream name)."""
    if done and stream in done:
        return done[stream]
    section = cfg.semantic if stream == "semantic" else cfg.behavior
    if section.encoder == "precomputed":
        return load_precomputed(section.embeddings, n, stream), {"encoder": "precomputed",
                                                                 "path": str(Path(section.embeddings).resolve())}
    if ds is None:
        raise DataError(f"{stream}.encoder={section.encoder} needs a dataset: set data=DIR "
                        "(made by `genrec data prepare` or `genrec data fetch`)")
    if stream == "semantic":
        from genrec.encoders.text import embed_items, items_without_text

        blank = items_without_text(ds.items, cfg.semantic.text)
        if blank:  # documented fallback: the item id is embedded instead
            log.warning("%d item(s) have none of the text fields %s (e.g. %s); their item id is embedded instead",
                        len(blank), cfg.semantic.text.fields, blank[:5])
        x = embed_items(ds.items, cfg.semantic.text, cache_dir=cfg.cache_dir, progress=cfg.progress)
        return np.asarray(x, dtype=np.float32), {"encoder": "text", "config": to_dict(cfg.semantic.text),
                                                 "items_without_text": len(blank)}
    from genrec.data.split import hold_out_items, leave_one_out

    split = leave_one_out(ds, max_history=cfg.max_history)  # encoders train on split.train only
    if cfg.cold_start.cold_items:  # and never on an interaction with a held-out item
        split, _ = hold_out_items(split, cfg.cold_start.cold_items, cfg.cold_start.cold_seed)
    if cfg.behavior.encoder == "din":
        from genrec.encoders.din import train_din

        res = train_din(split, cfg.behavior.din, progress=cfg.progress, log_path=log_dir / "din_log.jsonl")
        enc_cfg = cfg.behavior.din
    else:
        from genrec.encoders.sasrec import train_sasrec
        from genrec.encoders.text_items import item_text_features

        sas = cfg.behavior.sasrec
        if sas.cold_items:
            raise ConfigError("behavior.sasrec.cold_items is an evaluation protocol of `genrec baseline`; "
                              "set it to 0 and hold items out of the tokenizer with cold_start.cold_items")
        text = (item_text_features(ds.items, sas.text, cache_dir=cfg.cache_dir, progress=cfg.progress,
                                    norm=sas.text_norm)
                if sas.item_embeddings != "id" else None)
        res = train_sasrec(split, sas, progress=cfg.progress, log_path=log_dir / "sasrec_log.jsonl",
                           text_features=text)
        enc_cfg = cfg.behavior.sasrec
    metrics = {k: round(float(v), 6) for k, v in (getattr(res, "valid_metrics", None) or {}).items()}
    return np.asarray(res.item_embeddings, dtype=np.float32), {
        "encoder": cfg.behavior.encoder, "config": to_dict(enc_cfg), "valid_metrics": metrics}


def build_tokenizer(cfg: TokenizerConfig) -> Path:
    """Build the artifact ``<out_dir>/<name>`` (atomically) and return its path."""
    t_start = time.time()
    out = Path(cfg.out_dir) / cfg.name
    ds = Dataset.load(cfg.data) if cfg.data else None
    if ds is None and any((cfg.semantic if s == "semantic" else cfg.behavior).encoder != "precomputed"
                          for s in cfg.order):
        raise DataError("data is not set: give the dataset directory (data=DIR) made by `genrec data prepare` "
                        "or `genrec data fetch`, or precompute every stream's embeddings")
    n = ds.num_items if ds is not None else None
    item_ids = [it.item_id for it in ds.items] if ds is not None else None
    cold = held_out_items(cfg, ds)  # [N] bool or None: built without, then coded as new items
    cold_vectors: dict[str, np.ndarray] = {}
    inputs: list[str] = [str(Path(cfg.data) / f) for f in ("items.jsonl", "sequences.jsonl")] if ds else []
    data_record = dataset_record(cfg.data) if ds is not None else None  # checksums of what was read
    stream_codes, ks, meta, encoders, timings = {}, {}, {}, {}, {}
    done: dict[str, Any] = {}
    ranks = Ranks()
    if ranks.world > 1:  # the data-parallel stage first, on every process; the rest on the main one
        if ds is not None and "semantic" in cfg.order and cfg.semantic.encoder == "text":
            t0 = time.time()
            done["semantic"] = stream_embeddings("semantic", cfg, ds, n, out.parent)
            timings["semantic_embeddings"] = round(time.time() - t0, 3)
        if not ranks.is_main:
            log.info("process %d of %d: text embedding done; the main process builds %s", ranks.rank,
                     ranks.world, out)
            return out
    with atomic_dir(out) as tmp:
        for stream in cfg.order:
            t0 = time.time()
            x, enc = stream_embeddings(stream, cfg, ds, n, tmp, done)
            if item_ids is None:  # precomputed-only build: rows are the items, ids are row numbers
                n = x.shape[0]
                item_ids = [str(i) for i in range(n)]
            elif x.shape[0] != n:
                raise DataError(f"{stream} encoder returned {x.shape[0]} rows for {n} items")
            if enc.get("path"):
                inputs.append(enc["path"])
            check_finite(x, item_ids, stream, enc.get("path", f"the {enc['encoder']} encoder"))
            if cold is not None:  # the held-out rows stay out of the build
                cold_vectors[stream], x = x[cold], x[~cold]
            _save_embeddings(x, tmp / f"embeddings_{stream}.npy", None if cold is not None else enc.get("path"))
            timings.setdefault(f"{stream}_embeddings", round(time.time() - t0, 3))
            t0 = time.time()
            kc = (cfg.semantic if stream == "semantic" else cfg.behavior).kmeans
            # centre (whiten, normalise) before clustering; the tree stores the transform
            pre = Preprocess.fit(x, center=kc.center, whiten=kc.whiten, normalize=kc.normalize)
            cos_raw = mean_pair_cosine(x, seed=cfg.seed)
            x = pre.apply(np.ascontiguousarray(x, dtype=np.float32), inplace=True)
            ks[stream] = resolve_branching(kc.k, kc.depth, x.shape[0])
            # one BLAS thread by default: per-node products are small, and on a shared machine
            # spinning threads cost more than they give (docs/item_tokenizer.md, benchmarks)
            # (sklearn's KMeans threads through OpenMP: the limit then covers every thread pool)
            with threadpool_limits(limits=kc.threads or None, user_api=None if kc.method == "sklearn" else "blas"):
                tree = fit_tree(np.asarray(x, dtype=np.float32), ks[stream], kc.method,
                                cfg.seed + (1 if stream == "behavior" else 0), iters=kc.iters,
                                sample_per_cluster=kc.sample_per_cluster, init=kc.init, refine=kc.refine,
                                tol=kc.tol, name=stream, progress=cfg.progress)
            tree.preprocess = pre
            tree.save(tmp / f"centroids_{stream}.npz")
            stream_codes[stream] = tree.codes
            meta[stream] = {"method": kc.method, "dim": int(x.shape[1]), "encoder": enc["encoder"],
                            "preprocess": pre.describe(),
                            "mean_cosine": {"raw": round(cos_raw, 4),
                                            "clustered": round(mean_pair_cosine(x, seed=cfg.seed), 4)}}
            encoders[stream] = enc
            timings[f"{stream}_clustering"] = round(time.time() - t0, 3)
            del x, tree
        t0 = time.time()
        build_ids = item_ids if cold is None else [i for i, c in zip(item_ids, cold) if not c]
        cb = Codebook.from_streams(build_ids, stream_codes, ks, cfg.order)
        write_item_codes(tmp / "item_codes.json", cb.item_ids, cb.item_tokens())
        write_json(tmp / "tokens.json", cb.vocabulary())
        stats = summary_stats(cb, meta)
        stats["num_build_items"] = len(cb.item_ids)
        stats["encoders"] = {s: {k: v for k, v in e.items() if k in ("valid_metrics", "items_without_text")}
                             for s, e in encoders.items()}
        if cfg.plots:
            from genrec.item_tokenizer.plots import plot_cluster_sizes

            for s in cfg.order:
                plot_cluster_sizes(stream_codes[s], ks[s], f"{cfg.name}: {s} stream ({len(build_ids):,} items)",
                                   tmp / f"cluster_sizes_{s}.png")
        timings["codebook_and_files"] = round(time.time() - t0, 3)
        timings["total"] = round(time.time() - t_start, 3)
        stats["timings_s"] = timings
        stats["cold_start"] = []
        write_json(tmp / "stats.json", stats)
        record = provenance(to_dict(cfg), cfg.seed, checksums(inputs))
        record["index"] = {"order": list(cfg.order), "ks": ks, "layout": [f"{a}{b}" for a, b in cb.layout]}
        record["encoders"] = {s: {k: v for k, v in e.items() if k not in ("valid_metrics", "items_without_text")}
                              for s, e in encoders.items()}
        record["dataset"] = data_record
        write_json(tmp / "config.json", record)
        if cold is not None:  # the held-out items, coded as `genrec tokens assign` codes new items
            from genrec.item_tokenizer.cold_start import assign_new_items

            held = [ds.items[i] for i in np.flatnonzero(cold)]
            log.info("cold start: coding the %d held-out items as new items", len(held))
            assign_new_items(tmp, held, semantic_embeddings=cold_vectors["semantic"], progress=cfg.progress)
    return out


def held_out_items(cfg: TokenizerConfig, ds: Dataset | None) -> np.ndarray | None:
    """``[N]`` bool of the items ``cold_start.cold_items`` holds out of the build (``None``: off)."""
    if not cfg.cold_start.cold_items:
        return None
    if ds is None:
        raise ConfigError("cold_start.cold_items needs the dataset (data=DIR): the held-out items are chosen "
                          "among its items")
    from genrec.data.split import cold_item_mask

    return cold_item_mask(ds.num_items, cfg.cold_start.cold_items, cfg.cold_start.cold_seed)


def _save_embeddings(x: np.ndarray, path: Path, source: str | None) -> None:
    if source and x.dtype == np.float32 and str(source).endswith(".npy"):
        shutil.copyfile(source, path)  # already the right format: no second copy in memory
    else:
        np.save(path, np.asarray(x, dtype=np.float32))


def describe(tok: Any) -> str:
    """Human summary of a tokenizer: sizes, rates and the per-level table."""
    s = tok.stats
    rows = [(f"{name} ({st.get('method', '?')})", st["levels"]) for name, st in s["streams"].items()]
    rows.append(("index (all positions)", s["index"]))
    pre = []
    for name, st in s["streams"].items():
        if "preprocess" in st:
            steps = [k for k in ("center", "whiten", "normalize") if st["preprocess"].get(k)] or ["none"]
            cos = st.get("mean_cosine", {})
            pre.append(f"{name}: {st.get('encoder', '?')} {st.get('dim', '?')}-d, preprocessing {'+'.join(steps)}, "
                       f"mean cosine of random pairs {cos.get('raw', float('nan')):.3f} -> "
                       f"{cos.get('clustered', float('nan')):.3f}")
    return "\n".join([
        f"tokenizer {tok.path}  (version {s.get('version', 1)})", *pre,
        (f"items {s['num_items']:,}  new tokens {len(tok.tokens):,}  index length "
         f"{s['index_length']['min']}-{s['index_length']['max']}"),
        (f"collision rate before disambiguation {s['collision_rate']:.4f}  "
         f"({s['disambiguated_items']:,} items got a <d_n> token)  unique rate {s['unique_rate']:.4f}"),
        level_table(rows),
    ])


def main(args: argparse.Namespace) -> int:
    cfg = load_config(TokenizerConfig, args.config, args.overrides)
    out = build_tokenizer(cfg)
    if not Ranks().is_main:
        return 0
    tok = load_item_tokenizer(out)
    print(describe(tok))
    print(f"timings (s): {json.dumps(tok.stats.get('timings_s', {}))}")
    print(f"wrote {out}: item_codes.json, tokens.json, centroids_*.npz, embeddings_*.npy, stats.json, config.json")
    return 0


def inspect_main(args: argparse.Namespace) -> int:
    tok = load_item_tokenizer(args.dir)
    print(inspect_report(tok, args.n))
    return 0


def inspect_report(tok: Any, n: int = 10, groups: int = 3, seed: int = 0) -> str:
    """Stats, ``n`` sample items with titles and indices, and items sharing a first-level code."""
    titles = tok.titles()
    ids = tok.item_ids
    rng = np.random.default_rng(seed)
    lines = [describe(tok)]
    data = (tok.config.get("dataset") or {}).get("path")
    if data and Path(data).is_dir():
        try:
            check_dataset(tok, data)
        except DataError as e:  # inspecting still works; say that the titles may be stale
            lines.append(f"warning: {e}")
    lines += ["", f"sample items ({min(n, len(ids))} of {len(ids):,}):"]
    for i in np.sort(rng.choice(len(ids), min(n, len(ids)), replace=False)):
        item = ids[int(i)]
        lines.append(f"  {index_string(tok.item_tokens[item]):<40} {item:<14} {titles.get(item, '')[:70]}")
    pos = 0
    for stream in tok.order:
        first, pos = pos, pos + len(tok.ks[stream])  # position of the stream's first token
        by_prefix: dict[str, list[str]] = {}
        for item, toks in tok.item_tokens.items():
            by_prefix.setdefault(toks[first], []).append(item)
        keys = sorted(by_prefix)
        lines.append("")
        lines.append(f"{stream}: items sharing a first-level code ({len(keys)} codes used):")
        for key in [keys[int(j)] for j in np.sort(rng.choice(len(keys), min(groups, len(keys)), replace=False))]:
            members = by_prefix[key]
            lines.append(f"  {key} ({len(members)} items)")
            for item in members[:max(n // 2, 3)]:
                lines.append(f"      {index_string(tok.item_tokens[item]):<40} {titles.get(item, item)[:70]}")
    return "\n".join(lines)


def assign_main(args: argparse.Namespace) -> int:
    from genrec.item_tokenizer.artifact import read_items_jsonl
    from genrec.item_tokenizer.cold_start import assign_new_items

    items, vectors = read_items_jsonl(args.items)
    given = [v is not None for v in vectors]
    if any(given) and not all(given):
        raise DataError(f"{args.items}: either every item or no item has an \"embedding\"")
    emb = np.asarray(vectors, dtype=np.float32) if all(given) else None
    codes = assign_new_items(args.tokenizer, items, semantic_embeddings=emb)
    tok = load_item_tokenizer(args.tokenizer)
    for item in items:
        print(f"{index_string(codes[item.item_id]):<44} {item.item_id:<14} {item.display[:60]}")
    print(f"assigned {len(items)} new item(s); {args.tokenizer} is now version {tok.version} "
          f"({tok.stats['num_items']:,} items, unique rate {tok.stats['unique_rate']:.4f})")
    return 0
