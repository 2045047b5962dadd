"""`genrec baseline` through the CLI: artifact contents, bad input, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from genrec import cli
from genrec.baselines import run as baseline_run
from genrec.baselines.artifact import load_sasrec
from genrec.baselines.popularity import PopularityConfig
from genrec.config import load_config
from genrec.encoders.sasrec import SASRecConfig
from genrec.metrics import METRIC_KEYS

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ["epochs=3", "hidden=16", "batch_size=64", "num_threads=1"]


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_pop_writes_metrics_config_and_provenance(successor_dir, tmp_path, capsys):
    out = tmp_path / "pop"
    assert cli.main(["baseline", "--data", str(successor_dir), "--model", "pop", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["valid", "test"]
    assert all(list(metrics[s]) == list(METRIC_KEYS) for s in metrics)
    assert all(0.0 <= v <= 1.0 for s in metrics.values() for v in s.values())
    assert yaml.safe_load((out / "config.yaml").read_text())["test_counts"] == "train"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["model"] == "pop" and "torch" in prov["versions"]
    assert {Path(p).name for p in prov["inputs"]} >= {"items.jsonl", "sequences.jsonl", "stats.json"}
    assert "recall@10" in capsys.readouterr().out


def test_sasrec_writes_log_and_loadable_checkpoint(successor_dir, tmp_path):
    out = tmp_path / "sasrec"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("hidden: 32\nlr: 0.005\n")
    rc = cli.main(["baseline", "--data", str(successor_dir), "--model", "sasrec", "--out", str(out),
                   "--config", str(cfg), *TINY, "seed=5"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [list(metrics[s]) for s in ("valid", "test")] == [list(METRIC_KEYS)] * 2
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["hidden"] == 16 and resolved["lr"] == 0.005 and resolved["seed"] == 5  # overrides win
    assert json.loads((out / "provenance.json").read_text())["seed"] == 5
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log[:-1]] == [1, 2, 3] and log[-1]["final"]
    assert log[-1]["test"] == metrics["test"]
    model, loaded = load_sasrec(out / "model.pt")
    assert loaded.hidden == 16 and model.num_items == 40
    table = np.load(out / "item_embeddings.npy")  # the item table, usable as a behavior stream
    assert table.shape == (40, 16) and np.allclose(table, model.item_embeddings())
    # The resolved config reproduces the run exactly.
    again = tmp_path / "again"
    assert cli.main(["baseline", "--data", str(successor_dir), "--model", "sasrec", "--out", str(again),
                     "--config", str(out / "config.yaml")]) == 0
    assert json.loads((again / "metrics.json").read_text()) == metrics


def test_data_that_is_not_a_dataset_exits_2(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "user_sequence.txt").write_text("u1 a b c\n")
    rc = cli.main(["baseline", "--data", str(tmp_path / "raw"), "--model", "pop", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not a genrec dataset directory" in err and "genrec data prepare" in err
    assert not (tmp_path / "o").exists()


def test_unknown_config_key_exits_2(successor_dir, tmp_path, capsys):
    rc = cli.main(["baseline", "--data", str(successor_dir), "--model", "sasrec", "--out", str(tmp_path / "o"),
                   "hiden=32"])
    assert rc == 2
    assert "unknown config key 'hiden'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("test_counts: train\nsmoothing: 1\n")
    rc = cli.main(["baseline", "--data", str(successor_dir), "--model", "pop", "--out", str(tmp_path / "o"),
                   "--config", str(bad)])
    assert rc == 2 and "smoothing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _run_expecting(args: list[str], exc: BaseException) -> None:
    """The CLI turns an interrupt into exit 130; other failures propagate."""
    if isinstance(exc, KeyboardInterrupt):
        assert cli.main(args) == 130
    else:
        with pytest.raises(type(exc)):
            cli.main(args)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_or_interrupted_run_leaves_no_partial_output(successor_dir, tmp_path, monkeypatch, exc):
    def failing(split, cfg, progress=True, log_path=None, **kwargs):
        Path(log_path).write_text('{"epoch": 1}\n')  # something was written before the failure
        raise exc

    monkeypatch.setattr(baseline_run, "train_sasrec", failing)
    base = ["baseline", "--data", str(successor_dir), "--model", "sasrec", "--out"]
    _run_expecting([*base, str(tmp_path / "fresh")], exc)
    assert not (tmp_path / "fresh").exists() and not _leftovers(tmp_path, "fresh")
    # An earlier complete run in the same place survives a failed re-run untouched.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "metrics.json").write_text("{}")
    _run_expecting([*base, str(kept)], exc)
    assert [p.name for p in kept.iterdir()] == ["metrics.json"] and not _leftovers(tmp_path, "kept")


def test_recipes_load():
    assert load_config(SASRecConfig, RECIPES / "baseline_sasrec_beauty.yaml").loss == "ce"
    assert load_config(SASRecConfig, RECIPES / "baseline_sasrec_ml100k.yaml").max_len >= 1
    text = load_config(SASRecConfig, RECIPES / "baseline_sasrec_text.yaml")
    assert (text.item_embeddings, text.text.model, text.text_norm) == ("text+id", "minilm", "whiten")
    assert text.adapter_dropout < text.dropout
    assert load_config(PopularityConfig, None, []).test_counts == "train"
