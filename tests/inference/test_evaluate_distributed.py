"""`genrec evaluate` under `accelerate launch` with two CPU processes: users split, results gathered,
one writer, the same numbers as one process."""

from __future__ import annotations

import json

from genrec.cli import main as cli
from genrec.io import read_json
from tests.launch import accelerate_2proc, accelerate_two_machines


def test_two_processes_give_the_one_process_metrics(tiny_run, tmp_path):
    data = tiny_run.parents[1] / "data"
    args = ["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "valid", "--batch-size", "4",
            "--num-beams", "8", "--no-progress", "--threads", "1"]
    proc = accelerate_2proc(["-m", "genrec.cli", *args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # only the main process reports (and writes)
    assert cli([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = tmp_path / "two", tmp_path / "one"
    assert read_json(two / "metrics.json") == read_json(one / "metrics.json")
    assert (two / "predictions.jsonl").read_text() == (one / "predictions.jsonl").read_text()
    assert read_json(two / "provenance.json")["config"]["processes"] == 2
    assert sorted(p.name for p in two.parent.iterdir()) == ["one", "two"]  # no stray temporary directory
    assert json.loads((one / "predictions.jsonl").read_text().splitlines()[0])["ranked"]


def test_two_machines_through_the_multi_node_config(tiny_run, tmp_path):
    data = tiny_run.parents[1] / "data"
    args = ["evaluate", "--model", str(tiny_run), "--data", str(data), "--batch-size", "8", "--num-beams", "8",
            "--no-progress", "--threads", "1", "--max-users", "20"]
    procs = accelerate_two_machines(["-m", "genrec.cli", *args, "--out", str(tmp_path / "two")])
    assert all(p.returncode == 0 for p in procs), procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    assert "wrote" in procs[0].stdout and "wrote" not in procs[1].stdout  # machine 0 writes
    assert cli([*args, "--out", str(tmp_path / "one")]) == 0
    assert read_json(tmp_path / "two" / "metrics.json") == read_json(tmp_path / "one" / "metrics.json")
