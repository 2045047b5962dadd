"""The one early-stopping loop of the behavior encoders (DIN, SASRec).

Per epoch: train (``run_epoch``), validate when due (``validate``), keep the weights of the
best validation ``metric``, append the epoch's record to a JSONL log, stop after ``patience``
evaluations without a gain. What an epoch and a validation do, and what a record holds, stay
with the encoder; the bookkeeping is here, with the curves: each record goes to the
``report_to`` tracker (:mod:`genrec.tracking`; TensorBoard events under ``LOG_DIR/tensorboard/NAME``)
and, given the log's path, loss and validation PNGs are drawn beside it (:func:`write_curves`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from torch import nn

from genrec.plots import line_chart, log_series
from genrec.tracking import Tracker

Record = dict[str, Any]


@dataclass
class FitResult:
    """What :func:`fit` saw: every epoch's record and the best validated epoch (``0`` if none)."""

    history: list[Record] = field(default_factory=list)
    best_epoch: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def fit(model: nn.Module, epochs: int, run_epoch: Callable[[int], Record],
        validate: Callable[[int, Record], dict[str, float]], *, due: Callable[[int], bool], patience: int,
        metric: str = "ndcg@10", log: IO[str] | None = None,
        on_record: Callable[[Record], None] | None = None, report_to: str = "none",
        log_path: str | Path | None = None, name: str = "encoder") -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs; on return it holds the best validated weights.

    ``run_epoch(epoch)`` trains one epoch and returns the start of its record (``{"loss": ...}``);
    when ``due(epoch)``, ``validate(epoch, record)`` returns the validation metrics and may add
    fields to the record. ``on_record(record)`` runs before the record is logged (timings,
    messages). Weights are restored only when some epoch was validated. ``report_to`` names the
    tracker of the records; ``log_path`` (the JSONL log's path) places its event files and the PNG
    curves (:func:`write_curves`).
    """
    log_dir = Path(log_path).parent / "tensorboard" / name if log_path is not None else None
    tracker = Tracker(report_to, log_dir, name) if report_to != "none" else None
    try:
        result = _loop(model, epochs, run_epoch, validate, due, patience, metric, log, on_record, tracker)
    finally:
        if tracker is not None:
            tracker.close()
    if log_path is not None:
        write_curves(result.history, log_path)
    return result


def _loop(model: nn.Module, epochs: int, run_epoch: Callable[[int], Record],
          validate: Callable[[int, Record], dict[str, float]], due: Callable[[int], bool], patience: int,
          metric: str, log: IO[str] | None, on_record: Callable[[Record], None] | None,
          tracker: Tracker | None) -> FitResult:
    result = FitResult()
    best, best_state, bad = float("-inf"), None, 0
    for epoch in range(1, epochs + 1):
        record: Record = {"epoch": epoch, **run_epoch(epoch)}
        if due(epoch):
            metrics = validate(epoch, record)
            if metrics[metric] > best:
                best, bad = metrics[metric], 0
                result.best_epoch, result.best_metrics = epoch, metrics
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        if on_record is not None:
            on_record(record)
        result.history.append(record)
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if tracker is not None:
            tracker.log(record, step=epoch)
        if bad >= patience:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def curve_paths(log_path: str | Path) -> tuple[Path, Path]:
    """``(loss PNG, validation PNG)`` beside a JSONL log: ``loss_curve.png`` / ``valid_curve.png``
    for ``train_log.jsonl`` or ``history.jsonl``, ``din_loss_curve.png`` ... for ``din_log.jsonl``."""
    log_path = Path(log_path)
    prefix = "" if log_path.stem in ("train_log", "history") else log_path.stem.removesuffix("log")
    return log_path.with_name(f"{prefix}loss_curve.png"), log_path.with_name(f"{prefix}valid_curve.png")


def write_curves(history: list[Record], log_path: str | Path) -> list[Path]:
    """Draw the training loss and the validation metrics of ``history`` per epoch (see :func:`curve_paths`)."""
    loss_png, valid_png = curve_paths(log_path)
    written = []
    loss = log_series(history, "epoch", lambda k: k.startswith("loss"))
    if loss:
        written.append(line_chart({"": loss}, loss_png, xlabel="epoch", ylabel="training loss", logy=True))
    valid = log_series(history, "epoch", lambda k: k.startswith("valid/"))
    if valid:
        written.append(line_chart({"": valid}, valid_png, xlabel="epoch", ylabel="validation metric",
                                  markers=valid))
    return written
