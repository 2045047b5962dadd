"""Code statistics on Amazon Scientific: genrec's tokenizers next to the published ones.

    python bench/tokenizer_scientific.py                   # TF-IDF/SVD semantic + DIN behavior stand-in
    python bench/tokenizer_scientific.py --full            # the recipe: SmolLM2-135M + DIN (slow on CPU)
    python bench/tokenizer_scientific.py --tokenizer tokenizers_out/scientific   # an existing artifact

The published tokenizers' codes (``../shared/datasets/scientific/indexes/*.index.json``: RQ-VAE,
RQ-KMeans, LETTER, ... each 4 codes per item, 256 per level) are read as 4-level indices. Ours are
the 4-token dual-stream index ``<s0><s1><b0><b1>``. For every position the table shows the codes
used, the clusters (distinct prefixes), the largest cluster, the prefix entropy in bits
(log2 4,344 = 12.08 when every prefix is unique) and the collision rate ``1 - clusters / items``;
the last line per tokenizer is the whole index before any disambiguation.

The default run needs no model download: the semantic stream is a 256-d TF-IDF + truncated SVD of
each item's title, description, brand and categories (a stand-in for the LLM embedding), the
behavior stream is the real DIN encoder trained on the leave-one-out training part; balanced,
plain and residual trees are built from those same embeddings. ``--full`` runs
``recipes/tokens_scientific.yaml`` end to end (SmolLM2-135M embeddings of ~17k field texts).
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
from genrec.item_tokenizer.artifact import load_tokenizer
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.codebook import collision_rate
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.item_tokenizer.stats import format_table, level_stats
from genrec.item_tokenizer.vocab import parse_token

SHARED = ROOT.parent / "shared" / "datasets" / "scientific"


def published_codes(index_dir: Path) -> dict[str, np.ndarray]:
    """``{tokenizer name: codes [N, 4]}`` from ``*.index.json`` files (``<a_70><b_138>...``)."""
    out = {}
    for path in sorted(index_dir.glob("*.index.json")):
        data = json.loads(path.read_text())
        rows = [[parse_token(t)[2] for t in data[k]] for k in sorted(data, key=int)]
        out[path.name.split(".")[0]] = np.asarray(rows, dtype=np.int64)
    return out


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


def quick_builds(ds_dir: Path, work: Path, seed: int, epochs: int, eval_users: int
                 ) -> list[tuple[str, np.ndarray]]:
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
        km = f"{{method: {method}, k: 256, depth: 2}}"
        overrides = [f"name=sci_{method}", f"data={ds_dir}", f"out_dir={work}", "plots=false", "progress=false",
                     f"seed={seed}", "semantic.encoder=precomputed", f"semantic.embeddings={work / 'sem.npy'}",
                     "behavior.encoder=precomputed", f"behavior.embeddings={work / 'beh.npy'}",
                     f"semantic.kmeans={km}", f"behavior.kmeans={km}", "semantic.text=null", "behavior.din=null"]
        t = time.time()
        tok = load_tokenizer(build_tokenizer(load_config(TokenizerConfig, ROOT / "recipes" / "tokens_scientific.yaml",
                                                         overrides)))
        print(f"genrec {method} build: {time.time() - t:.1f} s", flush=True)
        out.append((f"genrec {method} (LSA+DIN)", tok.codebook().codes.astype(np.int64)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=str(SHARED), help="LC-Rec Scientific folder")
    ap.add_argument("--data", default="data/scientific", help="canonical dataset dir (prepared if missing)")
    ap.add_argument("--workdir", default="/tmp/genrec_tokenizer_scientific")
    ap.add_argument("--tokenizer", default=None, help="compare an existing tokenizer artifact")
    ap.add_argument("--full", action="store_true", help="build recipes/tokens_scientific.yaml (SmolLM2 + DIN)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--din-epochs", type=int, default=3, help="DIN epoch cap of the default run (CPU: ~100 s each)")
    ap.add_argument("--din-eval-users", type=int, default=500, help="validation users DIN early-stops on")
    args = ap.parse_args()

    raw = Path(args.raw)
    published = published_codes(raw / "indexes")
    ds_dir = Path(args.data)
    if not (ds_dir / "items.jsonl").is_file() and (args.full or not args.tokenizer):
        from genrec.data.prepare import prepare

        prepare("lcrec", raw, ds_dir)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ours: list[tuple[str, np.ndarray]] = []
    if args.tokenizer:
        ours.append((f"genrec {Path(args.tokenizer).name}", load_tokenizer(args.tokenizer).codebook().codes))
    elif args.full:
        t = time.time()
        out = build_tokenizer(load_config(TokenizerConfig, ROOT / "recipes" / "tokens_scientific.yaml",
                                          [f"data={ds_dir}", f"out_dir={work}", f"seed={args.seed}"]))
        print(f"full build (SmolLM2-135M + DIN + clustering): {time.time() - t:.0f} s -> {out}", flush=True)
        ours.append(("genrec balanced (SmolLM2+DIN)", load_tokenizer(out).codebook().codes))
    else:
        ours = quick_builds(ds_dir, work, args.seed, args.din_epochs, args.din_eval_users)

    rows = [(name, level_stats(codes, [256] * codes.shape[1])) for name, codes in [*ours, *published.items()]]
    n = len(next(iter(published.values())))
    print(f"\nScientific: {n:,} items; 4 codes per item, K = 256 per level "
          f"(prefix entropy is at most log2 {n} = {np.log2(n):.2f} bits)\n")
    print(format_table(rows))
    print("\nwhole index before disambiguation:")
    for name, codes in [*ours, *published.items()]:
        print(f"  {name:<32} collision rate {collision_rate(codes):.4f}")


if __name__ == "__main__":
    main()
