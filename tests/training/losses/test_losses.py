"""Behaviour of the auxiliary losses: gradients flow, the right target wins, weights combine."""

import pytest
import torch

from genrec.training.losses import GlobalContrastiveLoss, ReconstructionLoss, weighted_total
from genrec.training.losses.contrastive import info_nce, sample_negatives


def test_info_nce_prefers_aligned_query():
    torch.manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    targets = torch.tensor([3, 7])
    negs = torch.arange(50)
    aligned = info_nce(table[targets], table, targets, negs, temperature=0.1)
    random_q = info_nce(torch.nn.functional.normalize(torch.randn(2, 8), dim=-1), table, targets, negs, 0.1)
    assert aligned < random_q


def test_negative_equal_to_target_is_masked():
    table = torch.eye(4)
    q = table[[1]]
    # Only negative is the target itself: masked → logits [pos, -inf] → loss 0.
    loss = info_nce(q, table, torch.tensor([1]), torch.tensor([1]), temperature=0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_sample_negatives_whole_catalog_when_small():
    assert torch.equal(sample_negatives(4, 10, 2048), torch.arange(10))
    g = torch.Generator().manual_seed(0)
    negs = sample_negatives(4, 1000, 64, g)
    assert len(negs) == 64 and len(set(negs.tolist())) == 64


def test_contrastive_training_step_lowers_loss():
    torch.manual_seed(0)
    tables = {"semantic": torch.randn(40, 6), "behavior": torch.randn(40, 5)}
    loss_fn = GlobalContrastiveLoss(hidden=12, tables=tables, num_negatives=16, temperature=0.2)
    h = torch.randn(40, 12, requires_grad=True)
    targets = torch.arange(40)
    opt = torch.optim.Adam(list(loss_fn.parameters()) + [h], lr=0.05)
    first = None
    for _ in range(60):
        terms = loss_fn(h, targets)
        total = sum(terms.values())
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert set(terms) == {"contrastive_semantic", "contrastive_behavior"}
    assert total.item() < 0.5 * first


def test_contrastive_rejects_mismatched_tables():
    with pytest.raises(ValueError, match="different item counts"):
        GlobalContrastiveLoss(8, {"semantic": torch.randn(5, 3), "behavior": torch.randn(6, 3)})


def test_reconstruction_terms_and_learning():
    torch.manual_seed(0)
    sem = torch.randn(20, 6)
    codes = torch.stack([torch.arange(20) % 4, torch.arange(20) // 4], dim=1)
    loss_fn = ReconstructionLoss(hidden=10, semantic=sem, codes=codes)
    h = torch.randn(20, 10, requires_grad=True)
    opt = torch.optim.Adam(list(loss_fn.parameters()) + [h], lr=0.05)
    targets = torch.arange(20)
    start = {k: v.item() for k, v in loss_fn(h, targets).items()}
    for _ in range(100):
        terms = loss_fn(h, targets)
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    assert set(start) == {"reconstruction_embedding", "reconstruction_codes"}
    for k, v in terms.items():
        assert v.item() < 0.3 * start[k], k


def test_weighted_total():
    terms = {"lm": torch.tensor(2.0), "contrastive_semantic": torch.tensor(1.0), "contrastive_behavior": torch.tensor(3.0)}
    total = weighted_total(terms, {"contrastive_semantic": 0.1, "contrastive_behavior": 0.1})
    assert total.item() == pytest.approx(2.4)
    with pytest.raises(ValueError, match="not computed"):
        weighted_total(terms, {"reconstruction_codes": 1.0})
