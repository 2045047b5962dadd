"""evaluate_run / `genrec evaluate`: metrics under the baselines' protocol, artifacts, user subsets."""

import json
import shutil

import numpy as np
import pytest

from genrec.baselines.run import run_baseline
from genrec.cli import main as cli
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out, sample_users
from genrec.inference.evaluate import baseline_metrics, evaluate_run
from genrec.io import read_json
from genrec.metrics import METRIC_KEYS, ranking_metrics


@pytest.fixture(scope="module")
def data_dir(tiny_run):
    return tiny_run.parents[1] / "data"


@pytest.fixture(scope="module")
def pop_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pop") / "pop"
    run_baseline(data_dir, "pop", out, progress=False)
    return out


def test_evaluate_writes_metrics_comparison_and_provenance(tiny_run, data_dir, pop_dir, rec, tmp_path):
    out = tmp_path / "eval"
    res = evaluate_run(tiny_run, data_dir, split="test", batch_size=16, progress=False, out=out,
                       baselines=[pop_dir], recommender=rec)
    metrics = read_json(out / "metrics.json")
    assert list(metrics) == ["test"]
    m = metrics["test"]
    assert set(m) == set(METRIC_KEYS) | {"invalid_rate", "coverage", "top1_share", "users"}
    assert 1 / 30 <= m["top1_share"] <= 1
    assert m["invalid_rate"] == 0.0 and m["users"] == 30 and 0 < m["coverage"] <= 1
    assert res["test"] == m and res["user_indices"] == list(range(30))
    assert all(0 <= m[k] <= 1 for k in METRIC_KEYS) and m["recall@5"] <= m["recall@10"] <= m["recall@20"]
    table = (out / "comparison.md").read_text()
    assert "| genrec (tiny) |" in table and "| pop (pop) |" in table and "test split" in table
    prov = read_json(out / "provenance.json")
    assert prov["config"]["num_beams"] == 20 and any(p.endswith("items.jsonl") for p in prov["inputs"])
    # The metrics are ranking_metrics of the written predictions: recompute them independently.
    ds = Dataset.load(data_dir)
    pos = {it.item_id: i for i, it in enumerate(ds.items)}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(len(r["ranked"]) == 20 and len(set(r["ranked"])) == 20 for r in rows)
    ranked = np.asarray([[pos[i] for i in r["ranked"]] for r in rows])
    targets = leave_one_out(ds, 8).test.targets
    assert ranking_metrics(ranked, targets) == {k: m[k] for k in METRIC_KEYS}
    assert [pos[r["target"]] for r in rows] == targets.tolist()


def test_user_subset_is_seeded_and_baselines_are_rescored_on_it(tiny_run, data_dir, pop_dir, rec, tmp_path):
    assert sample_users(30, 10, seed=3).tolist() == sample_users(30, 10, seed=3).tolist()
    assert sample_users(30, 10, seed=3).tolist() != sample_users(30, 10, seed=4).tolist()
    res = evaluate_run(tiny_run, data_dir, split="valid", max_users=10, seed=3, progress=False, recommender=rec,
                       out=tmp_path / "sub", baselines=[pop_dir])
    assert res["valid"]["users"] == 10 and res["user_indices"] == sample_users(30, 10, 3).tolist()
    # On all users the re-scored baseline equals its metrics.json; on the subset it is what the table shows.
    full = baseline_metrics(pop_dir, data_dir, "valid", list(range(30)))
    assert full == pytest.approx(read_json(pop_dir / "metrics.json")["valid"])
    sub = baseline_metrics(pop_dir, data_dir, "valid", res["user_indices"])
    assert f"| pop (pop) | 10 | {sub['recall@5']:.4f}".replace("**", "") in \
        (tmp_path / "sub" / "comparison.md").read_text().replace("**", "")


