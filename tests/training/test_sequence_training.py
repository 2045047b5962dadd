"""End to end on tiny data: the sequence task, a compact-vocabulary scratch model, the history-item
adapter and checkpoint selection by validation NDCG train, save, load and recommend valid items."""

import json

import pytest
import torch

from genrec.baselines.popularity import item_counts
from genrec.config import load_config
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out
from genrec.errors import ConfigError
from genrec.testing import make_tiny_run, tiny_dataset
from genrec.training.config import TrainConfig

SCRATCH = ["model.base=scratch", "model.mode=full", "model.tokenizer=compact", "model.new_token_init=random",
           ("model.scratch={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, "
           "num_key_value_heads: 2}")]
SEQUENCE = ["tasks.mix={sequence: 1.0, item2index: 0.5}", "model.item_embeddings=[behavior]",
            "training.select_by=ndcg@10", "training.ranking_users=8", "training.eval_steps=3",
            "training.max_steps=6"]


def _adapter_weight(run):
    from safetensors import safe_open

    for name in ("model.safetensors", "adapter_model.safetensors"):
        path = run / name
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                keys = [k for k in f.keys() if "genrec_items" in k and k.endswith("proj.weight")]  # noqa: SIM118
                if keys:
                    return f.get_tensor(keys[0])
    raise AssertionError("no saved adapter weight")


@pytest.mark.parametrize("mode", ["scratch", "lora"])
def test_sequence_run_trains_selects_by_ranking_and_serves(tmp_path, mode):
    from genrec.inference.evaluate import evaluate_run
    from genrec.inference.recommender import GenRecommender

    extra = SCRATCH if mode == "scratch" else ["training.learning_rate=0.05"]
    run = make_tiny_run(tmp_path, mode="full" if mode == "scratch" else "lora", overrides=[*extra, *SEQUENCE])
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_ndcg@10" in r]
    assert len(evals) == 2 and all(0.0 <= r["eval_top1_share"] <= 1.0 for r in evals)
    assert "best checkpoint by validation NDCG@10 of constrained beam search on 8" in (run / "README.md").read_text()
    saved = _adapter_weight(run)
    assert saved.abs().sum() > 0  # the adapter trained from its zero start
    rec = GenRecommender.from_pretrained(run)
    assert rec.sequence_format and rec.item_adapter is not None
    loaded = rec.item_adapter.proj.weight
    torch.testing.assert_close(loaded, saved.to(loaded.dtype))
    ids, (_pos, kept) = rec.render([3, 4, 5])
    assert kept == [3, 4, 5] and ids[-1] == rec.tokenizer.eos_token_id
    recs = rec.recommend(["m1", "m2", "m3"], k=5)
    assert len(recs) == 5 and all(r.item_id.startswith("m") for r in recs)
    result = evaluate_run(run, run.parent.parent / "data", max_users=10, seed=0)
    assert result["test"]["invalid_rate"] == 0.0
    if mode == "scratch":
        assert len(rec.tokenizer) < 200  # compact vocabulary: words + item tokens, not an LLM's 400


def test_learned_item_rows_train_save_and_load(tmp_path):
    """``model.item_embeddings=[id]``: a learned row per item, zero at the start, trained for the items
    seen in training, saved with the weights and loaded back; ``[id, behavior]`` keeps both."""
    from safetensors import safe_open

    from genrec.inference.recommender import GenRecommender

    seq = [o for o in SEQUENCE if not o.startswith("model.item_embeddings")]
    run = make_tiny_run(tmp_path, overrides=[*SCRATCH, *seq, "model.item_embeddings=[id, behavior]"])
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        rows = f.get_tensor("genrec_items.rows.weight")
        proj = f.get_tensor("genrec_items.proj.weight")
    assert rows.shape[0] == tiny_dataset().num_items and rows.abs().sum(1).gt(0).sum() > 0
    assert proj.shape[1] > 0 and proj.abs().sum() > 0
    rec = GenRecommender.from_pretrained(run)
    torch.testing.assert_close(rec.item_adapter.rows.weight, rows.to(rec.item_adapter.rows.weight.dtype))
    assert len(rec.recommend(["m1", "m2", "m3"], k=5)) == 5

    only = make_tiny_run(tmp_path / "only", overrides=[*SCRATCH, *seq, "model.item_embeddings=[id]",
                                                       "model.item_row_min_count=6"])
    rec = GenRecommender.from_pretrained(only)
    assert rec.item_adapter.table.shape[1] == 0
    counts = item_counts(leave_one_out(Dataset.load(only.parent.parent / "data"), 20).train, 24)
    trained = rec.item_adapter.rows.weight.abs().sum(1).gt(0)  # [N]
    assert 0 < (counts >= 6).sum() < 24  # the bound splits the tiny catalog
    assert not trained[torch.from_numpy(counts < 6)].any()  # rare items keep their zero row
    assert trained[torch.from_numpy(counts >= 6)].any()
    assert len(rec.recommend(["m1", "m2"], k=3)) == 3


