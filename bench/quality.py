"""Recommendation quality on real data: SASRec vs genrec variants, one protocol, one run.

    .venv/bin/python bench/quality.py --dataset scientific --out /tmp/bench_quality \\
        --json bench/results/quality_scientific.json [--variants semantic behavior dual dual_aux]
        [--max-steps 3000] [--eval-users 1000] [--exclude-history] [train.KEY=VALUE ...] [tokens.KEY=VALUE ...]

Per dataset (``beauty``: p5 reader on ``../shared/datasets/beauty``; ``scientific``: lcrec reader on
``../shared/datasets/scientific``), everything on the same leave-one-out split:

- ``sasrec_id`` and ``sasrec_text``: the full-softmax SASRec baseline (``recipes/baseline_sasrec_beauty.yaml``
  settings) with ID item embeddings, and with the text item table of
  ``recipes/baseline_sasrec_text.yaml`` (``text+id``, its adapter and text normalisation) on the
  tokenizer recipe's semantic text encoder; ``sasrec``, the yardstick of the ratios, is the one with the better
  validation NDCG@10;
- ``pop``: popularity;
- genrec variants, each a model trained from scratch with ``recipes/train_<dataset>_tiny.yaml``
  (a 4-layer, 128-wide LLaMA-architecture model; override with ``train.KEY=VALUE``), differing
  only in the item index and the auxiliary losses:

  | variant | item index | what differs from the recipe |
  |---|---|---|
  | ``dual`` | semantic then behavior codes (EAGER-LLM) | nothing (the recipe) |
  | ``dual_adapter`` / ``dual_no_adapter`` | dual | history-item embeddings on / off (the recipes differ by dataset) |
  | ``dual_select_by_loss`` | dual | best checkpoint by validation loss |
  | ``dual_no_distill`` | dual | no distillation from SASRec (the LM loss alone) |
  | ``dual_windows`` | dual | the recipe before the sequence task: SmolLM2 vocabulary, one example per window, 2 epochs, selection by loss |
  | ``dual_aux`` | dual | + global contrastive (both streams) + reconstruction |
  | ``semantic`` / ``behavior`` | one stream only (TIGER-like / behavior codes) | (no adapter without a behavior stream) |
  | ``dual_behavior_first`` | behavior then semantic codes | — |

The dual tokenizer is built once (``recipes/tokens_<dataset>.yaml``, override with
``tokens.KEY=VALUE``); the one-stream tokenizers reuse its cached semantic embeddings and its
behavior embeddings, so every variant sees the same embeddings and clusters per stream.
genrec models are evaluated by constrained beam search on a seeded subset of test users
(``--eval-users``, all users with 0), the baselines re-scored on the same users; with
``--exclude-history`` every model's ranking leaves out the user's own items (the stricter
yardstick where users never take an item twice: a SASRec ranks them high). Every stage is
cached under ``--out``: rerunning skips finished stages.

On a small machine ``--background-baseline`` trains SASRec in a child process on one CPU thread
while this process builds the tokenizers and trains the genrec variants on the others (every
variant is trained before any is evaluated, as evaluation re-scores SASRec on the same users).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from genrec.cli import main as cli_main
from genrec.inference.evaluate import evaluate_run
from genrec.io import read_json, write_json

SHARED = ROOT.parent / "shared" / "datasets"
DATASETS = {"beauty": ("p5", SHARED / "beauty"), "scientific": ("lcrec", SHARED / "scientific"),
            "ml100k": ("fetch", "ml-100k")}
NO_AUX = "losses.weights={contrastive_semantic: 0, contrastive_behavior: 0, reconstruction_embedding: 0}"
AUX = "losses.weights={contrastive_semantic: 0.1, contrastive_behavior: 0.1, reconstruction_embedding: 0.1}"
NO_ADAPTER = "model.item_embeddings=[]"
ADAPTER = "model.item_embeddings=[behavior]"
# The recipe before the sequence task: SmolLM2's vocabulary, one example per window, selection by loss.
WINDOWS = ["model.tokenizer=smollm2-135m", NO_ADAPTER, "tasks.mix={sequence: 0, seqrec: 1.0, item2index: 1.0}",
           "training.select_by=loss", "training.batch_size=32", "training.epochs=2", "training.eval_steps=500",
           "losses.weights.distill=0"]
VARIANTS = {
    "semantic": (["semantic"], [NO_AUX, NO_ADAPTER]),  # no behavior stream for the adapter
    "behavior": (["behavior"], [NO_AUX]),
    "dual": (["semantic", "behavior"], [NO_AUX]),
    "dual_aux": (["semantic", "behavior"], [AUX]),
    # the dual index with the behavior codes first (same codes, other order)
    "dual_behavior_first": (["behavior", "semantic"], [NO_AUX]),
    # one lever of the recipe off at a time
    "dual_no_adapter": (["semantic", "behavior"], [NO_AUX, NO_ADAPTER]),
    "dual_adapter": (["semantic", "behavior"], [NO_AUX, ADAPTER]),
    "dual_select_by_loss": (["semantic", "behavior"], [NO_AUX, "training.select_by=loss"]),
    "dual_no_distill": (["semantic", "behavior"], [NO_AUX, "losses.weights.distill=0"]),
    "dual_windows": (["semantic", "behavior"], [NO_AUX, *WINDOWS]),
    # ablation of the auxiliary terms (bench/ablation.py)
    "dual_contrastive": (["semantic", "behavior"], [
        "losses.weights={contrastive_semantic: 0.1, contrastive_behavior: 0.1, reconstruction_embedding: 0}"]),
    "dual_reconstruction": (["semantic", "behavior"], [
        "losses.weights={contrastive_semantic: 0, contrastive_behavior: 0, reconstruction_embedding: 0.1}"]),
    # ablation of the new-row initialisation (meaningful for pretrained base models)
    "dual_aux_init_mean": (["semantic", "behavior"], [AUX, "model.new_token_init=mean"]),
    "dual_aux_init_text": (["semantic", "behavior"], [AUX, "model.new_token_init=text"]),
}
QUALITY_VARIANTS = ["dual", "dual_adapter", "dual_windows"]
log = logging.getLogger("bench.quality")


def _cli(argv: list[str]) -> None:
    log.info("$ genrec %s", " ".join(argv))
    rc = cli_main(argv)
    if rc:
        raise SystemExit(f"genrec {argv[0]} failed with exit status {rc}")


def _tokenizer_name(streams: list[str]) -> str:
    """Directory of the tokenizer with these streams in this order (``dual`` = semantic, behavior)."""
    return "dual" if streams == ["semantic", "behavior"] else "_".join(streams)


def _timed(results: dict, key: str, fn) -> None:
    start = time.time()
    fn()
    results.setdefault("wall_seconds", {})[key] = round(time.time() - start, 1)


def main(argv: list[str] | None = None, description: str = __doc__, default_variants: list[str] | None = None,
         default_split: str = "test") -> int:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    ap.add_argument("--split", choices=["valid", "test"], default=default_split, help="split the metrics are on")
    ap.add_argument("--train-recipe", help="training recipe (default recipes/train_<dataset>_tiny.yaml)")
    ap.add_argument("--out", required=True, help="work directory (cached stages)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--variants", nargs="+", default=default_variants or QUALITY_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--max-steps", type=int, default=-1, help="cap on training steps per variant (-1: recipe epochs)")
    ap.add_argument("--eval-users", type=int, default=1000, help="test users evaluated (0: all)")
    ap.add_argument("--num-beams", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--exclude-history", action="store_true",
                    help="remove each user's history from every model's ranking (genrec and the re-scored baselines)")
    ap.add_argument("--background-baseline", action="store_true",
                    help="train SASRec in a child process on 1 CPU thread while the genrec stages use the rest")
    ap.add_argument("overrides", nargs="*",
                    help="train.KEY=VALUE (every variant), tokens.KEY=VALUE (tokenizer) or sasrec.KEY=VALUE")
    args = ap.parse_args(argv)
    split = args.split
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_over = [o.split(".", 1)[1] for o in args.overrides if o.startswith("train.")]
    tok_over = [o.split(".", 1)[1] for o in args.overrides if o.startswith("tokens.")]
    sas_over = [o.split(".", 1)[1] for o in args.overrides if o.startswith("sasrec.")]
    bad = [o for o in args.overrides if not o.startswith(("train.", "tokens.", "sasrec."))]
    if bad:
        ap.error(f"overrides must start with train., tokens. or sasrec.: {bad}")

    out = Path(args.out)
    fmt, raw = DATASETS[args.dataset]
    data = out / "data"
    results: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "dataset": args.dataset,
                     "seed": args.seed, "eval_users": args.eval_users, "num_beams": args.num_beams,
                     "max_steps": args.max_steps, "overrides": args.overrides, "models": {},
                     "exclude_history": args.exclude_history}
    start = time.time()
    if not (data / "stats.json").is_file():
        argv_data = ["data", "fetch", str(raw), "--out", str(data)] if fmt == "fetch" else \
            ["data", "prepare", "--format", fmt, "--path", str(raw), "--out", str(data)]
        _timed(results, "prepare", lambda: _cli(argv_data))
    results["stats"] = read_json(data / "stats.json")

    # Two SASRecs: item IDs, and text+id item tables from the tokenizer recipe's semantic text encoder
    # (same embedding cache). The `sasrec` row genrec is measured against is the one with the better
    # validation NDCG@10.
    base = {"pop": out / "pop", "sasrec_id": out / "sasrec", "sasrec_text": out / "sasrec_text"}
    text_model = _semantic_model(ROOT / "recipes" / f"tokens_{args.dataset}.yaml", tok_over)
    background: list[list[str]] = []
    for name, bdir in base.items():
        if not (bdir / "metrics.json").is_file():
            sas = "baseline_sasrec_ml100k.yaml" if args.dataset == "ml100k" else "baseline_sasrec_beauty.yaml"
            extra = ["--config", str(ROOT / "recipes" / sas), f"seed={args.seed}", *sas_over] \
                if name.startswith("sasrec") else []
            if name == "sasrec_text":
                extra += [*_text_table_keys(), f"text.model={text_model}"]
            argv_base = ["baseline", "--data", str(data), "--model", name.split("_")[0], "--out", str(bdir), *extra]
            if name.startswith("sasrec") and args.background_baseline:
                background.append(argv_base)
            else:
                _timed(results, name, lambda a=argv_base: _cli(a))
    bg = _start_background(background, out / "sasrec.log") if background else None

    toks = out / "tokenizers"
    recipe = ROOT / "recipes" / f"tokens_{args.dataset}.yaml"
    dual = toks / "dual"
    if not (dual / "item_codes.json").is_file():
        table = []  # a recipe whose behavior stream is the SASRec baseline's table reads this run's
        if _recipe_key(recipe, tok_over, "behavior", "encoder", "din") == "precomputed":
            _wait_background(bg, base, results)
            table = [f"behavior.embeddings={base['sasrec_id'] / 'item_embeddings.npy'}"]
        _timed(results, "tokens_dual", lambda: _cli(
            ["tokens", "build", "--config", str(recipe), f"data={data}", f"out_dir={toks}", "name=dual",
             f"seed={args.seed}", *table, *tok_over]))
    for streams in dict.fromkeys(tuple(VARIANTS[v][0]) for v in args.variants):
        name = _tokenizer_name(list(streams))
        if name != "dual" and not (toks / name / "item_codes.json").is_file():
            # Same embeddings as the dual tokenizer: semantic from the text cache, behavior from its table.
            extra = ["behavior.encoder=precomputed", f"behavior.embeddings={dual / 'embeddings_behavior.npy'}"] \
                if "behavior" in streams else []
            order = ",".join(streams)
            _timed(results, f"tokens_{name}", lambda n=name, o=order, e=extra: _cli(
                ["tokens", "build", "--config", str(recipe), f"data={data}", f"out_dir={toks}", f"name={n}",
                 f"order=[{o}]", f"seed={args.seed}", *tok_over, *e]))
    results["tokenizers"] = {p.name: read_json(p / "stats.json") for p in sorted(toks.iterdir())
                             if (p / "stats.json").is_file()}

    # The recipes distil from SASRec: the teacher must be trained before any genrec variant.
    _wait_background(bg, base, results)
    valid = {n: read_json(base[n] / "metrics.json")["valid"]["ndcg@10"] for n in ("sasrec_id", "sasrec_text")}
    results["sasrec_chosen"] = max(valid, key=valid.get)  # by validation NDCG@10, never by test
    base["sasrec"] = base[results["sasrec_chosen"]]
    log.info("SASRec yardstick: %s (validation NDCG@10 %s)", results["sasrec_chosen"], valid)
    runs = out / "runs"
    train_recipe = args.train_recipe or str(ROOT / "recipes" / f"train_{args.dataset}_tiny.yaml")
    results["train_recipe"] = train_recipe
    results["split"] = split
    evals: dict[str, dict] = {}
    ev_root = out / (f"eval_{split}" + ("_exclude_history" if args.exclude_history else ""))
    for variant in args.variants:
        streams, extra = VARIANTS[variant]
        tok = toks / _tokenizer_name(streams)
        run = runs / variant
        if not (run / "README.md").is_file():
            resume = ["--resume"] if (run / "checkpoints").is_dir() else []
            _timed(results, f"train_{variant}", lambda v=variant, t=tok, e=extra, r=resume: _cli(
                ["train", "--config", train_recipe, *r, f"data={data}",
                 f"tokenizer={t}", f"output_dir={runs}", f"name={v}", f"seed={args.seed}",
                 f"training.max_steps={args.max_steps}", f"losses.distill_teacher={base['sasrec']}", *e,
                 *train_over]))
    for variant in args.variants:
        run = runs / variant
        ev = ev_root / variant
        if not (ev / "metrics.json").is_file():
            _timed(results, f"eval_{variant}", lambda r=run, e=ev: evaluate_run(
                r, data, split, num_beams=args.num_beams, max_users=args.eval_users or None, seed=args.seed,
                out=e, baselines=[base["pop"], base["sasrec_id"], base["sasrec_text"]],
                exclude_history=args.exclude_history))
        evals[variant] = read_json(ev / "metrics.json")[split]
        ckpts = list((run / "checkpoints").glob("checkpoint-*")) if (run / "checkpoints").is_dir() else []
        last = max(ckpts, key=lambda p: int(p.name.split("-")[1])) if ckpts else None
        state = json.loads((last / "trainer_state.json").read_text()) if last else {}
        results["models"][f"genrec-{variant}"] = {**evals[variant], "steps": state.get("global_step"),
                                                  "epoch": state.get("epoch")}

    # Baselines on the same users as genrec (comparison.md of any variant holds them).
    from genrec.inference.evaluate import baseline_metrics

    if args.variants:
        users = read_json(ev_root / args.variants[0] / "provenance.json")["user_indices"]
        for name, bdir in base.items():  # under genrec's history rule
            results["models"][name] = {**baseline_metrics(bdir, data, split, users,
                                                          exclude_history=args.exclude_history), "users": len(users)}
    results["models_all_users"] = {n: read_json(d / "metrics.json")[split] for n, d in base.items()}
    sas = results["models"].get("sasrec", {}).get("recall@10")
    if sas:
        results["ratio_recall@10_vs_sasrec"] = {k: round(v["recall@10"] / sas, 3)
                                                for k, v in results["models"].items() if k.startswith("genrec")}
    results["total_wall_seconds"] = round(time.time() - start, 1)
    _print(results)
    write_json(out / "results.json", results)
    if args.json:
        write_json(Path(args.json), results)
    return 0


def _text_table_keys() -> list[str]:
    """The item-table settings of ``recipes/baseline_sasrec_text.yaml`` as ``KEY=VALUE`` overrides."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "baseline_sasrec_text.yaml").read_text()) or {}
    keys = ("item_embeddings", "adapter_hidden", "adapter_dropout", "text_norm", "id_init")
    return [f"{k}={recipe[k]}" for k in keys if k in recipe]


