"""`genrec demo` end to end on the embedded defaults, with a tiny training and evaluation budget."""

import json
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_demo_runs_every_stage_and_reuses_them(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "genrec.cli", "demo", "--out", str(out), "--train-steps", "2",
           "--tiny-epochs", "0.2", "--eval-users", "8", "--llm-eval-users", "4", "--num-beams", "5"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"=== {stage}" in first.stdout
    assert "| genrec (ml100k-tiny) | 8 |" in first.stdout and "| sasrec (sasrec) | 8 |" in first.stdout
    assert "| genrec (ml100k-smollm2) | 4 |" in first.stdout and "Note: in this budget" in first.stdout
    assert first.stdout.count("held-out next item:") == 3
    assert first.stdout.count("removed from every model's ranking") == 2  # both tables, the baselines too
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert metrics["invalid_rate"] == 0.0 and metrics["users"] == 8
    codes = json.loads((out / "tokenizers_out" / "ml100k" / "item_codes.json").read_text())
    assert len(codes) == 1682
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    # data, 2 baselines, tokenizer, 2 trainings, 2 evaluations
    assert second.stdout.count("cached, skipping") == 8