def test_kept_rows_alone_get_gradient():
    from genrec.encoders.item_adapter import ItemEmbeddingAdapter

    adapter = ItemEmbeddingAdapter(torch.zeros(6, 0), 4, learned_rows=True)
    adapter.keep_rows(torch.tensor([True, False, True, False, True, False]))
    adapter(torch.arange(6)).sum().backward()
    assert adapter.rows.weight.grad.abs().sum(1).gt(0).tolist() == [True, False] * 3
    with pytest.raises(ValueError, match="learned rows"):
        ItemEmbeddingAdapter(torch.zeros(6, 2), 4).keep_rows(torch.ones(6, dtype=torch.bool))


def test_item_row_dropout_hides_rows_only_in_training():
    from genrec.encoders.item_adapter import ItemEmbeddingAdapter

    torch.manual_seed(0)
    adapter = ItemEmbeddingAdapter(torch.zeros(50, 0), 4, learned_rows=True, row_dropout=0.5)
    torch.nn.init.ones_(adapter.rows.weight)
    items = torch.arange(50)
    hidden = (adapter(items).abs().sum(1) == 0).float().mean().item()  # [T, H] -> share of zero rows
    assert 0.3 < hidden < 0.7
    adapter.eval()
    assert adapter(items).abs().sum(1).gt(0).all()


def test_bad_sequence_settings_name_the_key(tmp_path):
    base = ["data=d", "tokenizer=t"]
    with pytest.raises(ConfigError, match="model.item_embeddings needs the sequence task"):
        load_config(TrainConfig, None, [*base, "model.item_embeddings=[behavior]"])
    with pytest.raises(ConfigError, match="model.tokenizer: compact"):
        load_config(TrainConfig, None, [*base, "model.tokenizer=compact"])
    with pytest.raises(ConfigError, match="training.select_by"):
        load_config(TrainConfig, None, [*base, "training.select_by=mrr"])
    with pytest.raises(ConfigError, match="unknown stream"):
        load_config(TrainConfig, None, [*base, "tasks.mix={sequence: 1}", "model.item_embeddings=[colour]"])
    assert load_config(TrainConfig, None, [*base, "tasks.mix={sequence: 1}", "model.item_embeddings=[id]"])
    with pytest.raises(ConfigError, match="add id to model.item_embeddings"):
        load_config(TrainConfig, None, [*base, "tasks.mix={sequence: 1}", "model.item_row_dropout=0.5"])
    with pytest.raises(ConfigError, match="item_row_dropout must be in"):
        load_config(TrainConfig, None, [*base, "tasks.mix={sequence: 1}", "model.item_embeddings=[id]",
                                        "model.item_row_dropout=1.0"])
    with pytest.raises(ConfigError, match="add id to model.item_embeddings"):
        load_config(TrainConfig, None, [*base, "tasks.mix={sequence: 1}", "model.item_row_min_count=5"])
    with pytest.raises(ConfigError, match="item_row_min_count must be >= 0"):
        load_config(TrainConfig, None, [*base, "tasks.mix={sequence: 1}", "model.item_embeddings=[id]",
                                        "model.item_row_min_count=-1"])
    for key in ("item_head_similar", "item_head_cold_neighbours"):
        with pytest.raises(ConfigError, match=r"item_head_similar and item_head_cold_neighbours must be >= 0, got "
                                              r"3, -?\d+ and -?\d+"):
            load_config(TrainConfig, None, [*base, f"training.{key}=-1"])
    with pytest.raises(ConfigError, match="item_head_epoch_users must be >= 0"):
        load_config(TrainConfig, None, [*base, "training.item_head_epoch_users=-1"])
    assert load_config(TrainConfig, None, [*base, "training.item_head_epoch_users=0"]).training.item_head_epoch_users == 0
    with pytest.raises(ConfigError, match="item_head_select must be head or fused, got 'best'"):
        load_config(TrainConfig, None, [*base, "training.item_head_select=best"])
    with pytest.raises(ConfigError, match="item_head_weight_rule must be best or one_se, got 'mean'"):
        load_config(TrainConfig, None, [*base, "training.item_head_weight_rule=mean"])
    assert tiny_dataset().num_items == 24


