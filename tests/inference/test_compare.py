"""`genrec compare`: runs, evaluations and baselines in one table and two charts, written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from genrec.baselines.run import run_baseline
from genrec.cli import main as cli
from genrec.inference.compare import read_entry
from genrec.inference.evaluate import evaluate_run


@pytest.fixture(scope="module")
def dirs(tiny_run, rec, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    data = tiny_run.parents[1] / "data"
    run_baseline(data, "pop", root / "pop", progress=False)
    run_baseline(data, "sasrec", root / "sasrec", overrides=["epochs=2", "hidden=8", "batch_size=32", "num_threads=1"],
                 progress=False)
    evaluate_run(tiny_run, data, max_users=6, progress=False, recommender=rec, out=root / "eval")
    # A run that selected checkpoints by ranking: its best validation ranking joins the table.
    ranked = root / "ranked"
    shutil.copytree(tiny_run, ranked, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    cfg = yaml.safe_load((ranked / "config.yaml").read_text())
    cfg["training"].update(select_by="ndcg@10", ranking_users=30)
    (ranked / "config.yaml").write_text(yaml.safe_dump(cfg))
    with open(ranked / "train_log.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": step, "eval_loss": 1.0, "eval_ndcg@10": ndcg, "eval_recall@10": 0.6,
                                 "eval_ndcg@20": 0.55, "eval_recall@20": 0.8}) + "\n"
                     for step, ndcg in ((2, 0.2), (4, 0.5)))
    return {"run": tiny_run, "ranked": ranked, "eval": root / "eval", "pop": root / "pop", "sasrec": root / "sasrec"}


def test_table_and_charts_side_by_side(dirs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli(["compare", *(str(p) for p in dirs.values()), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"comparison.md", "compare.json", "metrics.png", "loss_curves.png"}
    md = (out / "comparison.md").read_text()
    assert md in capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = [c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[1:]]
    assert header == ["model", "kind", "split", "users", "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10",
                      "ndcg@20"]
    got = {(r[0], r[2]) for r in rows}
    assert got == {("ranked", "valid"), ("pop", "valid"), ("pop", "test"), ("sasrec", "valid"), ("sasrec", "test"),
                   ("eval", "test")}
    ranked = next(r for r in rows if r[0] == "ranked")
    assert ranked[4] == "—" and ranked[8].strip("*") == "0.5000" and ranked[3] == "30"  # the best evaluation
    want = json.loads((dirs["eval"] / "metrics.json").read_text())["test"]
    evaluated = next(r for r in rows if r[0] == "eval")
    assert float(evaluated[5].strip("*")) == pytest.approx(want["recall@10"], abs=5e-5) and evaluated[3] == "6"
    assert f"{dirs['run'].name}: no ranking metrics" in md  # the plain run has only its loss curve
    loaded = {e["label"]: e for e in json.loads((out / "compare.json").read_text())}
    assert loaded["sasrec"]["kind"] == "baseline (sasrec)" and loaded[dirs["run"].name]["kind"] == "run"
    for png in ("metrics.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kinds_are_recognised_by_their_files(dirs):
    kinds = {name: read_entry(path).kind for name, path in dirs.items()}
    assert kinds == {"run": "run", "ranked": "run", "eval": "evaluation", "pop": "baseline (pop)",
                     "sasrec": "baseline (sasrec)"}
    assert read_entry(dirs["sasrec"]).loss is not None and read_entry(dirs["run"]).loss is not None
    assert read_entry(dirs["pop"]).loss is None


def test_unknown_directory_exits_2_and_leaves_out_untouched(dirs, tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    stray = tmp_path / "stray"
    stray.mkdir()
    assert cli(["compare", str(dirs["pop"]), str(stray), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(stray) in err[0] and "Traceback" not in err[0]
    assert cli(["compare", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["compare", str(dirs["pop"]), "--out", str(dirs["pop"])]) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cmp")] == []