def _semantic_model(recipe: Path, tok_over: list[str]) -> str:
    """The semantic stream's text model of a tokenizer recipe (after ``tokens.`` overrides)."""
    return _recipe_key(recipe, tok_over, "semantic", "text.model", "smollm2-135m")


def _recipe_key(recipe: Path, tok_over: list[str], section: str, key: str, default: str) -> str:
    """``section.key`` (``key`` may be dotted once) of a tokenizer recipe, after ``tokens.`` overrides."""
    import yaml

    node = (yaml.safe_load(recipe.read_text()) or {}).get(section) or {}
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    value = node if isinstance(node, str) else default
    for o in tok_over:
        if o.startswith(f"{section}.{key}="):
            value = o.split("=", 1)[1]
    return value


def _wait_background(bg: dict | None, base: dict[str, Path], results: dict) -> None:
    """Wait for the background SASRec runs of :func:`_start_background` (if any); a second call
    returns at once."""
    if bg is None or bg["waited"]:
        return
    bg["waited"] = True
    proc, started, log_path, threads = bg["proc"], bg["started"], bg["log"], bg["threads"]
    log.info("waiting for the background SASRec runs (log %s)", log_path)
    if proc.wait():
        raise SystemExit(f"the background SASRec run failed (exit {proc.returncode}); see {log_path}")
    for name in ("sasrec_id", "sasrec_text"):  # their own durations: metrics.json is each run's last write
        done = (base[name] / "metrics.json").stat().st_mtime
        results.setdefault("wall_seconds", {})[name] = round(done - started, 1)
        started = done
    torch.set_num_threads(threads)


