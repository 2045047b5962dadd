"""bench/seeds.py: one recipe's evaluations over seeds, beside the baselines re-scored on the same users."""

import json
import shutil

import pytest

from genrec.baselines.run import run_baseline
from genrec.inference.evaluate import baseline_metrics, evaluate_run


@pytest.fixture(scope="module")
def seeds(load_bench):
    return load_bench("seeds")


def test_mean_std_and_ratios_on_the_evaluated_users(seeds, tiny_run, rec, tmp_path, capsys):
    data = tiny_run.parents[1] / "data"
    pop = tmp_path / "pop"
    run_baseline(data, "pop", pop, progress=False)
    first = tmp_path / "e1"
    evaluate_run(tiny_run, data, "valid", max_users=12, seed=3, out=first, recommender=rec)
    # a second "seed" whose Recall@10 is known: the same evaluation with its metric moved by 0.1
    second = tmp_path / "e2"
    shutil.copytree(first, second)
    metrics = json.loads((second / "metrics.json").read_text())
    metrics["valid"]["recall@10"] += 0.1
    (second / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "seeds.json"
    assert seeds.main(["--data", str(data), "--evals", str(first), str(second), "--baselines", str(pop),
                       "--split", "valid", "--history-dropped", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    r1 = json.loads((first / "metrics.json").read_text())["valid"]["recall@10"]
    got = res["as_evaluated"]
    assert res["users"] == 12
    assert got["mean"]["recall@10"] == pytest.approx(r1 + 0.05)
    assert got["std"]["recall@10"] == pytest.approx(0.1 / 2 ** 0.5)  # sample std of two values 0.1 apart
    users = json.loads((first / "provenance.json").read_text())["user_indices"]
    base = baseline_metrics(pop, data, "valid", users)
    assert got["baselines"][str(pop)]["ndcg@10"] == pytest.approx(base["ndcg@10"])
    if base["recall@10"]:
        assert got["ratio_of_mean"][str(pop)]["recall@10"] == pytest.approx((r1 + 0.05) / base["recall@10"])
    strict = res["history_dropped"]
    # the tiny run's users never repeat an item, so the history-dropped lists score at least as well
    assert strict["per_seed"][str(first)]["recall@10"] >= got["per_seed"][str(first)]["recall@10"]
    assert strict["baselines"][str(pop)] == pytest.approx(baseline_metrics(pop, data, "valid", users,
                                                                           exclude_history=True))
    assert "mean ± std" in capsys.readouterr().out


def test_evaluations_of_other_users_are_refused(seeds, tiny_run, rec, tmp_path):
    data = tiny_run.parents[1] / "data"
    evaluate_run(tiny_run, data, "valid", max_users=6, seed=1, out=tmp_path / "a", recommender=rec)
    evaluate_run(tiny_run, data, "valid", max_users=6, seed=2, out=tmp_path / "b", recommender=rec)
    with pytest.raises(SystemExit, match="other users"):
        seeds.main(["--data", str(data), "--evals", str(tmp_path / "a"), str(tmp_path / "b"), "--split", "valid"])
