"""The item head: fits a next-item map from states, gives unseen items the uniform log-prob,
round-trips through its file and refuses a file of another model or catalog."""

import pytest
import torch

from genrec.encoders.item_head import (
    ItemHead,
    fit_item_head,
    head_metrics,
    load_item_head,
    run_item_head,
    save_item_head,
)
from genrec.errors import DataError


def _task(n_items=12, hidden=16, n=600, seed=0):
    """States that identify their next item through a hidden linear map (item 11 never a target)."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.randn(n_items, hidden, generator=g)
    targets = torch.randint(0, n_items - 1, (n,), generator=g)
    states = proto[targets] + 0.3 * torch.randn(n, hidden, generator=g)
    return states, targets


def test_head_learns_the_next_item_and_is_uniform_on_unseen_items():
    states, targets = _task()
    known = torch.bincount(targets, minlength=12) > 0
    assert not known[11]
    head, history = fit_item_head(states[:500], targets[:500], known, (states[500:], targets[500:]), epochs=30,
                                  patience=30, lr=0.05, batch_size=64)
    assert history[-1]["loss"] < history[0]["loss"]
    recall, ndcg = head_metrics(head(states[500:]), targets[500:], k=1)
    assert recall > 0.9 and 0 < ndcg <= recall
    logp = head(states[:3])
    assert torch.allclose(logp[:, 11], torch.full((3,), -torch.log(torch.tensor(11.0)).item()))
    assert torch.logsumexp(logp[:, :11], 1).max() <= 1e-5  # a distribution over the known items


def test_head_file_round_trips_and_is_checked_against_the_model(tmp_path):
    head = ItemHead(8, torch.tensor([True, True, False, True]), weight=2.0, extra=7)
    path = save_item_head(head, tmp_path / "item_head.safetensors", {"seed": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["item_head.safetensors"]  # no temporary file left
    back = load_item_head(path, 8, 4)
    assert (back.weight, back.extra) == (2.0, 7) and back.known.tolist() == [True, True, False, True]
    x = torch.randn(2, 8)
    torch.testing.assert_close(back(x), head(x))
    with pytest.raises(DataError, match="width 16 and its catalog 4 items"):
        load_item_head(path, 16, 4)

    assert run_item_head(tmp_path / "missing.safetensors", 8, 4) is None
    assert run_item_head(path, 8, 4).weight == 2.0
    save_item_head(ItemHead(8, torch.ones(4, dtype=torch.bool), weight=0.0), path)
    assert run_item_head(path, 8, 4) is None  # weight 0: validation chose the codes alone
