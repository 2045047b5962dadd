"""Instruction examples name the right items and respect the split."""

import numpy as np
import pytest

from genrec.data.dataset import Dataset, Item
from genrec.data.split import leave_one_out
from genrec.tasks.prompts import TEMPLATES, TaskBuilder


def _toy():
    items = [Item(item_id=f"i{k}", title=f"Title {k}", description=f"desc {k}") for k in range(6)]
    seqs = [np.array([0, 1, 2, 3, 4]), np.array([5, 4, 3])]
    ds = Dataset(items=items, users=["u0", "u1"], sequences=seqs)
    codes = [[f"<s0_{k % 2}>", f"<s1_{k}>"] for k in range(6)]
    return ds, codes


def test_examples_use_index_strings_and_targets():
    ds, codes = _toy()
    tb = TaskBuilder(ds.items, codes, seed=0)
    ex = tb.make("seqrec", [0, 1], 2)
    assert ex.response == "<s0_0><s1_2>" and ex.target == 2
    assert "<s0_0><s1_0>, <s0_1><s1_1>" in ex.prompt
    assert tb.make("index2item", None, 3).response == "Title 3"
    assert "Title 4" in tb.make("item2index", None, 4).prompt


def test_training_examples_never_target_valid_or_test_items():
    ds, codes = _toy()
    split = leave_one_out(ds)
    tb = TaskBuilder(ds.items, codes, seed=0)
    examples = list(tb.iter_examples(split, {"seqrec": 1.0, "fusion_titles": 1.0}))
    # user 0 prefix [0,1,2] → windows targets 1, 2; user 1 prefix [5] → none
    assert sorted(e.target for e in examples if e.task == "seqrec") == [1, 2]
    assert len(examples) == 4


def test_mix_scaling_and_unknown_task():
    ds, codes = _toy()
    split = leave_one_out(ds)
    tb = TaskBuilder(ds.items, codes, seed=0)
    ex = list(tb.iter_examples(split, {"index2item": 0.5, "item2index": 2.0}))
    assert sum(e.task == "index2item" for e in ex) == 3
    assert sum(e.task == "item2index" for e in ex) == 12
    with pytest.raises(ValueError, match="unknown tasks"):
        list(tb.iter_examples(split, {"nope": 1.0}))


def test_every_task_has_several_phrasings():
    # ``sequence`` has one on purpose: its served prompt must be a prefix of every training example
    assert all(len(v) >= 2 for t, v in TEMPLATES.items() if t != "sequence")
    assert len(TEMPLATES["sequence"]) == 1
