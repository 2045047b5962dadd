"""``report_to`` (none | tensorboard | wandb | mlflow): checked once, TensorBoard events and PNG curves
for `genrec train`, the DIN encoder and the SASRec baseline; the JSONL logs stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genrec import cli, tracking
from genrec.config import load_config
from genrec.data.split import leave_one_out
from genrec.encoders.din import DINConfig, train_din
from genrec.encoders.sasrec import SASRecConfig
from genrec.errors import ConfigError
from genrec.testing import make_tiny_run, tiny_dataset
from genrec.training.config import TrainConfig

REQUIRED = ["data=D", "tokenizer=T"]


def _scalar_tags(log_dir: Path) -> set[str]:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in tracking.event_files(log_dir):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_unknown_backend_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"training.report_to must be one of none, tensorboard, wandb, mlflow"):
        load_config(TrainConfig, None, [*REQUIRED, "training.report_to=tensorbord"])
    with pytest.raises(ConfigError, match="report_to must be one of"):
        load_config(SASRecConfig, None, ["report_to=comet"])
    assert load_config(TrainConfig, None, REQUIRED).training.report_to == "none"
    assert tracking.hf_report_to("none") == [] and tracking.hf_report_to("wandb") == ["wandb"]


@pytest.mark.parametrize("backend, extra", [("tensorboard", "tracking"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_package_names_the_pip_extra(monkeypatch, backend, extra):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=rf"needs the '{backend}' package.*pip install 'genrec\[{extra}\]'"):
        load_config(TrainConfig, None, [*REQUIRED, f"training.report_to={backend}"])
    with pytest.raises(ConfigError, match=rf"genrec\[{extra}\]"):
        load_config(DINConfig, None, [f"report_to={backend}"])


def test_din_writes_events_and_curves_beside_its_log(tmp_path):
    pytest.importorskip("tensorboard")
    split = leave_one_out(tiny_dataset(), max_history=8)
    cfg = DINConfig(dim=8, max_history=8, attention_hidden=[8], mlp_hidden=[8], num_negatives=4, batch_size=32,
                    epochs=2, eval_users=0, num_threads=1, report_to="tensorboard")
    log = tmp_path / "din_log.jsonl"
    train_din(split, cfg, progress=False, log_path=log)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2]  # the JSONL log stays
    assert (tmp_path / "din_loss_curve.png").stat().st_size > 0 and (tmp_path / "din_valid_curve.png").is_file()
    assert {"loss", "valid/ndcg@10", "valid/recall@10"} <= _scalar_tags(tmp_path / "tensorboard" / "din")


def test_sasrec_baseline_writes_events_and_curves(tmp_path):
    pytest.importorskip("tensorboard")
    data = tiny_dataset().save(tmp_path / "ds")
    out = tmp_path / "sasrec"
    assert cli.main(["baseline", "--data", str(data), "--model", "sasrec", "--out", str(out), "epochs=2",
                     "hidden=8", "batch_size=32", "num_threads=1", "report_to=tensorboard"]) == 0
    assert (out / "train_log.jsonl").is_file() and (out / "loss_curve.png").is_file()
    assert (out / "valid_curve.png").is_file()
    assert {"loss", "valid/ndcg@10"} <= _scalar_tags(out / "tensorboard" / "sasrec")


def test_train_reports_to_tensorboard_in_the_run_dir(tmp_path):
    pytest.importorskip("tensorboard")
    run = make_tiny_run(tmp_path, steps=2, overrides=["training.report_to=tensorboard"])
    assert (run / "train_log.jsonl").is_file() and (run / "loss_curve.png").is_file()
    tags = _scalar_tags(run / "tensorboard")
    assert "train/loss" in tags and "eval/loss" in tags
    assert not list((run / "checkpoints").glob("runs"))


def test_a_run_started_before_report_to_existed_still_resumes(tmp_path):
    import yaml

    from genrec.config import to_dict
    from genrec.training.recipe import check_resume

    cfg = load_config(TrainConfig, None, [*REQUIRED, f"output_dir={tmp_path}"])
    saved = to_dict(cfg)
    del saved["training"]["report_to"]
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume(cfg.run_dir, cfg)  # the new key reads as its default
    cfg.training.report_to = "tensorboard"
    with pytest.raises(ConfigError, match=r"training\.report_to"):
        check_resume(cfg.run_dir, cfg)
