"""The one early-stopping loop of the behavior encoders (DIN, SASRec).

Per epoch: train (``run_epoch``), validate when due (``validate``), keep the weights of the
best validation ``metric``, append the epoch's record to a JSONL log, stop after ``patience``
evaluations without a gain. What an epoch and a validation do, and what a record holds, stay
with the encoder; the bookkeeping is here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from torch import nn

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
        on_record: Callable[[Record], None] | None = None) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs; on return it holds the best validated weights.

    ``run_epoch(epoch)`` trains one epoch and returns the start of its record (``{"loss": ...}``);
    when ``due(epoch)``, ``validate(epoch, record)`` returns the validation metrics and may add
    fields to the record. ``on_record(record)`` runs before the record is logged (timings,
    messages). Weights are restored only when some epoch was validated.
    """
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
        if bad >= patience:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