def test_baselines_are_rescored_under_the_runs_history_protocol(tiny_run, data_dir, pop_dir, rec, tmp_path):
    # A popularity baseline trained with exclude_history=true: its metrics.json is the reference.
    excl = tmp_path / "pop_excl"
    run_baseline(data_dir, "pop", excl, overrides=["exclude_history=true"], progress=False)
    want = read_json(excl / "metrics.json")["test"]
    assert want != pytest.approx(read_json(pop_dir / "metrics.json")["test"])
    # The default baseline re-scored with the history excluded gives the same numbers, on all users
    # and on a subset; its own protocol (None, or the same value) still reads its metrics.json.
    assert baseline_metrics(pop_dir, data_dir, "test", exclude_history=True) == pytest.approx(want)
    assert baseline_metrics(excl, data_dir, "test", exclude_history=True) == pytest.approx(want)
    assert baseline_metrics(excl, data_dir, "test", exclude_history=False) == \
        pytest.approx(read_json(pop_dir / "metrics.json")["test"])
    assert baseline_metrics(pop_dir, data_dir, "test", list(range(30)), exclude_history=True) == pytest.approx(want)
    evaluate_run(tiny_run, data_dir, progress=False, recommender=rec, exclude_history=True, out=tmp_path / "ex",
                 baselines=[pop_dir])
    table = (tmp_path / "ex" / "comparison.md").read_text()
    assert "removed from every model's ranking" in table
    assert f"| pop (pop) | 30 | {want['recall@5']:.4f}" in table.replace("**", "")


def test_exclude_history_never_ranks_seen_items(tiny_run, data_dir, rec, tmp_path):
    evaluate_run(tiny_run, data_dir, max_users=6, progress=False, recommender=rec, exclude_history=True,
                 out=tmp_path / "ex")
    ds = Dataset.load(data_dir)
    hist = {ds.users[u]: {ds.items[i].item_id for i in s[:-1][-8:]} for u, s in enumerate(ds.sequences)}
    for line in (tmp_path / "ex" / "predictions.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert not set(r["ranked"]) & hist[r["user_id"]]


def test_cli_evaluate_and_errors(tiny_run, data_dir, pop_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["evaluate", "--model", str(tiny_run), "--data", str(data_dir), "--out", str(out), "--max-users", "5",
                "--baselines", str(pop_dir), "--no-progress", "--threads", "1"]) == 0
    assert "| genrec (tiny) |" in capsys.readouterr().out
    assert read_json(out / "metrics.json")["test"]["users"] == 5
    assert cli(["evaluate", "--model", str(tiny_run), "--data", str(tmp_path / "missing"), "--out",
                str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["evaluate", "head"])
def test_dataset_with_other_items_is_refused(tiny_run, data_dir, tmp_path, capsys, command):
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    lines = (other / "items.jsonl").read_text().splitlines()
    (other / "items.jsonl").write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same items, another order
    args = (["evaluate", "--model", str(tiny_run), "--out", str(tmp_path / "x")] if command == "evaluate"
            else ["head", "--run", str(tiny_run)])
    before = sorted(p.name for p in tiny_run.iterdir())
    assert cli([*args, "--data", str(other), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "differ from the catalog the run was trained on" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and sorted(p.name for p in tiny_run.iterdir()) == before


def test_exact_scoring_ranks_every_item_and_agrees_with_wide_beams(tiny_run, data_dir, tmp_path):
    from genrec.inference.recommender import GenRecommender

    exact = GenRecommender.from_pretrained(tiny_run, device="cpu", scoring="exact")
    out = tmp_path / "exact"
    res = evaluate_run(tiny_run, data_dir, split="test", progress=False, recommender=exact, out=out)
    assert res["scoring"] == "exact" and res["test"]["invalid_rate"] == 0.0
    assert "exact scoring of every item" in (out / "comparison.md").read_text()
    # A beam as wide as the catalog is exhaustive, so it must return the exact top-20 items.
    wide = evaluate_run(tiny_run, data_dir, split="test", num_beams=exact.num_items, progress=False,
                        recommender=GenRecommender.from_pretrained(tiny_run, device="cpu"))
    assert wide["test"] == pytest.approx(res["test"])
    recs = exact.recommend([exact.items[0].item_id], k=5, exclude="history")
    assert len(recs) == 5 and exact.items[0].item_id not in {r.item_id for r in recs}
    with pytest.raises(Exception, match="scoring must be"):
        GenRecommender.from_pretrained(tiny_run, device="cpu", scoring="greedy")
    assert cli(["evaluate", "--model", str(tiny_run), "--data", str(data_dir), "--out", str(tmp_path / "cli"),
                "--scoring", "exact", "--no-progress", "--max-users", "5"]) == 0
    assert read_json(tmp_path / "cli" / "provenance.json")["config"]["scoring"] == "exact"
