"""Command-line entry point: argument parsing and dispatch only.

Each command names a ``module:function`` taking the parsed ``argparse.Namespace``; modules
are imported only when their command runs, so ``genrec --help`` stays fast. A
:class:`~genrec.errors.GenrecError` becomes ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from genrec.errors import GenrecError


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert raw data into a canonical dataset directory")
    p.add_argument("--format", required=True,
                   help="source format: lcrec, p5, movielens, recbole, amazon, table")
    p.add_argument("--path", required=True, help="input file or directory")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--strict", action="store_true",
                   help="fail on interactions whose item is missing from the item table")
    p.add_argument("--min-user-interactions", type=int, default=3,
                   help="drop users with fewer interactions (default 3, the leave-one-out minimum)")
    p.add_argument("--keep-cold-items", action="store_true",
                   help="keep items that no kept user interacted with")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, repeatable (e.g. --opt user_col=uid; see docs/data.md)")
    p.set_defaults(handler="genrec.data.prepare:main")


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download an embedded default dataset (cached, sha256-verified)")
    p.add_argument("name", help="dataset name: ml-100k")
    p.add_argument("--out", required=True, help="output canonical dataset directory")
    p.set_defaults(handler="genrec.data.fetch:main")


def _add_scoring(p: argparse.ArgumentParser) -> None:
    """``--scoring``, shared by ``evaluate``, ``recommend`` and ``serve``."""
    p.add_argument("--scoring", choices=["beam", "exact"], default="beam",
                   help="beam: constrained beam search (default); exact: score every catalog item (slower, no beam "
                        "misses; see docs/serving.md)")
    p.add_argument("--no-item-head", action="store_true",
                   help="rank by the codes alone even when the run has an item head (`genrec head`)")


def _add_inference(sub: argparse._SubParsersAction) -> None:
    """``evaluate``, ``recommend`` and ``serve``: everything that loads a trained run."""
    p = sub.add_parser("evaluate", help="Recall/NDCG@K of a trained run (constrained beam search), vs baselines")
    p.add_argument("--model", required=True, help="run directory written by `genrec train`")
    p.add_argument("--data", required=True, help="canonical dataset directory the run was trained on")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--out", required=True, help="output directory (metrics.json, comparison.md, provenance.json)")
    p.add_argument("--baselines", nargs="*", default=[], metavar="DIR",
                   help="`genrec baseline` output directories to compare against")
    p.add_argument("--num-beams", type=int, default=20, help="beam width (default 20)")
    _add_scoring(p)
    p.add_argument("--batch-size", type=int, default=8, help="users decoded at once (default 8)")
    p.add_argument("--max-users", type=int, default=None,
                   help="evaluate a seeded random subset of this many users (baselines re-scored on the same)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-users subset (default 0)")
    p.add_argument("--exclude-history", action="store_true",
                   help="never rank the user's history items (default: keep them, as the baselines do)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's choice; 1 is often fastest on a busy CPU)")
    p.set_defaults(handler="genrec.inference.evaluate:main")

    p = sub.add_parser("recommend", help="recommend items for a history with a trained run")
    p.add_argument("--model", required=True, help="run directory written by `genrec train`")
    p.add_argument("--history", required=True, nargs="+", metavar="ID",
                   help="item ids (or exact titles), oldest first")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--exclude-history", action="store_true", help="do not recommend the history's items")
    p.add_argument("--where", default=None, metavar="JSON",
                   help='attribute filter, e.g. \'{"categories": "Comedy"}\' (see docs/serving.md)')
    p.add_argument("--instruction", default=None, help="custom prompt text ({history} = the history's indices)")
    p.add_argument("--num-beams", type=int, default=None, help="beam width (default max(20, k))")
    _add_scoring(p)
    p.add_argument("--data", default=None,
                   help="dataset directory whose items to serve (default: the run's catalog.jsonl; needed only "
                        "for runs written without one whose recorded dataset has moved)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--json", action="store_true", help='print a JSON list of {"item_id", "title", "score"}')
    p.set_defaults(handler="genrec.inference.recommender:main")

    p = sub.add_parser("serve", help="HTTP API (FastAPI): POST /recommend, GET /health, docs at /docs")
    p.add_argument("--model", required=True, help="run directory written by `genrec train`")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together at most (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a batch waits for more requests after its first (default 10)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="requests allowed to wait for the model; more are answered 503 (default 256, 0: no limit)")
    p.add_argument("--num-beams", type=int, default=20, help="default beam width (default 20)")
    _add_scoring(p)
    p.add_argument("--data", default=None,
                   help="dataset directory whose items to serve (default: the run's catalog.jsonl; needed only "
                        "for runs written without one whose recorded dataset has moved)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's choice; 1 is often fastest on a busy CPU)")
    p.set_defaults(handler="genrec.inference.http:main")

    p = sub.add_parser("export", help="write a self-contained copy of a run (merged weights or adapter + base "
                                      "reference, tokenizer, item codes, catalog, model card)")
    p.add_argument("run", help="run directory written by `genrec train`")
    p.add_argument("--out", required=True, help="new output directory (must not exist)")
    p.add_argument("--merge", action="store_true",
                   help="merge LoRA into the base weights (QLoRA: into the dequantized 4-bit base); loadable by "
                        "plain transformers")
    p.add_argument("--data", default=None, help="dataset directory, for runs written without catalog.jsonl")
    p.set_defaults(handler="genrec.inference.export:main")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrec", description="Generative LLM recommenders, EAGER-LLM style.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="fetch and prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    _add_prepare(data_sub)
    _add_fetch(data_sub)

    p = sub.add_parser("baseline", help="train and evaluate a baseline (popularity or SASRec)")
    p.add_argument("--data", required=True, help="canonical dataset directory")
    p.add_argument("--model", required=True, choices=["pop", "sasrec"])
    p.add_argument("--out", required=True, help="output directory (metrics.json, config, checkpoint)")
    p.add_argument("--config", default=None, help="optional YAML with model/training settings")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. epochs=50")
    p.set_defaults(handler="genrec.baselines.run:main")

    tok = sub.add_parser("tokens", help="build, inspect and extend item token vocabularies")
    tok_sub = tok.add_subparsers(dest="tokens_command", required=True)
    p = tok_sub.add_parser("build", help="build a dual-stream item tokenizer from a recipe")
    p.add_argument("--config", required=True, help="recipe YAML (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler="genrec.item_tokenizer.build:main")
    p = tok_sub.add_parser("inspect", help="print a tokenizer's statistics and sample items")
    p.add_argument("dir", help="tokenizers_out/NAME directory")
    p.add_argument("-n", type=int, default=10, help="how many sample items to show")
    p.set_defaults(handler="genrec.item_tokenizer.build:inspect_main")
    p = tok_sub.add_parser("assign", help="give codes to new (cold-start) items without a rebuild")
    p.add_argument("--tokenizer", required=True, help="tokenizers_out/NAME directory (updated in place)")
    p.add_argument("--items", required=True, help="JSONL of new items ({item_id, title, description, ...})")
    p.set_defaults(handler="genrec.item_tokenizer.build:assign_main")

    p = sub.add_parser("train", help="instruction-tune an LLM recommender from a recipe")
    p.add_argument("--config", required=True, help="recipe YAML (see recipes/train_*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler="genrec.training.recipe:main")

    p = sub.add_parser("head", help="fit a trained run's item head (per-item scores fused with the codes)",
                       description="Fit a trained run's item head. Every setting left out is taken from the run's "
                                   "recorded config (training.item_head_*, training.ranking_beams, seed), so with "
                                   "no options this refits the head the recipe fits after training.")
    p.add_argument("--run", required=True, help="run directory written by `genrec train`")
    p.add_argument("--data", required=True, help="canonical dataset directory the run was trained on")
    p.add_argument("--users", type=int, default=None,
                   help="validation users that select the head's epoch and fusion weight (default: the run's "
                        "training.item_head_users; 0: all)")
    p.add_argument("--epoch-users", type=int, default=None,
                   help="validation users whose head-alone NDCG@10 picks the head's epoch, a forward each (default: "
                        "the run's training.item_head_epoch_users, else the --users ones; 0: all)")
    p.add_argument("--select", choices=("head", "fused"), default=None,
                   help="how the head's epoch is chosen: head = its own NDCG@10 on the --epoch-users, fused = "
                        "together with the weight by the fused ranking's NDCG@10 on the --users (default: the "
                        "run's training.item_head_select)")
    p.add_argument("--weight-rule", choices=("best", "one_se"), default=None,
                   help="the fusion weight: best = the highest validation NDCG@10, one_se = the smallest weight "
                        "within one standard error of it (default: the run's training.item_head_weight_rule)")
    p.add_argument("--num-beams", type=int, default=None,
                   help="beam width the weight is chosen with (default: the run's training.ranking_beams)")
    p.add_argument("--extra", type=int, default=50, help="head's best items added to the beam's (default 50)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the fit and of the validation users (default: the run's seed)")
    p.add_argument("--transitions", type=int, default=None,
                   help="transition counts from the history's last N items (gaps 1..N) beside the rows (default: "
                        "the run's training.item_head_transitions; 0: the rows alone)")
    p.add_argument("--similar", type=int, default=None,
                   help="the nearest items of the history's last N items by their embeddings beside the counts "
                        "(default: the run's training.item_head_similar; 0: off)")
    p.add_argument("--similar-stream", default=None,
                   help="item tokenizer stream whose embeddings define the nearest items (default: the run's "
                        "training.item_head_similar_stream; auto: behavior when the tokenizer has it, else its "
                        "first stream)")
    p.add_argument("--cold-neighbours", type=int, default=None,
                   help="items never a training target borrow the mean row of their N nearest trained items by "
                        "the same embeddings (default: the run's training.item_head_cold_neighbours; 0: they get "
                        "the uniform log-probability)")
    p.add_argument("--seen", action=argparse.BooleanOptionalAction, default=None,
                   help="fit a learned weight on the history's own items (default: the run's "
                        "training.item_head_seen)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler="genrec.cli:head_main")

    p = sub.add_parser("align", help="preference-align a trained run (DPO or GRPO through trl)")
    p.add_argument("--config", required=True, help="recipe YAML (see recipes/align_*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. run=runs/NAME method=grpo")
    p.set_defaults(handler="genrec.training.align.recipe:main")

    _add_inference(sub)

    p = sub.add_parser("compare", help="runs, evaluations and baselines side by side: one table and charts")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="`genrec train` run, `genrec evaluate` output or `genrec baseline` output directories")
    p.add_argument("--out", required=True, help="output directory (comparison.md, metrics.png, loss_curves.png)")
    p.set_defaults(handler="genrec.inference.compare:main")

    p = sub.add_parser("demo", help="run the end-to-end demo on the embedded default")
    p.add_argument("--out", default="runs/demo", help="output directory (stages found complete there are reused)")
    p.add_argument("--train-steps", type=int, default=6, help="QLoRA optimizer steps (default 6: the demo budget)")
    p.add_argument("--tiny-epochs", type=float, default=3,
                   help="epochs of the small genrec model trained from scratch (default 3)")
    p.add_argument("--eval-users", type=int, default=500,
                   help="seeded random test users for the small model's evaluation (default 500; baselines "
                        "re-scored on them)")
    p.add_argument("--llm-eval-users", type=int, default=30,
                   help="seeded random test users for the SmolLM2 evaluation (default 30; slower per user)")
    p.add_argument("--num-beams", type=int, default=20, help="beam width of the constrained search (default 20)")
    p.add_argument("--baselines-only", action="store_true", help="stop after the popularity and SASRec baselines")
    p.set_defaults(handler="genrec.demo:main")
    return parser


def head_settings(args: argparse.Namespace, cfg: dict[str, Any]) -> argparse.Namespace:
    """``genrec head``'s options with each one left out taken from the run's recorded config ``cfg``
    (the settings ``training.item_head`` fits with), else the training defaults."""
    from genrec.training.config import TrainingConfig

    base = TrainingConfig()
    training = cfg.get("training") or {}

    def pick(given: Any, key: str) -> Any:
        return given if given is not None else training.get(key, getattr(base, key))

    return argparse.Namespace(**{
        **vars(args),
        "users": pick(args.users, "item_head_users"), "num_beams": pick(args.num_beams, "ranking_beams"),
        "epoch_users": pick(args.epoch_users, "item_head_epoch_users"),
        "select": pick(args.select, "item_head_select"),
        "weight_rule": pick(args.weight_rule, "item_head_weight_rule"),
        "seed": args.seed if args.seed is not None else int(cfg.get("seed", 0)),
        "transitions": pick(args.transitions, "item_head_transitions"),
        "similar": pick(args.similar, "item_head_similar"),
        "similar_stream": pick(args.similar_stream, "item_head_similar_stream"),
        "cold_neighbours": pick(args.cold_neighbours, "item_head_cold_neighbours"),
        "seen": pick(args.seen, "item_head_seen")})


def head_main(args: argparse.Namespace) -> int:
    """``genrec head``: fit the run's item head on its training sequences and write it into the run."""
    import torch

    from genrec import run_dir as layout
    from genrec.encoders.item_head import save_item_head
    from genrec.errors import ConfigError
    from genrec.inference.evaluate import served_split
    from genrec.inference.recommender import GenRecommender
    from genrec.io import write_json
    from genrec.item_tokenizer.artifact import load_item_tokenizer
    from genrec.runtime import set_threads
    from genrec.training.item_head import catalog_embeddings, fit_for_model, head_users

    set_threads(args.threads)
    args = head_settings(args, layout.read_config(layout.require_loadable(args.run)))
    logging.getLogger(__name__).info(
        "item head settings: users %s (epoch choice: %s, by %s; weight rule %s), beams %d, seed %d, transitions %d, similar %d (%s), "
        "cold neighbours %d, seen weight %s", args.users or "all",
        "the same" if args.epoch_users is None else args.epoch_users or "all", args.select, args.weight_rule, args.num_beams, args.seed,
        args.transitions, args.similar,
        args.similar_stream, args.cold_neighbours, "on" if args.seen else "off")
    if (args.users < 0 or args.num_beams < 1 or args.extra < 0 or args.transitions < 0 or args.similar < 0
            or args.cold_neighbours < 0 or (args.epoch_users is not None and args.epoch_users < 0)):
        raise ConfigError("--users must be >= 0, --epoch-users >= 0, --num-beams >= 1, --extra >= 0, "
                          "--transitions >= 0, --similar >= 0 and --cold-neighbours >= 0")
    torch.manual_seed(args.seed)
    rec = GenRecommender.from_pretrained(args.run, device="cpu", data_dir=args.data, item_head=False)
    _, split, _, _ = served_split(rec, args.data)  # training never saw held-out items: neither does the head
    valid, picks = head_users(split.valid, args.users, args.epoch_users, args.seed)
    emb = None
    if args.similar or args.cold_neighbours:
        itok = load_item_tokenizer(rec.run_dir / layout.ITEM_TOKENIZER)
        emb = catalog_embeddings(itok, args.similar_stream, [it.item_id for it in rec.items])
    head, report = fit_for_model(rec.model, rec.render, rec.trie, split.train, valid.histories, valid.targets,
                                 rec.num_items, max_history=rec.max_history, num_beams=args.num_beams,
                                 extra=args.extra, seed=args.seed, progress=not args.no_progress,
                                 transitions=args.transitions, similar=args.similar, embeddings=emb,
                                 seen=args.seen, cold_neighbours=args.cold_neighbours,
                                 epoch_users=picks, select=args.select, weight_rule=args.weight_rule)
    run = rec.run_dir
    save_item_head(head, run / layout.ITEM_HEAD, {"data": str(args.data), "seed": args.seed})
    write_json(run / layout.ITEM_HEAD_REPORT, report)
    chosen = report["by_weight"][str(head.weight)]
    codes = report["by_weight"]["0.0"]
    print(f"wrote {run / layout.ITEM_HEAD}: epoch {report['epoch']}, weight {head.weight}; validation NDCG@10 {chosen['ndcg@10']:.4f} "
          f"(codes alone {codes['ndcg@10']:.4f}), Recall@10 {chosen['recall@10']:.4f} ({codes['recall@10']:.4f}) "
          f"on {len(valid.targets)} users")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from genrec.hub import route_library_noise

    route_library_noise(args.verbose)
    module_name, func_name = args.handler.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        rc = func(args)
    except GenrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
