"""``genrec evaluate``: Recall/NDCG@K of a trained run under the baselines' protocol.

Protocol: the leave-one-out split of :mod:`genrec.data.split` with the run's
``tasks.max_history``; each user's history is rendered as its serving prompt (that of training) and
decoded by constrained beam search (``num_beams``, default 20) into a ranked list of up to 20
distinct catalog items; :func:`genrec.metrics.ranking_metrics` scores the lists — the same
function the baselines use, so the numbers are directly comparable with ``genrec baseline``'s
``metrics.json``. Seen items stay rankable (as for the baselines) unless ``exclude_history``, which
then applies to the baselines' re-scored rows as well.

``OUT`` (``--out``) receives, all at once when the evaluation succeeds:

- ``metrics.json``      ``{SPLIT: {recall@5 .. ndcg@20, invalid_rate, coverage, users}}``, plus
  ``SPLIT_cold`` for a run trained under the cold-start protocol (``tasks.cold_items``)
- ``comparison.md``     the model against each ``--baselines`` directory (on the same users)
- ``predictions.jsonl`` per user: user id, target, the ranked top-20 item ids
- ``provenance.json``   settings, seed, library versions, checksums of the data and the run

Under ``accelerate launch`` / ``torchrun`` the users are split across the processes (whole
batches, round robin; each process loads the run on its own GPU, or the CPU), the ranked lists
are gathered, and only the main process writes ``OUT``: the metrics equal a one-process run's.

Cold-start protocol: a run trained with ``tasks.cold_items`` is evaluated on the histories of
that hold-out (:func:`genrec.data.split.hold_out_items`), and the users whose target is a
held-out item are ranked a second time among the held-out items only (``SPLIT_cold``, the
baselines' ``test_cold``); baselines trained under the same hold-out are re-scored on them.

``invalid_rate`` is the share of returned hypotheses whose generated tokens are not the index of
a catalog item (checked by decoding each sequence, not by trusting the trie; 0 by construction).
``coverage`` is the share of catalog items appearing in at least one top-20 list.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from genrec import run_dir as layout
from genrec.data.dataset import Dataset
from genrec.data.split import (
    EvalSet,
    Split,
    hold_out_items,
    leave_one_out,
    recorded_holdout,
    sample_users,
    subset,
)
from genrec.errors import ConfigError, DataError
from genrec.io import atomic_dir, checksums, provenance, sha256_file, write_json
from genrec.metrics import DEFAULT_KS, METRIC_KEYS, ranking_metrics, top1_share
from genrec.runtime import Ranks, resolve_device

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")
DATASET_FILES = ("items.jsonl", "sequences.jsonl", "stats.json", "manifest.json")


def evaluate_run(run_dir: str | Path, data_dir: str | Path, split: str = "test", num_beams: int = 20,
                 batch_size: int = 8, max_users: int | None = None, seed: int = 0, progress: bool = True, *,
                 exclude_history: bool = False, out: str | Path | None = None,
                 baselines: Sequence[str | Path] = (), recommender: Any = None,
                 scoring: str = "beam", item_head: bool = True) -> dict[str, Any]:
    """Evaluate a ``genrec train`` run on ``split`` of the dataset ``data_dir``.

    ``max_users`` evaluates a seeded (``seed``) random subset of users; ``recommender`` reuses an
    already loaded :class:`~genrec.inference.recommender.GenRecommender` of the run (its own
    ``scoring`` then applies); ``scoring="exact"`` ranks by every item's score instead of beam
    search (:mod:`genrec.generation.exact`); ``item_head=False`` ignores the run's item head (the
    codes alone rank); ``out`` writes the
    artifacts listed in the module docstring, ``baselines`` adds them to ``comparison.md``.

    Returns ``{split: {recall@5 .. ndcg@20, invalid_rate, coverage, users}, "split": split,
    "user_indices": [...], "num_beams": ..., "seconds": ...}`` — ``result[split]`` is what
    ``metrics.json`` holds under the split's key; ``user_indices`` are the evaluated rows of the
    split (= user indices of the dataset), to evaluate baselines on the same users with
    :func:`baseline_metrics`.
    """
    from genrec.inference.recommender import GenRecommender

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if num_beams < 1 or batch_size < 1:
        raise ConfigError(f"num_beams and batch_size must be >= 1, got {num_beams}, {batch_size}")
    start = time.time()
    data_dir = Path(data_dir)
    ranks = Ranks()
    rec = recommender or GenRecommender.from_pretrained(run_dir, device=resolve_device("auto"), data_dir=data_dir,
                                                        scoring=scoring, item_head=item_head)
    ds, full, holdout, cold = served_split(rec, data_dir, run_dir)
    evalset = getattr(full, split)
    users = sample_users(len(evalset), max_users, seed)
    data = subset(evalset, users)
    ranked, metrics, k = _rank(rec, data, num_beams, batch_size, exclude_history, None, progress, f"evaluate {split}")
    seconds = time.time() - start
    log.info("%s: recall@10 %.4f ndcg@10 %.4f over %d users in %.0f s", split, metrics["recall@10"],
             metrics["ndcg@10"], len(data), seconds)
    result = {split: metrics, "split": split, "user_indices": users.tolist(), "num_beams": int(max(num_beams, k)),
              "scoring": rec.scoring, "seconds": round(seconds, 2),
              "item_head": None if rec.item_head is None else rec.item_head.weight}
    if cold is not None:
        result["holdout"] = {"cold_items": holdout[0], "cold_seed": holdout[1], "items": int(cold.sum())}
        at = np.flatnonzero(cold[data.targets])  # users whose target is a held-out item
        if not len(at):
            log.warning("none of the %d evaluated users has a held-out item as %s target: no %s_cold metrics",
                        len(data), split, split)
        else:  # ranked among the held-out items only
            _, result[f"{split}_cold"], _ = _rank(rec, subset(data, at), num_beams, batch_size, exclude_history,
                                                  np.flatnonzero(cold), progress, f"evaluate {split} (cold items)")
            result["cold_user_indices"] = users[at].tolist()
            log.info("%s, cold items: recall@10 %.4f ndcg@10 %.4f over %d users", split,
                     result[f"{split}_cold"]["recall@10"], result[f"{split}_cold"]["ndcg@10"], len(at))
    if out is not None:
        settings = {"run_dir": str(run_dir), "data_dir": str(data_dir), "split": split, "num_beams": num_beams,
                    "scoring": rec.scoring, "item_head": result["item_head"],
                    "batch_size": batch_size, "max_users": max_users, "seed": seed,
                    "exclude_history": exclude_history, "max_history": rec.max_history, "prompt_template": 0,
                    "base_model": rec.base_model}
        settings["processes"] = ranks.world
        ok = False
        try:
            if ranks.is_main:
                _write(Path(out), result, rec, ds, data_dir, data, ranked, baselines, settings, progress)
            ok = True
        finally:  # OUT is complete on every process's return; a failed write fails every process
            if ranks.world > 1 and not all(ranks.gather(ok)) and ok:
                raise DataError(f"the main process could not write {out}; see its error message")
    return result


def _rank(rec: Any, data: EvalSet, num_beams: int, batch_size: int, exclude_history: bool,
          allow: np.ndarray | None, progress: bool, desc: str) -> tuple[np.ndarray, dict[str, float], int]:
    """Rank items for every user of ``data`` (split across processes, gathered): ``(ranked [U, 20]
    item indices, -1 = none; metrics; items ranked per user)``. ``allow``: rank only these items."""
    ranks = Ranks()
    k_max = max(DEFAULT_KS)
    pool = rec.num_items if allow is None else len(allow)
    exact = rec.scoring == "exact"
    k = min(k_max, pool) if exact else min(k_max, num_beams, pool)
    if k < k_max and not exact:
        log.warning("ranking only %d items per user (num_beams=%d, %d items): metrics @%d count targets beyond "
                    "rank %d as misses", k, num_beams, pool, k_max, k)
    ranked = np.full((len(data), k_max), -1, dtype=np.int64)
    generated = invalid = 0
    starts = [range(0, len(data), batch_size)[b] for b in ranks.mine(-(-len(data) // batch_size))]
    mine = [i for lo in starts for i in range(lo, min(lo + batch_size, len(data)))]
    bar = tqdm(total=len(mine), desc=desc, disable=not progress or not ranks.is_main, unit="user")
    for lo in starts:
        hist = data.histories[lo:lo + batch_size]
        rendered = [rec.render(h) for h in hist]
        prompts, places = [r[0] for r in rendered], [r[1] for r in rendered]
        filters = [_filter(h if exclude_history else None, allow) for h in hist]
        results, counts = rec.search(prompts, filters, k, max(num_beams, k), places, hist)
        generated += counts["generated"]
        invalid += counts["invalid"]
        for j, row in enumerate(results):
            items = [i for i, _ in row][:k_max]
            ranked[lo + j, :len(items)] = items
        bar.update(len(hist))
    bar.close()
    if ranks.world > 1:  # every process gets every row: the batches are those of one process
        parts = ranks.gather((mine, ranked[mine], generated, invalid))
        generated, invalid = sum(p[2] for p in parts), sum(p[3] for p in parts)
        for rows, got, _, _ in parts:
            ranked[rows] = got
    metrics = ranking_metrics(ranked, data.targets)
    shown = ranked[ranked >= 0]
    metrics.update({"invalid_rate": invalid / generated if generated else 0.0,
                    "coverage": len(np.unique(shown)) / pool, "top1_share": top1_share(ranked),
                    "users": len(data)})
    return ranked, metrics, k


def _filter(history: np.ndarray | None, allow: np.ndarray | None) -> Any:
    """The request filter of one user: seen items excluded (``history``), only ``allow`` rankable."""
    from genrec.generation import ItemFilter

    seen = np.unique(history).tolist() if history is not None and len(history) else None
    if seen is None and allow is None:
        return None
    return ItemFilter(exclude=seen, allow=None if allow is None else allow.tolist())  # lists: filters test truthiness


def served_split(rec: Any, data_dir: str | Path, run_dir: str | Path | None = None
                 ) -> tuple[Dataset, Split, tuple[float, int], np.ndarray | None]:
    """``(dataset, leave-one-out split, (cold_items, cold_seed), held-out mask [N] or None)`` of the
    dataset at ``data_dir`` as the loaded run ``rec`` sees it: under the run's cold-start protocol the
    held-out items leave the histories. Raises :class:`DataError` when the dataset's items are not
    the run's catalog."""
    ds = Dataset.load(data_dir)
    if [it.item_id for it in ds.items] != [it.item_id for it in rec.items]:
        raise DataError(f"the items of {data_dir} differ from the catalog the run was loaded with; pass the "
                        "dataset the model was trained on")
    split = leave_one_out(ds, rec.max_history)
    holdout = run_holdout(rec.run_dir or run_dir)
    cold = None
    if holdout[0]:  # the run's cold-start protocol: histories without the held-out items
        split, cold = hold_out_items(split, *holdout)
    return ds, split, holdout, cold


