"""Load test of ``genrec serve``: >= 1,000 concurrent requests, valid and garbage, over real HTTP.

    python bench/serve_load.py                       # builds a tiny trained run in a temp dir (~20 s)
    python bench/serve_load.py --model runs/NAME     # a real run (its dataset must be where config.yaml says)

Starts ``genrec serve`` (uvicorn) on loopback in a subprocess, waits for ``/health``, then fires
all requests at once with ``httpx`` (async, one socket per request): valid requests (plain,
filtered, k above the catalog) mixed with garbage (malformed JSON, a non-JSON content type,
unknown item ids, empty histories, huge k, wrong types). Asserts that no response is a 5xx, that
every request got an answer, that each kind got its expected status (200 or 422) and that the
server is still healthy afterwards; prints p50 / p99 latency and throughput per request kind
and writes everything to ``bench/results/serve_load_<model>.json``. Exit status 1 on a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# kind -> (share of the requests, expected status)
KINDS = {
    "valid": (0.45, 200),
    "valid_filtered": (0.10, 200),
    "k_above_catalog": (0.03, 200),
    "unknown_id": (0.08, 422),
    "empty_history": (0.07, 422),
    "huge_k": (0.07, 422),
    "malformed_json": (0.07, 422),
    "not_json": (0.03, 422),
    "wrong_types": (0.10, 422),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def catalog(run_dir: Path) -> tuple[list[str], list[str]]:
    """Item ids and the categories present, from the dataset recorded in the run."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    ids, cats = [], set()
    with open(Path(cfg["data"]) / "items.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                ids.append(rec["item_id"])
                cats.update(rec.get("categories") or [])
    return ids, sorted(cats)


def make_requests(n: int, ids: list[str], cats: list[str], seed: int) -> list[tuple[str, dict]]:
    """``(kind, httpx request kwargs)`` in random order."""
    rng = random.Random(seed)
    kinds = rng.choices(list(KINDS), weights=[w for w, _ in KINDS.values()], k=n)
    out = []
    for kind in kinds:
        hist = rng.sample(ids, rng.randint(1, min(10, len(ids))))
        if kind == "valid":
            req = {"json": {"history": hist, "k": rng.randint(1, 20)}}
        elif kind == "valid_filtered":
            body = {"history": hist, "k": rng.randint(1, 10), "exclude": "history"}
            if cats:
                body["where"] = {"categories": rng.choice(cats)}
            req = {"json": body}
        elif kind == "k_above_catalog":
            req = {"json": {"history": hist, "k": min(1000, len(ids) + 5)}}
        elif kind == "unknown_id":
            req = {"json": {"history": hist + [f"no-such-item-{rng.randint(0, 10**9)}"], "k": 5}}
        elif kind == "empty_history":
            req = {"json": {"history": [], "k": 5}}
        elif kind == "huge_k":
            req = {"json": {"history": hist, "k": rng.choice([10**6, 2**63, 1001])}}
        elif kind == "malformed_json":
            text = json.dumps({"history": hist, "k": 5})
            req = {"content": rng.choice([text[: rng.randint(1, len(text) - 1)], "{history: [1,2]}", "null", "",
                                          "\x00\xff garbage"]).encode("utf-8", "surrogateescape"),
                   "headers": {"content-type": "application/json"}}
        elif kind == "not_json":
            req = {"content": b"history=m1&k=5", "headers": {"content-type": "application/x-www-form-urlencoded"}}
        else:  # wrong_types
            req = {"json": rng.choice([
                {"history": 5}, {"history": hist, "k": "ten"}, {"history": [None]}, {"history": [["a"]]},
                [hist], "just a string", {"history": hist, "where": "comedy"}, {"history": hist, "exclude": 3},
                {"history": hist, "k": 2.5}, {"history": hist, "unknown_field": 1}, {"history": {"a": 1}}])}
        out.append((kind, req))
    return out


async def fire(base: str, reqs: list[tuple[str, dict]], per_client: int, timeout: float) -> tuple[list, float]:
    """Start every request at once. Each ``httpx.AsyncClient`` gets exactly ``per_client`` requests and as
    many connections, so no request waits in a client-side pool (httpcore's pool queue costs the
    client O(waiting) CPU per request, which would make the client the bottleneck)."""
    n_clients = -(-len(reqs) // per_client)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    clients = [httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) for _ in range(n_clients)]

    async def one(client: httpx.AsyncClient, kind: str, kw: dict):
        t0 = time.perf_counter()
        try:
            status = (await client.post("/recommend", **kw)).status_code
        except httpx.HTTPError:  # no answer: the failure this test exists to catch
            status = -1
        return kind, status, time.perf_counter() - t0

    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(clients[i // per_client], k, kw) for i, (k, kw) in enumerate(reqs)))
        return results, time.perf_counter() - start
    finally:
        for c in clients:
            await c.aclose()


def pcts(lat_ms: np.ndarray) -> dict:
    p50, p99 = np.percentile(lat_ms, [50, 99])
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}


def summarize(results: list, wall: float) -> dict:
    out = {}
    for kind in KINDS:
        rows = [(s, t) for k, s, t in results if k == kind]
        if not rows:
            continue
        lat = np.asarray([t for _, t in rows]) * 1000
        statuses: dict[str, int] = {}
        for s, _ in rows:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
        out[kind] = {"n": len(rows), "expected": KINDS[kind][1], "statuses": statuses, **pcts(lat),
                     "throughput_rps": round(len(rows) / (lat.max() / 1000), 1)}
    lat = np.asarray([t for _, _, t in results]) * 1000
    out["all"] = {"n": len(results), "wall_s": round(wall, 2), "throughput_rps": round(len(results) / wall, 1),
                  **pcts(lat)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="run directory (default: build a tiny one in a temp dir)")
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--per-client", type=int, default=100,
                    help="requests (= sockets) per httpx client; all requests start at once either way")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--max-queue", type=int, default=0,
                    help="server queue bound (default 0: unbounded, so every request is served; the server's own "
                         "default of 256 would answer 503 to part of a 1,200-request burst)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request client timeout (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="result JSON (default bench/results/serve_load_<model>.json)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="genrec-serve-load-"))
    run_dir = args.model
    if run_dir is None:
        import torch

        from genrec.testing import make_tiny_run

        torch.set_num_threads(1)  # a tiny model trains fastest on one thread, especially on a busy CPU
        t0 = time.time()
        run_dir = make_tiny_run(tmp, steps=4)
        print(f"built a tiny run in {time.time() - t0:.0f} s: {run_dir}", flush=True)
    ids, cats = catalog(run_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "genrec.cli", "serve", "--model", str(run_dir), "--host", "127.0.0.1",
           "--port", str(port), "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--threads", str(args.threads), "--max-queue", str(args.max_queue)]
    print("$ " + " ".join(cmd[2:]), flush=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    failures = []
    try:
        t0 = time.time()
        while True:
            if server.poll() is not None:
                print(log_path.read_text()[-3000:])
                raise SystemExit(f"server exited with status {server.returncode} before becoming healthy")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - t0 > 600:
                raise SystemExit("server not healthy after 600 s")
            time.sleep(0.5)
        print(f"server healthy after {time.time() - t0:.1f} s; {len(ids)} items; firing {args.requests} requests",
              flush=True)
        reqs = make_requests(args.requests, ids, cats, args.seed)
        results, wall = asyncio.run(fire(base, reqs, args.per_client, args.timeout))
        summary = summarize(results, wall)
        health = httpx.get(base + "/health", timeout=10)
        alive = server.poll() is None and health.status_code == 200
        five = [(k, s) for k, s, _ in results if s >= 500]
        lost = [(k, s) for k, s, _ in results if s < 0]
        wrong = [(k, s) for k, s, _ in results if s != KINDS[k][1] and s >= 0]
        if five:
            failures.append(f"{len(five)} responses were 5xx: {five[:5]}")
        if lost:
            failures.append(f"{len(lost)} requests got no response")
        if wrong:
            failures.append(f"{len(wrong)} responses had an unexpected status: {wrong[:5]}")
        if not alive:
            failures.append("the server is not healthy after the load")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    h = health.json() if health.status_code == 200 else {}
    record = {
        "command": " ".join(sys.argv), "model": str(run_dir), "items": len(ids), "requests": args.requests,
        "in_flight": args.requests, "per_client": args.per_client, "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue,
        "server_threads": args.threads, "cpus": os.cpu_count(), "load_avg_1_5_15min_at_end": os.getloadavg(),
        "server_batches": h.get("batches"), "server_mean_batch": h.get("mean_batch"),
        "per_kind": summary, "failures": failures, "ok": not failures,
    }
    print(f"\n{'kind':<18}{'n':>6}{'status':>22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>9}")
    for kind, s in summary.items():
        st = ",".join(f"{k}x{v}" for k, v in s.get("statuses", {}).items()) if kind != "all" else ""
        print(f"{kind:<18}{s['n']:>6}{st:>22}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['throughput_rps']:>9}")
    print(f"server: {h.get('batches')} batches, mean batch {h.get('mean_batch')}; "
          f"{'OK' if not failures else 'FAILED: ' + '; '.join(failures)}")
    name = "tiny" if args.model is None else Path(run_dir).name
    out = args.out or ROOT / "bench" / "results" / f"serve_load_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
