"""bench/code_levels.py: per-level accuracy of the next item's index, teacher forced."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def code_levels(load_bench):
    return load_bench("code_levels")


def test_children_and_level_stats(code_levels):
    assert code_levels.children_table([[1, 2], [1, 3], [4, 5]]) == {(): [1, 4], (1,): [2, 3], (4,): [5]}
    hit1, hit5, logp = code_levels.level_stats(np.log(np.array([0.2, 0.3, 0.5])) + 7.0, 1)  # unnormalised
    assert (hit1, hit5) == (0.0, 1.0) and logp == pytest.approx(np.log(0.3))
    assert code_levels.level_stats(np.zeros(8), 3)[:2] == (1.0, 1.0)  # ties count for the target
    assert code_levels.level_stats(np.arange(8.0), 0)[:2] == (0.0, 0.0)


def test_levels_on_a_trained_run_and_sasrec(code_levels, tiny_run, tmp_path):
    import torch

    from genrec.baselines.artifact import load_sasrec
    from genrec.cli import main as cli
    from genrec.data.dataset import Dataset
    from genrec.data.split import leave_one_out, sample_users, subset

    data, sas, out = tiny_run.parents[1] / "data", tmp_path / "sasrec", tmp_path / "levels.json"
    assert cli(["baseline", "--data", str(data), "--model", "sasrec", "--out", str(sas), "epochs=2", "hidden=16",
                "max_len=20"]) == 0
    assert code_levels.main(["--run", str(tiny_run), "--data", str(data), "--sasrec", str(sas), "--users", "6",
                             "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["users"] == 6 and len(res["levels"]) == len(res["mean_children"]) >= 2
    for model in ("genrec", "sasrec"):
        for stats in res["models"][model].values():
            assert 0.0 <= stats["hit@1"] <= stats["hit@5"] <= 1.0 and stats["logp"] <= 1e-9
    # SASRec's per-level probabilities multiply back to its softmax probability of the target item
    net, cfg = load_sasrec(sas / "model.pt")
    test = subset(leave_one_out(Dataset.load(data), 20).test, sample_users(30, 6, 42))
    with torch.no_grad():
        logp = torch.log_softmax(net.eval().score(test.padded(cfg.max_len)).float(), -1).numpy()
    want = float(np.mean(logp[np.arange(6), test.targets]))
    assert sum(s["logp"] for s in res["models"]["sasrec"].values()) == pytest.approx(want, abs=1e-4)
    # a level with one valid child is decided: log-probability 0, always a hit
    for lv, fan in zip(res["levels"], res["mean_children"]):
        if fan == 1.0:
            assert res["models"]["genrec"][lv] == {"hit@1": 1.0, "hit@5": 1.0, "logp": 0.0}
