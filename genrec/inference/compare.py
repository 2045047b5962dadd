"""``genrec compare DIR... --out OUT``: training runs, evaluations and baselines side by side.

Each ``DIR`` is recognised by its files:

- an evaluation (``genrec evaluate``): ``metrics.json`` + ``comparison.md``; its split's metrics;
- a baseline (``genrec baseline``): ``metrics.json`` + ``config.yaml``; valid and test metrics and,
  for SASRec, the per-epoch loss of ``train_log.jsonl``;
- a training run (``genrec train``): ``config.yaml`` + ``train_log.jsonl``; the per-step loss and,
  when it selected checkpoints by ranking (``training.select_by``), the validation ranking of its
  best evaluation.

``OUT`` receives, all at once (a temporary directory renamed into place):

- ``comparison.md``   one table: Recall/NDCG@5/10/20 per model and split (best per split in bold)
- ``metrics.png``     grouped bars of those metrics (test where present, else valid) per model
- ``loss_curves.png`` training loss curves overlaid: runs per step, baselines per epoch
- ``compare.json``    the same numbers, machine-readable
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genrec import run_dir as layout
from genrec.errors import DataError
from genrec.io import atomic_dir, read_json, write_json
from genrec.metrics import METRIC_KEYS
from genrec.plots import Series, bar_chart, line_chart, log_series, read_log

METRICS = "metrics.json"  # genrec evaluate / genrec baseline
COMPARISON = "comparison.md"  # genrec evaluate
PROVENANCE = "provenance.json"
SPLITS = ("valid", "test")


@dataclass
class Entry:
    """One compared directory: its label, kind, metrics per split and training-loss curve."""

    path: Path
    kind: str  # run | evaluation | baseline
    label: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    loss: tuple[list[float], list[float]] | None = None  # (steps or epochs, loss)
    notes: list[str] = field(default_factory=list)


def _metrics_of(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {s: {k: float(v) for k, v in record[s].items() if k in METRIC_KEYS or k == "users"}
            for s in SPLITS if isinstance(record.get(s), dict)}


def _loss(log: Path, x: str) -> tuple[list[float], list[float]] | None:
    if not log.is_file():
        return None
    records = [r for r in read_log(log) if not r.get("final")]
    return log_series(records, x, lambda k: k == "loss").get("loss")


def _read_evaluation(path: Path) -> Entry:
    prov = read_json(path / PROVENANCE) if (path / PROVENANCE).is_file() else {}
    run = (prov.get("config") or {}).get("run_dir")
    e = Entry(path, "evaluation", metrics=_metrics_of(read_json(path / METRICS)))
    if run:
        e.notes.append(f"evaluation of {run}")
    return e


def _read_baseline(path: Path) -> Entry:
    prov = read_json(path / PROVENANCE) if (path / PROVENANCE).is_file() else {}
    e = Entry(path, f"baseline ({prov['model']})" if prov.get("model") else "baseline",
              metrics=_metrics_of(read_json(path / METRICS)))
    e.loss = _loss(path / layout.TRAIN_LOG, "epoch")
    users = (prov.get("dataset_stats") or {}).get("users")
    for split in e.metrics.values():  # baselines score every user
        split.setdefault("users", float(users or 0))
    return e


def _read_run(path: Path) -> Entry:
    cfg = layout.read_config(path)
    e = Entry(path, "run")
    e.loss = _loss(path / layout.TRAIN_LOG, "step")
    training = cfg.get("training") or {}
    select = training.get("select_by", "loss")
    evals = [r for r in read_log(path / layout.TRAIN_LOG) if f"eval_{select}" in r]
    if select != "loss" and evals:
        best = max(evals, key=lambda r: r[f"eval_{select}"])
        e.metrics["valid"] = {k: float(best[f"eval_{k}"]) for k in METRIC_KEYS if f"eval_{k}" in best}
        e.metrics["valid"]["users"] = float(training.get("ranking_users", 0))
        e.notes.append(f"valid: training-time ranking at step {best.get('step')} (best {select})")
    else:
        e.notes.append("no ranking metrics in its log (training.select_by: loss); `genrec evaluate` it")
    return e


def read_entry(path: str | Path) -> Entry:
    """The :class:`Entry` of a run, evaluation or baseline directory; :class:`DataError` for anything else."""
    path = Path(path)
    has = {name: (path / name).is_file() for name in (METRICS, COMPARISON, layout.CONFIG, layout.TRAIN_LOG)}
    if has[METRICS] and has[COMPARISON]:
        return _read_evaluation(path)
    if has[METRICS] and has[layout.CONFIG]:
        return _read_baseline(path)
    if has[layout.CONFIG] and has[layout.TRAIN_LOG]:
        return _read_run(path)
    what = "does not exist" if not path.exists() else "is not a run, evaluation or baseline directory"
    raise DataError(f"{path} {what}: genrec compare takes `genrec train` runs (config.yaml + train_log.jsonl), "
                    "`genrec evaluate` outputs (metrics.json + comparison.md) and `genrec baseline` outputs "
                    "(metrics.json + config.yaml)")


def _labels(entries: list[Entry]) -> None:
    """Directory names, made unique with their parents' names where two collide."""
    for e in entries:
        e.label = e.path.name or str(e.path)
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.label] = seen.get(e.label, 0) + 1
    for e in entries:
        if seen[e.label] > 1:
            e.label = f"{e.path.parent.name}/{e.path.name}"