def _start_background(commands: list[list[str]], log_path: Path) -> dict:
    """Run ``genrec`` commands one after another in a child process on one CPU thread; returns
    the handle :func:`_wait_background` takes."""
    script = "import sys; from genrec.cli import main\nfor argv in %r:\n    rc = main(argv)\n    if rc: sys.exit(rc)" \
        % [[*a, "num_threads=1"] for a in commands]
    log.info("background (1 thread, log %s): %s", log_path, "; ".join("genrec " + " ".join(a) for a in commands))
    with log_path.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    return {"proc": proc, "started": time.time(), "log": log_path, "threads": threads, "waited": False}


def _print(results: dict) -> None:
    keys = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    print(f"\n{results['dataset']}: {results.get('split', 'test')} split, {results['models'].get('sasrec', {}).get('users', '?')} users")
    print("| model | " + " | ".join(keys) + " | top-1 share | coverage@20 | steps |")
    print("|---|" + "---:|" * (len(keys) + 3))
    for name, m in results["models"].items():
        collapse = " | ".join(f"{m[k]:.4f}" if k in m else "" for k in ("top1_share", "coverage"))
        print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + f" | {collapse} | {m.get('steps') or ''} |")
    sas = results["models"].get("sasrec", {})
    for k, m in results["models"].items():
        if k.startswith("genrec") and sas.get("recall@10") and sas.get("ndcg@10"):
            print(f"{k}: recall@10 = {m['recall@10'] / sas['recall@10']:.2f}x, "
                  f"ndcg@10 = {m['ndcg@10'] / sas['ndcg@10']:.2f}x SASRec")
    print("wall seconds:", json.dumps(results.get("wall_seconds", {})))


if __name__ == "__main__":
    raise SystemExit(main())
