"""The cold-start protocol end to end: a tokenizer built without a share of the items (then coding
them as new items), a run trained without them, and `genrec evaluate` ranking them for the users
whose target they are, beside baselines trained under the same hold-out."""

import numpy as np
import pytest

from genrec.baselines.run import run_baseline
from genrec.config import load_config
from genrec.data.dataset import Dataset
from genrec.data.split import cold_item_mask, hold_out_items, leave_one_out
from genrec.errors import ConfigError
from genrec.inference.evaluate import evaluate_run
from genrec.io import read_json
from genrec.item_tokenizer.artifact import load_item_tokenizer
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.tasks.prompts import TaskBuilder
from genrec.testing import make_tiny_run, tiny_dataset

HOLD = ["cold_items=0.25", "cold_seed=1"]


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    return make_tiny_run(root, "cold", steps=2, overrides=[f"tasks.{o}" for o in HOLD],
                         tokenizer_overrides=[*(f"cold_start.{o}" for o in HOLD), "cold_start.neighbors=3"])


def test_a_cold_start_run_is_evaluated_on_its_held_out_items(cold_run, tmp_path):
    data = cold_run.parents[1] / "data"
    ds = Dataset.load(data)
    cold = cold_item_mask(ds.num_items, 0.25, 1)
    tok = load_item_tokenizer(cold_run / "item_tokenizer")
    assert tok.stats["num_build_items"] == 18 and tok.item_ids[-6:] == [ds.items[i].item_id
                                                                         for i in np.flatnonzero(cold)]
    pop_cold = tmp_path / "pop_cold"
    run_baseline(data, "pop", pop_cold, overrides=HOLD, progress=False)
    pop_all = tmp_path / "pop_all"
    run_baseline(data, "pop", pop_all, progress=False)

    out = tmp_path / "eval"
    res = evaluate_run(cold_run, data, progress=False, out=out, baselines=[pop_cold, pop_all])
    metrics = read_json(out / "metrics.json")
    assert set(metrics) == {"test", "test_cold"}
    targets = leave_one_out(ds, 8).test.targets
    at = np.flatnonzero(cold[targets])
    assert metrics["test_cold"]["users"] == len(at) > 0 and res["cold_user_indices"] == at.tolist()
    # Six held-out items: ranked among them only, every target is in every top-10.
    assert metrics["test_cold"]["recall@10"] == 1.0 and metrics["test_cold"]["invalid_rate"] == 0.0
    # the test histories are those of the hold-out: no held-out item in any prompt
    split, _ = hold_out_items(leave_one_out(ds, 8), 0.25, 1)
    assert not any(cold[h].any() for h in split.test.histories)
    # pop under the same hold-out is re-scored on the same cold users and equals its own test_cold
    assert metrics["test"]["users"] == 30
    md = (out / "comparison.md").read_text()
    assert "## Held-out items (cold start)" in md and "| pop (pop_cold) |" in md.split("Held-out items")[1]
    assert "pop (pop_all): trained with cold_items=0.0" in md
    assert "pop (pop_all) was trained with cold_items / cold_seed (0.0, 0)" in md
    own = read_json(pop_cold / "metrics.json")["test_cold"]
    row = next(line for line in md.split("Held-out items")[1].splitlines() if line.startswith("| pop (pop_cold)"))
    assert f"{own['recall@10']:.4f}" in row and f"| {len(at)} |" in row
    assert read_json(out / "provenance.json")["holdout"] == {"cold_items": 0.25, "cold_seed": 1, "items": 6}