def run_holdout(run_dir: str | Path) -> tuple[float, int]:
    """``(tasks.cold_items, tasks.cold_seed)`` a run was trained with (``(0.0, 0)``: no items held out)."""
    try:
        return recorded_holdout(layout.read_config(Path(run_dir)).get("tasks"))
    except OSError:
        return 0.0, 0


# ------------------------------------------------------------------------------------- baselines
def baseline_metrics(baseline_dir: str | Path, data_dir: str | Path, split: str = "test",
                     user_indices: Sequence[int] | None = None, progress: bool = False,
                     exclude_history: bool | None = None) -> dict[str, float]:
    """Metrics of a ``genrec baseline`` output on ``split``, on the given users only
    (:func:`genrec.baselines.artifact.rescore`; ``user_indices=None``: all users;
    ``exclude_history`` overrides the baseline's own setting, ``None`` keeps it)."""
    from genrec.baselines.artifact import rescore

    return rescore(baseline_dir, data_dir, split, user_indices, progress, exclude_history=exclude_history)


def comparison_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table ``model | users | recall@5 .. ndcg@20``; the best value per column in bold."""
    keys = list(METRIC_KEYS)
    best = {k: max(r[k] for r in rows.values()) for k in keys}
    lines = ["| model | users | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for name, m in rows.items():
        cells = [f"**{m[k]:.4f}**" if m[k] == best[k] and len(rows) > 1 else f"{m[k]:.4f}" for k in keys]
        lines.append(f"| {name} | {m.get('users', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cold_rows(baselines: Sequence[str | Path], data_dir: Path, split: str, users: np.ndarray,
               holdout: tuple[float, int], progress: bool) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The baselines on the users whose target is a held-out item, ranking the held-out items only;
    baselines trained under another hold-out (or none) are named in the notes instead."""
    from genrec.baselines.artifact import holdout as baseline_holdout
    from genrec.baselines.artifact import read_provenance, rescore

    rows, notes = {}, []
    for b in baselines:
        bdir = Path(b)
        name = f"{read_provenance(bdir).get('model', 'baseline')} ({bdir.name})"
        theirs = baseline_holdout(bdir)
        if theirs != holdout:
            notes.append(f"- {name}: trained with cold_items={theirs[0]} cold_seed={theirs[1]}, not the run's "
                         f"{holdout[0]} / {holdout[1]}: left out of the cold-item table")
            continue
        rows[name] = {**rescore(bdir, data_dir, split, users, progress, cold_only=True), "users": len(users)}
    return rows, notes