def test_item_head_is_fitted_after_training_served_and_refitted(tmp_path, capsys):
    from genrec import run_dir as layout
    from genrec.cli import main
    from genrec.encoders.item_head import load_item_head
    from genrec.errors import DataError
    from genrec.inference.evaluate import evaluate_run
    from genrec.inference.recommender import GenRecommender

    run = make_tiny_run(tmp_path, mode="full", overrides=[*SCRATCH, *SEQUENCE, "model.item_embeddings=[id]",
                                                          "training.item_head=true", "training.item_head_users=8",
                                                          "training.item_head_epoch_users=0"])
    report = json.loads((run / layout.ITEM_HEAD_REPORT).read_text())
    # the epoch picked on every validation user (a forward each), the weight on 8 (beam search each)
    assert report["validation_users"] == 8 and report["epoch_users"] > 8
    assert report["states"] > 0 and report["weight"] in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    assert "## Item head" in (run / "README.md").read_text()
    card = (run / "README.md").read_text()
    assert "transition counts of the last 3 history items and the nearest items of the last 1 by behavior" in card
    assert set(report["by_weight"]) == {"0.0", "0.5", "1.0", "2.0", "4.0", "8.0", "16.0"}
    rec = GenRecommender.from_pretrained(run)
    hidden = rec.model.get_input_embeddings().weight.shape[1]
    head = load_item_head(run / layout.ITEM_HEAD, hidden, rec.num_items)
    assert head.weight == report["weight"]
    assert (rec.item_head is None) == (report["weight"] == 0)  # weight 0: the codes alone
    assert report["transitions"] == [len(t) for t in head.transitions if t.kind == "next"]
    # the seen-item term reads the whole prompt history; the tables its last 3 items
    assert head.seen == report["seen"] == rec.max_history == head.orders and report["seen_weight"] is not None
    assert "and a learned weight" in card and "on the history's own items" in card
    assert report["similar"] == [len(t) for t in head.transitions if t.kind == "similar"] and report["similar"][0] > 0
    assert len(head.transitions[0]) > 0
    # items that were never a training target would borrow rows (tests/inference/test_evaluate_cold.py)
    assert report["borrowed"] == int((~head.known).sum()) == int(head.borrowed.sum())
    assert report["cold_neighbours"] == 10
    head.weight = 4.0  # let the head matter for the checks below
    rec.item_head = head
    recs = rec.recommend(["m1", "m2", "m3"], k=5, exclude="history")
    assert len(recs) == 5 and not {"m1", "m2", "m3"} & {r.item_id for r in recs}
    assert all(r.item_id in rec._by_id for r in recs)
    # the request's last item reaches the transition term: with it dominant, its most frequent successor leads
    src = int(head.transitions[0].indptr.diff().argmax())  # the item with the most distinct successors
    follows = head.transitions[0].rows(torch.tensor([src]))[0]
    follows[src] = 0
    assert follows.max() > 0
    head.beta.data.copy_(torch.tensor([100.0] + [0.0] * (len(head.transitions) - 1)))
    top = rec.recommend([rec.items[src].item_id], k=1, exclude="history")[0].item_id
    assert follows[rec._by_id[top]] == follows.max()
    data = run.parent.parent / "data"
    fused = evaluate_run(run, data, max_users=10, seed=0, recommender=rec)
    assert fused["item_head"] == 4.0 and fused["test"]["invalid_rate"] == 0.0
    plain = evaluate_run(run, data, max_users=10, seed=0, item_head=False)
    assert plain["item_head"] is None
    # `genrec head` refits it on a finished run: with no options, the head the recipe fitted
    fitted = load_item_head(run / layout.ITEM_HEAD, hidden, rec.num_items)
    (run / layout.ITEM_HEAD).unlink()
    assert main(["head", "--run", str(run), "--data", str(data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation NDCG@10" in out and "on 8 users" in out  # the run's training.item_head_users
    refit = load_item_head(run / layout.ITEM_HEAD, hidden, rec.num_items)
    assert refit.weight == fitted.weight and torch.equal(refit.known, fitted.known)
    for name, tensor in fitted.state_dict().items():
        torch.testing.assert_close(refit.state_dict()[name], tensor, msg=name)
    assert report["epoch_users"] == len(leave_one_out(Dataset.load(data), 20).valid.targets)
    assert main(["head", "--run", str(run), "--data", str(data), "--no-progress", "--epoch-users", "5"]) == 0
    head_pick = json.loads((run / layout.ITEM_HEAD_REPORT).read_text())
    assert head_pick["epoch_users"] == 5 and head_pick["select"] == "head"
    # the epoch chosen together with the weight by the fused ranking, over every epoch the fit ran
    assert main(["head", "--run", str(run), "--data", str(data), "--no-progress", "--epoch-users", "5",
                 "--select", "fused"]) == 0
    assert "epoch " in capsys.readouterr().out
    fused = json.loads((run / layout.ITEM_HEAD_REPORT).read_text())
    grid = fused["by_epoch_weight"]
    assert fused["select"] == "fused" and set(grid) == {str(r["epoch"]) for r in fused["epochs"]}
    assert grid[str(fused["epoch"])][str(fused["weight"])]["ndcg@10"] == max(
        m["ndcg@10"] for per in grid.values() for m in per.values())
    assert fused["by_weight"] == grid[str(fused["epoch"])]
    for w, m in head_pick["by_weight"].items():  # the head-alone pick, ranked in the same pass, scores the same
        assert grid[str(head_pick["epoch"])][w] == pytest.approx(m)
    assert fused["weight_rule"] == "best" and fused["best"] == {"epoch": fused["epoch"], "weight": fused["weight"]}
    # the lightest weight within a standard error of the best: never heavier than the best
    assert main(["head", "--run", str(run), "--data", str(data), "--no-progress", "--weight-rule", "one_se"]) == 0
    light = json.loads((run / layout.ITEM_HEAD_REPORT).read_text())
    assert light["weight_rule"] == "one_se" and light["weight"] <= light["best"]["weight"]
    # a head of another catalog is refused with the fix
    assert main(["head", "--run", str(run), "--data", str(data), "--users", "8", "--no-progress",
                 "--transitions", "0", "--similar", "0", "--no-seen", "--cold-neighbours", "0"]) == 0
    bare = load_item_head(run / layout.ITEM_HEAD, hidden, rec.num_items)
    assert bare.transitions == [] and bare.seen == 0 and bare.orders == 0 and not bare.borrowed.any()
    assert main(["head", "--run", str(run), "--data", str(data), "--users", "8", "--no-progress",
                 "--transitions", "1", "--similar", "2", "--similar-stream", "behavior"]) == 0
    back = load_item_head(run / layout.ITEM_HEAD, hidden, rec.num_items)
    assert [(t.gap, t.kind) for t in back.transitions] == [(1, "next"), (1, "similar"), (2, "similar")]
    capsys.readouterr()
    assert main(["head", "--run", str(run), "--data", str(data), "--users", "8", "--no-progress",
                 "--similar-stream", "colour"]) == 2
    assert "reads the 'colour' stream's embeddings" in capsys.readouterr().err
    with pytest.raises(DataError, match="genrec head --run"):
        load_item_head(run / layout.ITEM_HEAD, hidden, rec.num_items + 1)


def test_item_head_similar_stream_must_be_a_tokenizer_stream_before_training(tmp_path):
    with pytest.raises(ConfigError, match="item_head_similar_stream='colour' is not a stream"):
        make_tiny_run(tmp_path, mode="full", overrides=[*SCRATCH, *SEQUENCE, "training.item_head=true",
                                                        "training.item_head_similar_stream=colour"])
    assert not list((tmp_path / "runs").glob("*/config.yaml"))  # refused before the run directory was written
