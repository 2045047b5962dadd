"""Experiment tracking, the Hugging Face way: a ``report_to`` setting (none | tensorboard | wandb |
mlflow) checked once, passed to ``TrainingArguments(report_to=...)`` by ``genrec train`` and
served by :class:`Tracker` to the training loops outside the Trainer (DIN, SASRec).

A backend needs its package; a missing one is named with the pip extra that installs it. The
JSONL logs every run writes do not depend on this setting.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
# backend -> (module that must be importable, genrec extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tracking"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


def check_report_to(value: str, key: str = "report_to") -> str:
    """``value`` if it names a backend whose package is installed; else a ``ValueError`` naming ``key``."""
    if value not in REPORT_TO:
        raise ValueError(f"{key} must be one of {', '.join(REPORT_TO)}; got {value!r}")
    if value != "none":
        module, extra = PACKAGES[value]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"{key}: {value} needs the {module!r} package, which is not installed; "
                             f"pip install 'genrec[{extra}]' (or set {key}: none)")
    return value


def hf_report_to(value: str) -> list[str]:
    """The ``TrainingArguments(report_to=...)`` value of a checked ``report_to`` setting."""
    return [] if value == "none" else [value]


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric fields of a log record, nested mappings flattened as ``valid/ndcg@10``."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


class Tracker:
    """Scalars of one training loop sent to a ``report_to`` backend, one call per epoch.

    ``tensorboard`` writes event files under ``log_dir`` (``torch.utils.tensorboard``);
    ``wandb`` and ``mlflow`` start a run named ``name`` with the resolved ``config``.
    """

    def __init__(self, report_to: str, log_dir: str | os.PathLike | None, name: str,
                 config: Mapping[str, Any] | None = None) -> None:
        self.report_to = check_report_to(report_to)
        self._writer: Any = None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))
        elif report_to == "wandb":
            import wandb

            self._writer = wandb.init(project=os.environ.get("WANDB_PROJECT", "genrec"), name=name,
                                      dir=None if log_dir is None else str(log_dir), config=dict(config or {}))
        elif report_to == "mlflow":
            import mlflow

            self._writer = mlflow
            self._writer.start_run(run_name=name)
            self._writer.log_params({k: str(v)[:500] for k, v in scalars({"config": config or {}}).items()})

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Send the numeric fields of ``record`` (all but ``epoch``/``step``) at ``step``."""
        values = {k: v for k, v in scalars(record).items() if k not in ("epoch", "step")}
        if self.report_to == "tensorboard":
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        elif self.report_to == "wandb":
            self._writer.log(values, step=step)
        elif self.report_to == "mlflow":  # mlflow metric names take no '@'
            self._writer.log_metrics({k.replace("@", "_at_"): v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if self.report_to == "tensorboard":
            self._writer.close()
        elif self.report_to == "wandb":
            self._writer.finish()
        elif self.report_to == "mlflow":
            self._writer.end_run()
        self.report_to = "none"


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    """TensorBoard event files under ``log_dir`` (for checks and tests)."""
    return sorted(Path(log_dir).rglob("events.out.tfevents.*"))
