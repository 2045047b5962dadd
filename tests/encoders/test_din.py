"""Behaviour of the DIN behavior encoder on tiny synthetic data built in-test."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.data.dataset import Dataset, Item
from genrec.data.split import leave_one_out
from genrec.encoders import din as din_mod
from genrec.encoders.din import DIN, DINConfig, train_din, train_windows
from genrec.errors import ConfigError, DataError

SLOTS = 20
TINY = DINConfig(dim=16, attention_hidden=[16], mlp_hidden=[16], num_negatives=8, batch_size=64, lr=5e-3,
                 epochs=6, patience=3, eval_users=0, num_threads=1, seed=0)


def twins_dataset(users: int = 200, seed: int = 0) -> Dataset:
    """Users walk a cycle of ``SLOTS`` slots; each step picks one of the slot's two twin items
    ``2s`` / ``2s + 1`` at random, so twins are interchangeable and the next slot is predictable."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        slots = (rng.integers(SLOTS) + np.arange(rng.integers(6, 12))) % SLOTS
        seqs.append((2 * slots + rng.integers(0, 2, len(slots))).astype(np.int64))
    items = [Item(item_id=f"i{i}") for i in range(2 * SLOTS)]
    return Dataset(items=items, users=[f"u{u}" for u in range(users)], sequences=seqs)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(twins_dataset(), max_history=20)


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    log = tmp_path_factory.mktemp("din") / "log.jsonl"
    return train_din(split, TINY, progress=False, log_path=log), log


def test_learns_sequential_pattern(trained):
    result, log = trained
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0]
    # Random ranking of 40 items gives NDCG@10 ~= 0.11.
    assert result.valid_metrics["ndcg@10"] > 0.4
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == list(range(1, 7))


def test_interchangeable_items_get_close_embeddings(trained):
    emb = trained[0].item_embeddings
    assert emb.shape == (2 * SLOTS, TINY.dim) and emb.dtype == np.float32
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    twin = np.array([sim[2 * s, 2 * s + 1] for s in range(SLOTS)])
    others = sim[~np.eye(2 * SLOTS, dtype=bool) & ~np.kron(np.eye(SLOTS), np.ones((2, 2))).astype(bool)]
    assert twin.mean() > others.mean() + 0.2


def test_same_seed_same_embeddings(split):
    cfg = replace(TINY, epochs=2)
    a = train_din(split, cfg, progress=False).item_embeddings
    b = train_din(split, cfg, progress=False).item_embeddings
    c = train_din(split, replace(cfg, seed=1), progress=False).item_embeddings
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_training_never_reads_valid_or_test_targets():
    base = twins_dataset(users=60)
    # Same training prefixes, different held-out targets: items 40/41 exist only as valid/test targets.
    items = base.items + [Item(item_id="cold_valid"), Item(item_id="cold_test")]
    seq_a = [np.concatenate([s[:-2], [40, 41]]) for s in base.sequences]
    seq_b = [np.concatenate([s[:-2], [41, 40]]) for s in base.sequences]
    a = leave_one_out(Dataset(items=items, users=base.users, sequences=seq_a))
    b = leave_one_out(Dataset(items=items, users=base.users, sequences=seq_b))
    hist, targets = train_windows(a, 20)
    assert not np.isin([40, 41], hist).any() and not np.isin([40, 41], targets).any()
    cfg = replace(TINY, epochs=2, eval_every=0)
    ra, rb = train_din(a, cfg, progress=False), train_din(b, cfg, progress=False)
    assert [r["loss"] for r in ra.history] == [r["loss"] for r in rb.history]
    assert np.array_equal(ra.item_embeddings, rb.item_embeddings)


@pytest.mark.parametrize("variant", [{}, {"head": "dot"}, {"attention_norm": "none", "activation": "prelu"}])
@pytest.mark.parametrize("train_mode", [False, True])
def test_padding_does_not_change_scores(variant, train_mode):
    torch.manual_seed(0)
    model = DIN(30, replace(TINY, **variant)).train(train_mode)
    hist = torch.tensor([[0, 0, 3, 7, 9], [0, 0, 0, 0, 12], [5, 6, 7, 8, 9]])
    longer = torch.cat([torch.zeros(3, 6, dtype=torch.long), hist], dim=1)
    cand = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 30]])
    with torch.no_grad():
        torch.testing.assert_close(model(hist, cand), model(longer, cand))
    if not train_mode:
        h = hist.numpy() - 1  # score_all takes item indices with -1 padding
        torch.testing.assert_close(model.score_all(h), model.score_all(np.pad(h, ((0, 0), (4, 0)),
                                                                             constant_values=-1)))


def test_full_catalog_scores_match_candidate_scores():
    torch.manual_seed(0)
    model = DIN(50, TINY).eval()
    hist = np.array([[-1, -1, 3, 7, 9], [-1, -1, -1, -1, 12], [5, 6, 7, 8, 9], [-1, -1, -1, -1, -1]])
    full = model.score_all(hist, users_per_chunk=3)
    cand = torch.arange(1, 51).repeat(4, 1)
    with torch.no_grad():
        direct = model(torch.as_tensor(hist) + 1, cand)
    torch.testing.assert_close(full, direct, rtol=1e-4, atol=1e-5)


def test_early_stopping_restores_best_epoch(split, monkeypatch):
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    snapshots = []

    def fake_eval(model, data, max_history, progress=False, desc=""):
        snapshots.append(model.emb.weight.detach().clone())
        return {"ndcg@10": next(scripted)}

    monkeypatch.setattr(din_mod, "evaluate_din", fake_eval)
    result = train_din(split, replace(TINY, epochs=10, patience=2), progress=False)
    assert len(result.history) == 4 and result.best_epoch == 2
    assert result.valid_metrics == {"ndcg@10": 0.3}
    assert np.array_equal(result.item_embeddings, snapshots[1][1:].numpy())


def test_config_errors_name_the_key(split):
    for key, value in [("num_negatives", 0), ("activation", "relu"), ("head", "bilinear"),
                       ("attention_hidden", []), ("dropout", 1.0), ("lr", 0.0), ("weight_decay", -1.0), ("eval_users", -1)]:
        with pytest.raises(ValueError, match=key):
            DINConfig(**{key: value})
    with pytest.raises(ConfigError, match="patience"):
        load_config(DINConfig, None, ["patience=0"])
    with pytest.raises(ConfigError, match="num_negativs"):
        load_config(DINConfig, None, ["num_negativs=5"])
    with pytest.raises(DataError, match="num_negatives"):
        train_din(split, replace(TINY, num_negatives=40), progress=False)
    with pytest.raises(ConfigError, match="max_history"):
        train_din(split, replace(TINY, max_history=21), progress=False)


def test_device_auto_trains_here_and_a_missing_gpu_is_a_clear_error(split, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        train_din(split, replace(TINY, device="cuda"), progress=False)
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        train_din(split, replace(TINY, device="gpu"), progress=False)


def test_module_entry_point_trains_and_saves(tmp_path, capsys):
    data = twins_dataset(users=40).save(tmp_path / "ds")
    out = tmp_path / "din"
    overrides = ["dim=8", "attention_hidden=[8]", "mlp_hidden=[8]", "num_negatives=4", "epochs=1",
                 "num_threads=1"]
    assert din_mod.main(["--data", str(data), "--out", str(out), *overrides]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test", "train_seconds"} and 0 <= metrics["test"]["ndcg@10"] <= 1
    assert np.load(out / "item_embeddings.npy").shape == (2 * SLOTS, 8)
    assert json.loads((out / "manifest.json").read_text())["config"]["dim"] == 8