def table(entries: list[Entry]) -> str:
    """Markdown: one row per model and split; the best value of each metric within a split in bold."""
    keys = list(METRIC_KEYS)
    rows = [(e, s, e.metrics[s]) for s in SPLITS for e in entries if s in e.metrics]
    best = {(s, k): max((m[k] for _, s2, m in rows if s2 == s and k in m), default=math.nan)
            for s in SPLITS for k in keys}
    lines = ["| model | kind | split | users | " + " | ".join(keys) + " |", "|---|---|---|---:|" + "---:|" * len(keys)]
    for e, s, m in rows:
        cells = []
        for k in keys:
            if k not in m:
                cells.append("—")
            else:
                many = sum(1 for _, s2, m2 in rows if s2 == s and k in m2) > 1
                cells.append(f"**{m[k]:.4f}**" if many and m[k] == best[(s, k)] else f"{m[k]:.4f}")
        users = f"{int(m['users']):,}" if m.get("users") else ""
        lines.append(f"| {e.label} | {e.kind} | {s} | {users} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(dirs: list[str | Path], out: str | Path) -> list[Entry]:
    """Read every directory of ``dirs`` and write ``out`` (see the module docstring) atomically."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a directory; choose another output path")
    entries = [read_entry(d) for d in dirs]
    if any(e.path.resolve() == out.resolve() for e in entries):
        raise DataError(f"--out {out} is one of the compared directories; choose a separate output directory")
    _labels(entries)
    scored = [e for e in entries if e.metrics]
    bars = {f"{e.label} ({s})": {k: e.metrics[s].get(k, math.nan) for k in METRIC_KEYS}
            for e in scored for s in (("test",) if "test" in e.metrics else ("valid",))}
    panels: dict[str, Series] = {}
    for kind, title in (("run", "genrec train runs"), ("baseline", "baselines")):
        series = {e.label: e.loss for e in entries if e.loss and e.kind.startswith(kind)}
        if series:
            panels[title] = series
    notes = [f"- {e.label}: {n}" for e in entries for n in e.notes]
    intro = ("Recall/NDCG@K per model and split (leave-one-out; users: the users scored). Compare rows of the "
             "same split; evaluations on a user subset and training-time validation rankings are noisier than "
             "full evaluations.")
    charts = (f"Charts: {'metrics.png' if bars else '(no metrics.png: no metrics)'}, "
              f"{'loss_curves.png' if panels else '(no loss_curves.png: no training logs)'}.")
    md = ["# genrec compare", "", intro, "", table(entries) if scored else "(no metrics in any directory)", "",
          *(["Notes:", "", *notes, ""] if notes else []), charts]
    with atomic_dir(out) as tmp:
        (tmp / "comparison.md").write_text("\n".join(md) + "\n", encoding="utf-8")
        write_json(tmp / "compare.json", [{"label": e.label, "path": str(e.path), "kind": e.kind,
                                           "metrics": e.metrics} for e in entries])
        if bars:
            bar_chart(bars, tmp / "metrics.png", ylabel="value", title="Recall / NDCG@K (test, else valid)")
        if panels:
            line_chart(panels, tmp / "loss_curves.png", ylabel="training loss", logy=True,
                       xlabel={"genrec train runs": "step", "baselines": "epoch"})
    return entries


def main(args: argparse.Namespace) -> int:
    compare(args.dirs, args.out)
    print(Path(args.out, "comparison.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}: comparison.md, compare.json, metrics.png, loss_curves.png (where there is data)")
    return 0
