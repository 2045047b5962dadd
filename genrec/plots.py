"""Headless PNG charts shared by training runs, the behavior encoders, baselines and ``genrec compare``.

Curves come from JSONL logs (one JSON object per line): :func:`log_series` picks numeric fields,
nested ones flattened as ``valid/ndcg@10``; :func:`line_chart` draws one or more panels of
series; :func:`bar_chart` draws grouped bars. matplotlib runs on its ``Agg`` backend, so no
display is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Series = dict[str, tuple[list[float], list[float]]]  # name -> (xs, ys)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL log, blank and non-object lines skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
    return out


def _flat(rec: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in rec.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def log_series(records: Iterable[Mapping[str, Any]], x: str, keep: Callable[[str], bool]) -> Series:
    """``{field: (xs, ys)}`` of every numeric field ``keep`` accepts, against the record's ``x``."""
    series: Series = {}
    for rec in records:
        if not isinstance(rec.get(x), (int, float)):
            continue
        for key, value in _flat(rec):
            if key != x and keep(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(rec[x])
                ys.append(value)
    return series


def line_chart(panels: Mapping[str, Series], out_png: str | os.PathLike, *, xlabel: str | Mapping[str, str],
               ylabel: str, logy: bool = False, markers: Iterable[str] = ()) -> Path:
    """One panel per ``{title: series}`` side by side, each series a line (``markers``: names drawn
    with dots, e.g. sparse evaluations); ``xlabel`` is one label or one per panel."""
    plt = _pyplot()
    marked = set(markers)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(7 * max(len(panels), 1), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items()):
        for name, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, label=name, marker="o" if name in marked or len(xs) == 1 else None, markersize=3)
        ax.set_xlabel(xlabel if isinstance(xlabel, str) else xlabel.get(title, ""))
        ax.set_ylabel(ylabel)
        if logy and all(y > 0 for _, ys in series.values() for y in ys):
            ax.set_yscale("log")
        if title:
            ax.set_title(title, fontsize=9)
        if series:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def bar_chart(values: Mapping[str, Mapping[str, float]], out_png: str | os.PathLike, *, ylabel: str,
              title: str = "") -> Path:
    """Grouped bars: one group per metric, one bar per ``{model: {metric: value}}`` model."""
    import numpy as np

    plt = _pyplot()
    metrics = list(dict.fromkeys(m for per in values.values() for m in per))
    width = 0.8 / max(len(values), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(metrics) * max(len(values), 1) ** 0.5), 4))
    xs = np.arange(len(metrics))
    for i, (model, per) in enumerate(values.items()):
        ax.bar(xs + (i - (len(values) - 1) / 2) * width, [per.get(m, np.nan) for m in metrics], width, label=model)
    ax.set_xticks(xs, metrics)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