def test_training_refuses_a_hold_out_the_tokenizer_does_not_share(cold_run, tmp_path):
    root = cold_run.parents[1]
    plain = build_tokenizer(load_config(TokenizerConfig, None, [
        "name=plain", f"data={root / 'data'}", f"out_dir={tmp_path}", "plots=false", "progress=false",
        "semantic.encoder=precomputed", f"semantic.embeddings={root / 'sem.npy'}", "semantic.kmeans.k=4",
        "behavior.encoder=precomputed", f"behavior.embeddings={root / 'beh.npy'}", "behavior.kmeans.k=4"]))
    from genrec.training.config import TrainConfig
    from genrec.training.recipe import run

    def train(tokenizer, *extra):
        cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / 'runs'}", f"data={root / 'data'}",
                                              f"tokenizer={tokenizer}", f"model.base={root / 'base'}", *extra])
        run(cfg)

    with pytest.raises(ConfigError, match="needs a tokenizer built without those items"):
        train(plain, "tasks.cold_items=0.25", "tasks.cold_seed=1")
    with pytest.raises(ConfigError, match=r"set tasks.cold_items=0.25 tasks.cold_seed=1"):
        train(root / "tok" / "tiny")
    with pytest.raises(ConfigError, match="cold_seed=1"):
        train(root / "tok" / "tiny", "tasks.cold_items=0.25", "tasks.cold_seed=2")
    with pytest.raises(ConfigError, match=r"tasks.cold_items must be in \[0, 1\)"):
        train(root / "tok" / "tiny", "tasks.cold_items=1.5")
    assert not (tmp_path / "runs").exists()


def test_item_tasks_cover_only_the_given_catalog():
    ds = tiny_dataset()
    builder = TaskBuilder(ds.items, [[f"<s0_{i}>"] for i in range(ds.num_items)], 8, seed=0)
    exs = list(builder.iter_examples(leave_one_out(ds, 8), {"item2index": 1.0}, catalog=[1, 5, 7]))
    assert sorted(ex.target for ex in exs) == [1, 5, 7]


def test_a_user_subset_without_held_out_targets_gets_no_cold_block(cold_run, tmp_path):
    data = cold_run.parents[1] / "data"
    ds = Dataset.load(data)
    cold = cold_item_mask(ds.num_items, 0.25, 1)
    targets = leave_one_out(ds, 8).test.targets
    seed = next(s for s in range(100) if not cold[targets[np.sort(
        np.random.default_rng(s).choice(len(targets), size=3, replace=False))]].any())
    res = evaluate_run(cold_run, data, max_users=3, seed=seed, progress=False, out=tmp_path / "e")
    assert "test_cold" not in res and set(read_json(tmp_path / "e" / "metrics.json")) == {"test"}
    assert "Held-out items" not in (tmp_path / "e" / "comparison.md").read_text()
    assert read_json(tmp_path / "e" / "provenance.json")["holdout"]["items"] == 6


def test_held_out_items_borrow_item_head_rows_and_rank_by_them(cold_run, tmp_path, capsys):
    import torch

    from genrec import run_dir as layout
    from genrec.cli import main
    from genrec.encoders.item_head import load_item_head

    data = cold_run.parents[1] / "data"
    ds = Dataset.load(data)
    cold = cold_item_mask(ds.num_items, 0.25, 1)
    assert main(["head", "--run", str(cold_run), "--data", str(data), "--users", "8", "--no-progress",
                 "--cold-neighbours", "3"]) == 0
    report = read_json(cold_run / layout.ITEM_HEAD_REPORT)
    head = load_item_head(cold_run / layout.ITEM_HEAD, report_hidden(cold_run), ds.num_items)
    # the held-out items were never a training target: each borrows the mean row of 3 trained items
    assert np.array_equal(head.borrowed.numpy(), cold) and report["borrowed"] == int(cold.sum()) == 6
    assert not head.known[torch.from_numpy(cold)].any()
    states = torch.randn(4, head.linear.in_features)
    assert torch.isfinite(head(states)).all() and not torch.allclose(head(states)[:, cold][:, 0], head(states)[:, cold][:, 1])
    res = evaluate_run(cold_run, data, progress=False)
    assert res["test_cold"]["recall@10"] == 1.0 and res["test_cold"]["invalid_rate"] == 0.0
    for name in (layout.ITEM_HEAD, layout.ITEM_HEAD_REPORT):  # later tests see the run as trained
        (cold_run / name).unlink()


def report_hidden(run):
    from genrec.inference.recommender import GenRecommender

    return GenRecommender.from_pretrained(run, item_head=False).model.get_input_embeddings().weight.shape[1]