def _baseline_rows(baselines: Sequence[str | Path], data_dir: Path, split: str, users: np.ndarray, n_all: int,
                   our_items_sha: str, progress: bool, holdout: tuple[float, int] = (0.0, 0),
                   exclude_history: bool = False) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The baselines' rows of the comparison, on ``users`` and under the run's ``exclude_history``."""
    from genrec.baselines.artifact import METRICS, read_provenance
    from genrec.baselines.artifact import holdout as baseline_holdout

    rows, notes = {}, []
    for b in baselines:
        bdir = Path(b)
        if not (bdir / METRICS).is_file():
            raise DataError(f"--baselines {bdir}: no metrics.json there; give directories written by "
                            "`genrec baseline`")
        prov = read_provenance(bdir)
        name = f"{prov.get('model', 'baseline')} ({bdir.name})"
        shas = [v for p, v in (prov.get("inputs") or {}).items() if p.endswith("items.jsonl")]
        if shas and our_items_sha not in shas:
            notes.append(f"- warning: {name} was trained on a dataset whose items.jsonl differs from {data_dir}'s")
        if baseline_holdout(bdir) != holdout:
            notes.append(f"- warning: {name} was trained with cold_items / cold_seed {baseline_holdout(bdir)}, the "
                         f"run with {holdout}: their training data and test histories differ")
        try:
            m = baseline_metrics(bdir, data_dir, split, None if len(users) == n_all else users, progress,
                                 exclude_history=exclude_history)
        except (DataError, OSError) as e:
            if len(users) == n_all and not exclude_history:
                raise
            notes.append(f"- {name}: could not re-score on these users under this protocol ({e}); its all-user "
                         "metrics.json shown")
            m = {**baseline_metrics(bdir, data_dir, split), "users": n_all}
        else:
            m["users"] = len(users)
        rows[name] = m
    return rows, notes


def _write(out: Path, result: dict[str, Any], rec: Any, ds: Dataset, data_dir: Path, data: EvalSet,
           ranked: np.ndarray, baselines: Sequence[str | Path], settings: dict[str, Any], progress: bool) -> None:
    split = result["split"]
    metrics = result[split]
    users = np.asarray(result["user_indices"], dtype=np.int64)
    n_all = len(getattr(leave_one_out(ds, rec.max_history), split))
    items_sha = sha256_file(data_dir / "items.jsonl")
    hold = result.get("holdout")
    holdout = (hold["cold_items"], hold["cold_seed"]) if hold else (0.0, 0)
    rows, notes = _baseline_rows(baselines, data_dir, split, users, n_all, items_sha, progress, holdout,
                                 settings["exclude_history"])
    model_name = f"genrec ({rec.name or 'model'})"
    table = comparison_table({model_name: metrics, **rows})
    scope = "all users" if len(users) == n_all else f"a seeded random subset of {len(users)} of {n_all} users " \
        f"(seed {settings['seed']}); baselines re-scored on the same users"
    if settings["exclude_history"] and rows:
        scope += ", the history's items removed from every model's ranking"
    how = "exact scoring of every item" if result.get("scoring") == "exact" else \
        f"constrained beam search, {result['num_beams']} beams"
    if result.get("item_head") is not None:
        how += f", fused with the item head (weight {result['item_head']})"
    md = (f"# {model_name} vs baselines — {split} split\n\n"
          f"Leave-one-out, full catalog ({rec.num_items} items), {scope}. genrec: {how}, history ≤ {rec.max_history}, "
          f"{'history excluded' if settings['exclude_history'] else 'seen items kept rankable'}; "
          f"invalid rate {metrics['invalid_rate']:.4f}, coverage@20 {metrics['coverage']:.4f}, top-1 share "
          f"{metrics['top1_share']:.4f}.\n\n{table}\n")
    if notes:
        md += "\n" + "\n".join(notes) + "\n"
    cold_key = f"{split}_cold"
    if cold_key in result:
        cold_users = np.asarray(result["cold_user_indices"], dtype=np.int64)
        crows, cnotes = _cold_rows(baselines, data_dir, split, cold_users, holdout, progress)
        cm = result[cold_key]
        md += (f"\n## Held-out items (cold start)\n\n{hold['items']} items (cold_items={hold['cold_items']}, "
               f"cold_seed={hold['cold_seed']}) never reached training. The {len(cold_users)} users above whose "
               f"{split} target is one of them, ranked among those items only; genrec: coverage "
               f"{cm['coverage']:.4f} of them, top-1 share {cm['top1_share']:.4f}.\n\n"
               f"{comparison_table({model_name: cm, **crows})}\n")
        if cnotes:
            md += "\n" + "\n".join(cnotes) + "\n"
    run_dir = rec.run_dir or Path(settings["run_dir"])
    inputs = checksums([data_dir / f for f in DATASET_FILES] + [run_dir / f for f in layout.IDENTITY_FILES])
    with atomic_dir(out) as tmp:
        write_json(tmp / "metrics.json", {k: result[k] for k in (split, f"{split}_cold") if k in result})
        (tmp / "comparison.md").write_text(md, encoding="utf-8")
        rows = zip(data.users.tolist(), data.targets.tolist(), ranked.tolist())
        with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"user_id": ds.users[u], "target": ds.items[t].item_id,
                                     "ranked": [ds.items[i].item_id for i in row if i >= 0]},
                                    ensure_ascii=False) + "\n" for u, t, row in rows)
        prov = provenance(config=settings, seed=settings["seed"], inputs=inputs)
        prov.update({"user_indices": result["user_indices"], "seconds": result["seconds"],
                     "baselines": [str(b) for b in baselines]})
        if hold:
            prov.update({"holdout": hold, "cold_user_indices": result.get("cold_user_indices", [])})
        write_json(tmp / "provenance.json", prov)
    log.info("wrote %s", out)


def main(args: argparse.Namespace) -> int:
    """``genrec evaluate``."""
    from genrec.runtime import set_threads

    set_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory; choose another output path")
    result = evaluate_run(args.model, args.data, split=args.split, num_beams=args.num_beams,
                          batch_size=args.batch_size, max_users=args.max_users, seed=args.seed,
                          progress=not args.no_progress, exclude_history=args.exclude_history, out=out,
                          baselines=args.baselines or (), scoring=args.scoring, item_head=not args.no_item_head)
    if Ranks().is_main:
        print((out / "comparison.md").read_text(encoding="utf-8"))
        print(f"wrote {out}/metrics.json ({result['seconds']:.0f} s)")
    return 0
