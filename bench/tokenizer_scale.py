"""Tokenizer build time and peak memory at 10k / 100k / 1M items (both streams, 256-d).

    python bench/tokenizer_scale.py                         # 10k, 100k, 1M
    python bench/tokenizer_scale.py --sizes 10000 100000    # a subset
    python bench/tokenizer_scale.py --compare-sklearn       # also: own Lloyd vs sklearn KMeans

Each size writes synthetic precomputed embeddings for both streams (float32, 256-d, a mixture of
Gaussian clusters with Zipf-distributed sizes, so natural clusters are unbalanced as in real
catalogs) and then runs the real command, ``genrec tokens build``, in a child process: clustering,
codebook, artifact files, stats (plots off). Wall time, the child's CPU time and its peak RSS
(``os.wait4`` rusage of that child alone) are printed per size with growth ratios between sizes.
The target is 1M items in <= 5 minutes and <= 4 GiB peak RSS on a 2-core machine; the load
average is printed before and after because a shared machine slows every number down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic(path: Path, n: int, dim: int, clusters: int, seed: int, chunk: int = 65536) -> None:
    """Write ``[n, dim]`` float32 points around ``clusters`` centres (Zipf sizes) to ``path``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    scales = rng.uniform(0.3, 1.0, clusters).astype(np.float32)
    p = 1.0 / np.arange(1, clusters + 1) ** 0.8
    p /= p.sum()
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        c = rng.choice(clusters, size=m, p=p)
        out[s:s + m] = centres[c] + scales[c, None] * rng.standard_normal((m, dim), dtype=np.float32)
    out.flush()
    del out


def run_build(work: Path, n: int, dim: int, k: int, seed: int) -> dict:
    """Build a tokenizer over ``n`` synthetic items in a child process; returns measurements."""
    sem, beh = work / f"sem_{n}.npy", work / f"beh_{n}.npy"
    synthetic(sem, n, dim, clusters=2000, seed=seed)
    synthetic(beh, n, dim, clusters=500, seed=seed + 1)
    recipe = work / f"scale_{n}.yaml"
    kmeans = f"{{method: balanced, k: {k}, depth: auto}}"
    recipe.write_text(f"""# genrec tokens build --config {recipe}  (written by bench/tokenizer_scale.py)
name: scale_{n}
out_dir: {work / 'out'}
seed: {seed}
plots: false
progress: false
semantic: {{encoder: precomputed, embeddings: {sem}, kmeans: {kmeans}}}
behavior: {{encoder: precomputed, embeddings: {beh}, kmeans: {kmeans}}}
""")
    cmd = [sys.executable, "-m", "genrec.cli", "tokens", "build", "--config", str(recipe)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    output = proc.stdout.read().decode() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build of {n} items failed:\n{output}")
    stats = json.loads((work / "out" / f"scale_{n}" / "stats.json").read_text())
    size = sum(f.stat().st_size for f in (work / "out" / f"scale_{n}").iterdir())
    return {"items": n, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_gib": usage.ru_maxrss / 2**20, "timings": stats["timings_s"],
            "depth": stats["streams"]["semantic"]["depth"], "unique_rate": stats["unique_rate"],
            "largest": [lv["largest_cluster"] for lv in stats["streams"]["semantic"]["levels"]],
            "artifact_gib": size / 2**30}


def compare_sklearn(dim: int, k: int, seed: int) -> None:
    """Own Lloyd (k-means++ seeding, 10 iterations) vs sklearn KMeans at the same iteration budget,
    sklearn with its default threads and pinned to one thread (small products thrash 2 threads)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from genrec.item_tokenizer.kmeans import fit_centroids, nearest

    print(f"\nflat k-means, K={k}, {dim}-d, 10 Lloyd iterations, one init: wall s (mean squared distance)")
    print(f"{'points':>8} {'own':>16} {'sklearn':>16} {'sklearn 1 thread':>18}")
    for n in (4_000, 20_000):
        path = Path(f"/tmp/genrec_cmp_{os.getpid()}.npy")
        synthetic(path, n, dim, clusters=2000, seed=seed)
        x = np.load(path)
        path.unlink()
        t = time.time()
        c = fit_centroids(x, k, np.random.default_rng(seed), iters=10, sample_per_cluster=10**6, tol=0.0)
        own = f"{time.time() - t:.2f} ({float(nearest(x, c)[1].mean()):.1f})"
        res = []
        for limit in (None, 1):
            with threadpool_limits(limits=limit):
                t = time.time()
                km = KMeans(n_clusters=k, n_init=1, max_iter=10, tol=0.0, random_state=seed).fit(x)
                res.append(f"{time.time() - t:.2f} ({km.inertia_ / n:.1f})")
        print(f"{n:>8} {own:>16} {res[0]:>16} {res[1]:>18}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=256, help="branching per level; depth is 'auto'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/genrec_tokenizer_scale")
    ap.add_argument("--keep", action="store_true", help="keep embeddings and artifacts")
    ap.add_argument("--compare-sklearn", action="store_true")
    ap.add_argument("--json", default=None, help="also write the measurements as JSON here")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"cores {os.cpu_count()}, load average before {os.getloadavg()}", flush=True)
    rows = []
    for n in args.sizes:
        r = run_build(work, n, args.dim, args.k, args.seed)
        rows.append(r)
        t = r["timings"]
        print(f"{n:>9,} items: wall {r['wall_s']:.1f} s  cpu {r['cpu_s']:.1f} s  peak RSS {r['peak_rss_gib']:.2f} GiB  "
              f"depth {r['depth']}  unique {r['unique_rate']}  largest cluster per level {r['largest']}  "
              f"clustering sem {t['semantic_clustering']:.1f} s / beh {t['behavior_clustering']:.1f} s  "
              f"files {t['codebook_and_files']:.1f} s  artifact {r['artifact_gib']:.2f} GiB", flush=True)
        if not args.keep:
            shutil.rmtree(work / "out", ignore_errors=True)
            for f in work.glob(f"*_{n}.npy"):
                f.unlink()
    load_after = os.getloadavg()
    print(f"load average after {load_after}")
    print(f"\n{'items':>10} {'wall s':>8} {'cpu s':>8} {'RSS GiB':>8} {'x items':>8} {'x wall':>7} {'x cpu':>7} {'x RSS':>7}")
    for prev, r in zip([None, *rows[:-1]], rows):
        ratios = [f"{r[key] / prev[key]:>7.2f}" if prev else f"{'':>7}" for key in ("wall_s", "cpu_s", "peak_rss_gib")]
        grow = f"{r['items'] / prev['items']:>8.0f}" if prev else f"{'':>8}"
        print(f"{r['items']:>10,} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_rss_gib']:>8.2f} {grow} "
              + " ".join(ratios))
    big = [r for r in rows if r["items"] >= 1_000_000]
    for r in big:
        ok = r["wall_s"] <= 300 and r["peak_rss_gib"] <= 4
        print(f"target (1M: <= 300 s, <= 4 GiB): {'met' if ok else 'NOT met'} "
              f"({r['wall_s']:.0f} s, {r['peak_rss_gib']:.2f} GiB)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cores": os.cpu_count(), "dim": args.dim, "k": args.k,
                                               "load_average_after": load_after, "builds": rows}, indent=1) + "\n")
    if args.compare_sklearn:
        compare_sklearn(args.dim, args.k, args.seed)


if __name__ == "__main__":
    main()
