"""One recipe over several seeds: mean ± std of genrec's evaluations beside the baselines on the same users.

    .venv/bin/python bench/seeds.py --data data/beauty \\
        --evals runs/eval_beauty_s42 runs/eval_beauty_s43 runs/eval_beauty_s44 \\
        --baselines runs/pop_beauty runs/sasrec_beauty [--history-dropped] [--json bench/results/seeds.json]

Each ``--evals`` directory is a ``genrec evaluate`` output of one seed's run (``metrics.json``,
``provenance.json`` with the evaluated users, ``predictions.jsonl``); all must hold the same users
and split. The baselines are re-scored once on those users under the evaluations' protocol, and
every genrec mean is divided by each baseline's number. ``--history-dropped`` adds the stricter
yardstick where no model may rank the user's own items: genrec's lists with the history removed
after the fact (``bench/history_slots.py``; lists of 20, not refilled) and the baselines re-scored
with ``exclude_history``. The std is the sample standard deviation (ddof 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np

KEYS = ("recall@10", "ndcg@10", "recall@20")


def _eval(path: Path, split: str) -> tuple[dict[str, float], list[int], dict]:
    """``(metrics, user indices, recorded config)`` of one ``genrec evaluate`` output."""
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    if split not in metrics:
        raise SystemExit(f"{path}/metrics.json has no {split!r} split (it has {sorted(metrics)})")
    prov = json.loads((path / "provenance.json").read_text(encoding="utf-8"))
    return metrics[split], list(prov["user_indices"]), prov.get("config") or {}


def summarise(data: str, evals: list[Path], baselines: list[Path], split: str = "test",
              history_dropped: bool = False) -> dict:
    """Per-seed metrics, their mean and std, the baselines on the same users and the ratios."""
    from genrec.inference.evaluate import baseline_metrics

    loaded = [_eval(e, split) for e in evals]
    users = loaded[0][1]
    for path, (_, other, _) in zip(evals, loaded):
        if other != users:
            raise SystemExit(f"{path} evaluated other users than {evals[0]}: evaluate every seed on the same "
                             "users (same --max-users and --seed)")
    protocols = {"as_evaluated": ([m for m, _, _ in loaded], bool(loaded[0][2].get("exclude_history", False)))}
    if history_dropped:
        from history_slots import measure

        max_history = int(loaded[0][2].get("max_history") or 20)
        dropped = [measure(data, str(e / "predictions.jsonl"), max_history, split) for e in evals]
        protocols["history_dropped"] = ([{"recall@10": d["recall@10_history_dropped"],
                                          "ndcg@10": d["ndcg@10_history_dropped"]} for d in dropped], True)
    out: dict = {"split": split, "users": len(users), "evals": [str(e) for e in evals]}
    for name, (rows, exclude) in protocols.items():
        keys = [k for k in KEYS if all(k in r for r in rows)]
        per_seed = {str(e): {k: float(r[k]) for k in keys} for e, r in zip(evals, rows)}
        mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        std = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in keys}
        base = {str(b): baseline_metrics(b, data, split, users, exclude_history=exclude) for b in baselines}
        ratios = {b: {k: mean[k] / m[k] for k in keys if m.get(k)} for b, m in base.items()}
        out[name] = {"per_seed": per_seed, "mean": mean, "std": std, "baselines": base, "ratio_of_mean": ratios}
    return out


def _print(res: dict) -> None:
    for name in ("as_evaluated", "history_dropped"):
        if name not in res:
            continue
        r = res[name]
        keys = list(r["mean"])
        print(f"\n{name.replace('_', ' ')}: {res['split']} split, {res['users']} users")
        print("| model | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for path, m in r["per_seed"].items():
            print(f"| genrec {path} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")
        print("| **genrec, mean ± std** | " + " | ".join(f"{r['mean'][k]:.4f} ± {r['std'][k]:.4f}" for k in keys) + " |")
        for b, m in r["baselines"].items():
            ratio = r["ratio_of_mean"][b]
            print(f"| {b} | " + " | ".join(f"{m[k]:.4f} ({ratio[k]:.2f}×)" for k in keys) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="canonical dataset directory the runs were evaluated on")
    ap.add_argument("--evals", nargs="+", required=True, type=Path, help="`genrec evaluate` outputs, one per seed")
    ap.add_argument("--baselines", nargs="*", default=[], type=Path, help="`genrec baseline` outputs to re-score")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--history-dropped", action="store_true",
                    help="also the yardstick where no model ranks the user's own items")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    res = summarise(args.data, args.evals, args.baselines, args.split, args.history_dropped)
    _print(res)
    if args.json:
        from genrec.io import write_json

        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
