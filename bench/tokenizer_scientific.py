"""Code statistics on Amazon Scientific: genrec's tokenizers next to the published ones.

    python bench/tokenizer_scientific.py                   # TF-IDF/SVD semantic + DIN behavior stand-in
    python bench/tokenizer_scientific.py --full            # the recipe: SmolLM2-135M + DIN (slow on CPU)
    python bench/tokenizer_scientific.py --tokenizer tokenizers_out/scientific --variants \
        --json bench/results/tokenizer_scientific.json     # an existing artifact, and variants of it

The published tokenizers' codes (``../shared/datasets/scientific/indexes/*.index.json``: RQ-VAE,
RQ-KMeans, LETTER, ... each 4 codes per item, 256 per level) are read as 4-level indices. Ours are
the 4-token dual-stream index ``<s0><s1><b0><b1>``. For every position the table shows the codes
used, the clusters (distinct prefixes), the largest cluster, the prefix entropy in bits
(log2 4,344 = 12.08 when every prefix is unique) and the collision rate ``1 - clusters / items``;
the last line per tokenizer is the whole index before any disambiguation.

A second table measures what the first-level clusters mean (every tokenizer aligned on item id):

- ``purity c1`` / ``purity c2``: share of items whose 2nd / 3rd-level Amazon category is the most
  common one of their first-level cluster (items with that category level only), and the same
  for a random relabelling with the same cluster sizes (``shuffled``);
- ``next same``: share of consecutive training interactions (history -> next item, inside the
  leave-one-out training part) whose two items share the first-level code (chance ~ 1 / clusters);
- ``NMI s0``: normalised mutual information between a tokenizer's first-level codes and genrec's
  first semantic code.

For genrec the first semantic (``s0``) and first behavior (``b0``) codes are both reported.

The default run needs no model download: the semantic stream is a 256-d TF-IDF + truncated SVD of
each item's title, description, brand and categories (a stand-in for the LLM embedding), the
behavior stream is the real DIN encoder trained on the leave-one-out training part; balanced,
plain and residual trees are built from those same embeddings. ``--full`` runs
``recipes/tokens_scientific.yaml`` end to end (SmolLM2-135M embeddings of ~10k field texts).
``--variants`` (with ``--tokenizer``) rebuilds from the artifact's stored SmolLM2 / DIN embeddings
with other trees and preprocessing (plain, residual; no / partial preprocessing; whitening), seconds each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.config import load_config
from genrec.data.dataset import Dataset
from genrec.item_tokenizer.artifact import load_item_tokenizer
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.codebook import collision_rate
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.item_tokenizer.stats import level_stats, level_table
from genrec.item_tokenizer.vocab import parse_token

SHARED = ROOT.parent / "shared" / "datasets" / "scientific"


def published_codes(index_dir: Path, item_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{tokenizer name: codes [N, 4]}`` from ``*.index.json`` files (``<a_70><b_138>...``), rows in
    ``item_ids`` order (default: numeric key order)."""
    out = {}
    for path in sorted(index_dir.glob("*.index.json")):
        data = json.loads(path.read_text())
        keys = item_ids if item_ids is not None else sorted(data, key=int)
        rows = [[parse_token(t)[2] for t in data[k]] for k in keys]
        out[path.name.split(".")[0]] = np.asarray(rows, dtype=np.int64)
    return out


def artifact_codes(tok, item_ids: list[str]) -> np.ndarray:
    """Stream codes ``[N, L]`` of a loaded tokenizer, rows in ``item_ids`` order."""
    cb = tok.codebook()
    pos = {item: i for i, item in enumerate(cb.item_ids)}
    return cb.codes[[pos[i] for i in item_ids]].astype(np.int64)


