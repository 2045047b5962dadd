"""Code-level distillation from a SASRec teacher (``losses.weights.distill``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from genrec.errors import ConfigError
from genrec.tasks.collate import Collator, Rendered
from genrec.testing import make_tiny_run
from genrec.training.losses.distill import CodeDistillation

# 4 items, index = (level-0 token, level-1 token): items 0, 1 under token 10; items 2, 3 under token 11.
ITEM_TOKENS = [[10, 20], [10, 21], [11, 22], [11, 23]]
VOCAB = 30


class FixedTeacher(nn.Module):
    """Scores ``[T, N]`` that do not depend on the history."""

    max_len = 5

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.register_buffer("scores", torch.tensor(scores))

    def score(self, hist: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(hist), -1)


def _student(logits_by_pos: dict[int, dict[int, float]]) -> torch.Tensor:
    """Hidden states that are one-hot positions; the "LM head" reads logits per position."""
    table = torch.full((4, VOCAB), -30.0)
    for pos, row in logits_by_pos.items():
        for token, value in row.items():
            table[pos, token] = value
    return table


def test_kl_is_zero_when_the_student_matches_the_teacher_marginals():
    p = np.asarray([0.1, 0.3, 0.4, 0.2])
    distill = CodeDistillation(FixedTeacher(np.log(p).tolist()), ITEM_TOKENS)
    # Target item 1 (tokens 10, 21); position 0 predicts level 0, position 1 level 1 given token 10.
    level0 = {10: np.log(0.4), 11: np.log(0.6)}
    level1 = {20: np.log(0.25), 21: np.log(0.75)}  # items 0 and 1 renormalised: 0.1 / 0.4, 0.3 / 0.4
    table = _student({0: level0, 1: level1})
    hidden = torch.eye(4).unsqueeze(0)  # [1, 4, 4]: position j is one-hot j

    def head(h: torch.Tensor) -> torch.Tensor:
        return h @ table

    args = (torch.tensor([0]), torch.tensor([0]), torch.tensor([[-1, 3]]), torch.tensor([1]))
    assert float(distill(head, hidden, *args)) == pytest.approx(0.0, abs=1e-5)
    off = _student({0: {10: 0.0, 11: 0.0}, 1: level1})
    assert float(distill(lambda h: h @ off, hidden, *args)) > 0.01
    # Rows without a history (window examples) carry no distillation.
    none = (torch.tensor([0]), torch.tensor([0]), torch.tensor([[-1, -1]]), torch.tensor([1]))
    assert float(distill(head, hidden, *none)) == 0.0


def test_gradient_reaches_the_student_only():
    distill = CodeDistillation(FixedTeacher([0.0, 1.0, 2.0, 3.0]), ITEM_TOKENS, temperature=2.0)
    head = nn.Linear(8, VOCAB)
    hidden = torch.randn(2, 6, 8, requires_grad=True)
    loss = distill(head, hidden, torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[0, 1], [-1, 2]]),
                   torch.tensor([3, 0]))
    loss.backward()
    assert loss.item() > 0 and head.weight.grad is not None and hidden.grad.abs().sum() > 0
    assert all(p.grad is None for p in distill.teacher.parameters())


def test_collator_gives_each_sequence_target_its_history():
    seq = Rendered(input_ids=list(range(12)), labels=[-100] * 12, summary_pos=1, target=-1, task="sequence",
                   aux_pos=(4, 7), aux_targets=(8, 9), item_pos=(3, 6, 9), item_ids=(7, 8, 9))
    window = Rendered(input_ids=[1, 2, 3], labels=[-100, -100, 3], summary_pos=1, target=5, task="seqrec")
    batch = Collator(0)([window, seq])
    assert batch["aux_targets"].tolist() == [5, 8, 9]
    assert batch["aux_hist"].tolist() == [[-1, -1], [-1, 7], [7, 8]]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from genrec.baselines.run import run_baseline
    from genrec.testing import tiny_dataset

    root = tmp_path_factory.mktemp("teacher")
    data = tiny_dataset().save(root / "data")
    run_baseline(data, "sasrec", root / "sasrec", overrides=["hidden=16", "epochs=2", "num_threads=1"],
                 progress=False)
    return root / "sasrec"


def test_training_with_distillation_logs_the_term(tmp_path, teacher):
    run = make_tiny_run(tmp_path, steps=3, overrides=[
        "tasks.mix={seqrec: 0, item2index: 0.5, sequence: 1}", "losses.weights={contrastive_semantic: 0, distill: 1}",
        f"losses.distill_teacher={teacher}"])
    logs = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    values = [r["loss_distill"] for r in logs if "loss_distill" in r]
    assert values and all(np.isfinite(values)) and max(values) > 0


def test_distillation_needs_a_teacher_of_the_same_data(tmp_path, teacher):
    with pytest.raises(ConfigError, match="distill_teacher"):
        make_tiny_run(tmp_path / "a", steps=1, overrides=["losses.weights={distill: 1}"])
    with pytest.raises(ConfigError, match="does not exist"):
        make_tiny_run(tmp_path / "b", steps=1, overrides=[
            "losses.weights={distill: 1}", f"losses.distill_teacher={tmp_path / 'nowhere'}"])
    from genrec.baselines.run import run_baseline
    from genrec.testing import tiny_dataset

    other = tiny_dataset(num_items=30).save(tmp_path / "other")
    run_baseline(other, "sasrec", tmp_path / "other_sasrec", overrides=["hidden=8", "epochs=1", "num_threads=1"],
                 progress=False)
    with pytest.raises(ConfigError, match="trained on 30 items"):
        make_tiny_run(tmp_path / "c", steps=1, overrides=[
            "losses.weights={distill: 1}", f"losses.distill_teacher={tmp_path / 'other_sasrec'}"])


def test_excluded_items_get_no_teacher_mass():
    p = np.asarray([0.1, 0.3, 0.4, 0.2])
    distill = CodeDistillation(FixedTeacher(np.log(p).tolist()), ITEM_TOKENS,
                               exclude=torch.tensor([False, True, False, False]))
    probs = distill.teacher_probs(torch.tensor([[-1, 3]]))[0].numpy()
    assert probs[1] == 0.0 and probs.sum() == pytest.approx(1.0)
    assert probs[[0, 2, 3]] == pytest.approx(p[[0, 2, 3]] / p[[0, 2, 3]].sum())


def test_masked_history_items_get_no_teacher_mass_but_the_target_keeps_its_own():
    p = np.asarray([0.1, 0.3, 0.4, 0.2])
    distill = CodeDistillation(FixedTeacher(np.log(p).tolist()), ITEM_TOKENS)
    hist = torch.tensor([[-1, 3, 2], [1, 2, 0]])
    seen = distill.history_mask(hist, torch.tensor([0, 2]), len(p))
    probs = distill.teacher_probs(hist).masked_fill(seen, 0.0)
    probs = (probs / probs.sum(1, keepdim=True)).numpy()  # the mass each level renormalises
    assert probs[0] == pytest.approx([p[0] / 0.4, p[1] / 0.4, 0.0, 0.0])  # items 2, 3 were taken already
    assert probs[1] == pytest.approx([0.0, 0.0, 0.4 / 0.6, 0.2 / 0.6])  # a repeated target keeps its mass
    kept = distill.teacher_probs(hist)
    assert kept.numpy() == pytest.approx(np.stack([p, p]))


KEPT0, MASKED0 = {10: 0.4, 11: 0.6}, {10: 0.3 / 0.9, 11: 0.6 / 0.9}  # item 0's 0.1 leaves token 10
KEPT1, MASKED1 = {20: 0.25, 21: 0.75}, {20: 1e-9, 21: 1.0}  # under token 10: items 0 (0.1), 1 (0.3)


@pytest.mark.parametrize(("mask_from", "level0", "level1"), [
    (None, KEPT0, KEPT1), (0, MASKED0, MASKED1), (1, KEPT0, MASKED1)])
def test_history_mass_leaves_the_levels_from_mask_from(mask_from, level0, level1):
    p = np.asarray([0.1, 0.3, 0.4, 0.2])
    distill = CodeDistillation(FixedTeacher(np.log(p).tolist()), ITEM_TOKENS, mask_from=mask_from)
    hidden = torch.eye(4).unsqueeze(0)
    args = (torch.tensor([0]), torch.tensor([0]), torch.tensor([[-1, 0]]), torch.tensor([1]))  # item 0 taken
    matching = _student({0: {t: np.log(v) for t, v in level0.items()}, 1: {t: np.log(v) for t, v in level1.items()}})
    assert float(distill(lambda h: h @ matching, hidden, *args)) == pytest.approx(0.0, abs=1e-5)
    kept = _student({0: {t: np.log(v) for t, v in KEPT0.items()}, 1: {t: np.log(v) for t, v in KEPT1.items()}})
    assert (float(distill(lambda h: h @ kept, hidden, *args)) > 0.01) is (mask_from is not None)


@pytest.mark.parametrize(("setting", "mask_from"), [("keep", None), ("mask", 0), ("deep", 1)])
def test_distill_history_setting_decides_the_mask(teacher, setting, mask_from):
    from genrec.data.dataset import Dataset
    from genrec.training.config import LossConfig, TrainConfig
    from genrec.training.recipe import code_distillation

    ds = Dataset.load(teacher.parent / "data")
    cfg = TrainConfig(data=str(teacher.parent / "data"), tokenizer="unused", losses=LossConfig(
        weights={"distill": 1.0}, distill_teacher=str(teacher), distill_history=setting))
    assert code_distillation(cfg, ds, [[10 + i] for i in range(ds.num_items)]).mask_from == mask_from
    assert LossConfig().distill_history == "keep"


def test_unknown_distill_history_setting_is_refused():
    from genrec.training.config import LossConfig

    with pytest.raises(ValueError, match="distill_history must be one of"):
        LossConfig(distill_history="drop")


def test_a_cold_start_run_needs_a_teacher_under_the_same_hold_out(tmp_path, teacher):
    cold = ["tasks.cold_items=0.25", "tasks.cold_seed=1"]
    with pytest.raises(ConfigError, match=r"trained with cold_items=0.0 .* tasks.cold_items=0.25"):
        make_tiny_run(tmp_path, steps=1, overrides=[*cold, "losses.weights={distill: 1}",
                                                    f"losses.distill_teacher={teacher}"],
                      tokenizer_overrides=["cold_start.cold_items=0.25", "cold_start.cold_seed=1"])