def purity(codes: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled items (label >= 0) carrying their cluster's most common label."""
    keep = labels >= 0
    c, y = codes[keep], labels[keep]
    order = np.lexsort((y, c))
    c, y = c[order], y[order]
    hits = 0
    for grp in np.split(y, np.flatnonzero(np.diff(c)) + 1):
        hits += np.bincount(grp).max()
    return hits / len(y)


def cluster_quality(first: np.ndarray, cats: dict[str, np.ndarray], pairs: np.ndarray, ref: np.ndarray,
                    seed: int = 0) -> dict[str, float]:
    """Purity (and its shuffled baseline), next-item agreement and NMI with ``ref`` of first-level codes."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(seed)
    out: dict[str, float] = {"clusters": len(np.unique(first))}
    for name, lab in cats.items():
        out[f"purity_{name}"] = round(purity(first, lab), 4)
        out[f"purity_{name}_shuffled"] = round(float(np.mean([purity(rng.permutation(first), lab)
                                                              for _ in range(5)])), 4)
    out["next_same"] = round(float((first[pairs[:, 0]] == first[pairs[:, 1]]).mean()), 4)
    out["nmi_s0"] = round(float(normalized_mutual_info_score(ref, first)), 4)
    return out


def labels_and_pairs(ds: Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """2nd / 3rd-level category ids per item (-1 when absent) and training (item, next item) pairs."""
    cats = {}
    for level, name in ((1, "c1"), (2, "c2")):
        names = [it.categories[level] if len(it.categories) > level else None for it in ds.items]
        vocab = {v: i for i, v in enumerate(sorted({v for v in names if v is not None}))}
        cats[name] = np.asarray([vocab[v] if v is not None else -1 for v in names], dtype=np.int64)
    pairs = [np.stack([s[:-2][:-1], s[:-2][1:]], axis=1) for s in ds.sequences if len(s) > 3]
    return cats, np.concatenate(pairs).astype(np.int64)


def variant_builds(tok_dir: Path, ds_dir: Path, work: Path, seed: int) -> list[tuple[str, object]]:
    """Rebuilds from an artifact's stored embeddings with other trees / preprocessing."""
    emb = {s: tok_dir / f"embeddings_{s}.npy" for s in ("semantic", "behavior")}
    variants = [("plain", "{method: plain, k: 256, depth: 2}"),
                ("residual", "{method: residual, k: 256, depth: 2}"),
                ("balanced, raw vectors", "{method: balanced, k: 256, depth: 2, center: false, normalize: false}"),
                ("balanced, centred only", "{method: balanced, k: 256, depth: 2, normalize: false}"),
                ("balanced, normalised uncentred", "{method: balanced, k: 256, depth: 2, center: false}"),
                ("balanced, whitened", "{method: balanced, k: 256, depth: 2, whiten: true}")]
    out = []
    for label, km in variants:
        name = "sci_" + label.replace(", ", "_").replace(" ", "_")
        tok = build_precomputed(name, ds_dir, work, seed, emb["semantic"], emb["behavior"], km)
        out.append((f"genrec {label}", tok))
    return out


def build_precomputed(name: str, ds_dir: Path, work: Path, seed: int, semantic: Path, behavior: Path,
                      kmeans: str) -> object:
    """Build (and time) a tokenizer from stored ``[N, d]`` embeddings with the tree ``kmeans`` on both streams."""
    overrides = [f"name={name}", f"data={ds_dir}", f"out_dir={work}", "plots=false", "progress=false",
                 f"seed={seed}", "semantic.encoder=precomputed", f"semantic.embeddings={semantic}",
                 "behavior.encoder=precomputed", f"behavior.embeddings={behavior}",
                 f"semantic.kmeans={kmeans}", f"behavior.kmeans={kmeans}", "semantic.text=null", "behavior.din=null"]
    t = time.time()
    tok = load_item_tokenizer(build_tokenizer(load_config(TokenizerConfig, ROOT / "recipes" / "tokens_scientific.yaml",
                                                     overrides)))
    print(f"{name} build: {time.time() - t:.1f} s", flush=True)
    return tok


def tfidf_svd(ds: Dataset, dim: int, seed: int) -> np.ndarray:
    """``[N, dim]`` L2-normalised LSA vectors of the items' text (a model-free semantic stand-in)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [it.text(("title", "description", "brand", "categories"), sep=" ") for it in ds.items]
    tfidf = TfidfVectorizer(min_df=2, max_features=50_000, sublinear_tf=True).fit_transform(texts)
    x = TruncatedSVD(n_components=dim, random_state=seed).fit_transform(tfidf).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def din_embeddings(ds: Dataset, seed: int, log: Path, epochs: int, eval_users: int) -> tuple[np.ndarray, dict]:
    """The recipe's DIN, with an epoch cap and fewer validation users to keep the bench short."""
    from genrec.data.split import leave_one_out
    from genrec.encoders.din import DINConfig, train_din

    cfg = load_config(TokenizerConfig, ROOT / "recipes" / "tokens_scientific.yaml").behavior.din
    cfg = DINConfig(**{**cfg.__dict__, "seed": seed, "epochs": epochs, "eval_users": eval_users})
    res = train_din(leave_one_out(ds, max_history=20), cfg, progress=False, log_path=log)
    return res.item_embeddings.astype(np.float32), res.valid_metrics


def quick_builds(ds_dir: Path, work: Path, seed: int, epochs: int, eval_users: int) -> list[tuple[str, object]]:
    ds = Dataset.load(ds_dir)
    t = time.time()
    np.save(work / "sem.npy", tfidf_svd(ds, 256, seed))
    print(f"semantic stand-in (TF-IDF + SVD, 256-d): {time.time() - t:.1f} s", flush=True)
    t = time.time()
    beh, metrics = din_embeddings(ds, seed, work / "din_log.jsonl", epochs, eval_users)
    np.save(work / "beh.npy", beh)
    print(f"DIN behavior embeddings {beh.shape} ({epochs} epochs max): {time.time() - t:.1f} s, valid "
          f"{ {k: round(v, 4) for k, v in metrics.items() if k in ('recall@10', 'ndcg@10')} }", flush=True)
    out = []
    for method in ("balanced", "plain", "residual"):
        tok = build_precomputed(f"sci_{method}", ds_dir, work, seed, work / "sem.npy", work / "beh.npy",
                                f"{{method: {method}, k: 256, depth: 2}}")
        out.append((f"genrec {method} (LSA+DIN)", tok))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=str(SHARED), help="LC-Rec Scientific folder")
    ap.add_argument("--data", default="data/scientific", help="canonical dataset dir (prepared if missing)")
    ap.add_argument("--workdir", default="/tmp/genrec_tokenizer_scientific")
    ap.add_argument("--tokenizer", default=None, help="compare an existing tokenizer artifact")
    ap.add_argument("--variants", action="store_true",
                    help="with --tokenizer: also rebuild from its embeddings with plain / residual trees, "
                         "without preprocessing and with whitening")
    ap.add_argument("--full", action="store_true", help="build recipes/tokens_scientific.yaml with SmolLM2 + DIN streams")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--din-epochs", type=int, default=3, help="DIN epoch cap of the default run (CPU: ~100 s each)")
    ap.add_argument("--din-eval-users", type=int, default=500, help="validation users DIN early-stops on")
    ap.add_argument("--json", default=None, help="also write every number as JSON here")
    args = ap.parse_args()

    raw = Path(args.raw)
    ds_dir = Path(args.data)
    if not (ds_dir / "items.jsonl").is_file():
        from genrec.data.prepare import prepare

        prepare("lcrec", raw, ds_dir)
    ds = Dataset.load(ds_dir)
    item_ids = [it.item_id for it in ds.items]
    published = published_codes(raw / "indexes", item_ids)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ours: list[tuple[str, object]] = []
    record: dict = {"items": len(item_ids)}
    if args.tokenizer:
        tok = load_item_tokenizer(args.tokenizer, dataset=ds_dir)
        enc = tok.config.get("encoders", {})
        label = "+".join({"text": "SmolLM2", "din": "DIN", "sasrec": "SASRec"}.get(enc.get(s, {}).get("encoder"), "pre")
                         for s in tok.order)
        ours.append((f"genrec balanced ({label})", tok))
        record["artifact"] = {"path": str(Path(args.tokenizer).resolve()), "timings_s": tok.stats.get("timings_s"),
                              "encoders": tok.stats.get("encoders"),
                              "streams": {s: {k: v for k, v in st.items() if k != "levels"}
                                          for s, st in tok.stats["streams"].items()}}
        if args.variants:
            ours += variant_builds(Path(args.tokenizer), ds_dir, work, args.seed)
    elif args.full:
        t = time.time()
        out = build_tokenizer(load_config(TokenizerConfig, ROOT / "recipes" / "tokens_scientific.yaml",
                                          [f"data={ds_dir}", f"out_dir={work}", f"seed={args.seed}",
                                           "semantic.text.model=smollm2-135m", "behavior.encoder=din"]))
        print(f"full build (SmolLM2-135M + DIN + clustering): {time.time() - t:.0f} s -> {out}", flush=True)
        ours.append(("genrec balanced (SmolLM2+DIN)", load_item_tokenizer(out)))
    else:
        ours = quick_builds(ds_dir, work, args.seed, args.din_epochs, args.din_eval_users)

    codes = [(name, artifact_codes(tok, item_ids)) for name, tok in ours] + list(published.items())
    rows = [(name, level_stats(c, [256] * c.shape[1])) for name, c in codes]
    n = len(item_ids)
    print(f"\nScientific: {n:,} items; 4 codes per item, K = 256 per level "
          f"(prefix entropy is at most log2 {n} = {np.log2(n):.2f} bits)\n")
    print(level_table(rows))
    print("\nwhole index before disambiguation:")
    for name, c in codes:
        print(f"  {name:<34} collision rate {collision_rate(c):.4f}")

    cats, pairs = labels_and_pairs(ds)
    ref = codes[0][1][:, 0]
    quality = []
    for name, c in codes:
        firsts = [("s0", c[:, 0]), ("b0", c[:, 2])] if name.startswith("genrec") else [("L0", c[:, 0])]
        for pos, first in firsts:
            quality.append((name, pos, cluster_quality(first, cats, pairs, ref, args.seed)))
    print(f"\nfirst-level clusters: category purity (shuffled baseline), next-item agreement on "
          f"{len(pairs):,} training transitions, NMI with {codes[0][0]} s0\n")
    head = (f"{'codes':<34}{'pos':>4}{'clusters':>9}{'purity c1':>17}{'purity c2':>17}{'next same':>11}"
            f"{'NMI s0':>8}")
    print(head + "\n" + "-" * len(head))
    for name, pos, q in quality:
        print(f"{name:<34}{pos:>4}{q['clusters']:>9}{q['purity_c1']:>9.3f} ({q['purity_c1_shuffled']:.3f})"
              f"{q['purity_c2']:>9.3f} ({q['purity_c2_shuffled']:.3f}){q['next_same']:>11.4f}{q['nmi_s0']:>8.3f}")
    if args.json:
        record["tokenizers"] = {name: {"levels": lv, "collision_rate": round(collision_rate(c), 6)}
                                for (name, lv), (_, c) in zip(rows, codes)}
        record["first_level_quality"] = [{"tokenizer": name, "position": pos, **q} for name, pos, q in quality]
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
