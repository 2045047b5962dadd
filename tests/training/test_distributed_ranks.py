"""Two real gloo processes (torchrun) train through DDP and save once.

`accelerate launch --cpu --num_processes 2` starts a single process with accelerate 1.15, so the
world size is asserted here from the epoch progress: each optimizer step consumes one batch per
process.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.data.dataset import Dataset
from genrec.data.split import leave_one_out
from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer
from genrec.tasks.prompts import TaskBuilder
from genrec.training.config import TrainConfig
from tests.training.test_train import _args, _recipe, setup  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


def _torchrun(args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "genrec.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _num_examples(root, args):
    cfg = load_config(TrainConfig, root / "recipe.yaml", args[3:])
    ds = Dataset.load(cfg.data)
    split = leave_one_out(ds, cfg.tasks.max_history)
    builder = TaskBuilder(ds.items, item_codes(load_item_tokenizer(cfg.tokenizer), ds), cfg.tasks.max_history, seed=cfg.seed)
    return len(list(builder.iter_examples(split, cfg.tasks.mix))), cfg.training.batch_size


@pytest.mark.integration
def test_two_ranks_train_with_every_aux_term(setup):  # noqa: F811
    root, base = setup
    _recipe(root)  # all four aux terms, response-only logits (the default)
    args = _args(root, base, "ranks", "training.max_steps=2", "training.eval_steps=2",
                 "training.early_stopping_patience=0")
    proc = _torchrun(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "runs" / "ranks"
    assert (run / "adapter_model.safetensors").is_file() and (run / "README.md").is_file()
    logs = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert sum("loss_lm" in r for r in logs) == 2  # written once (main process), not per rank
    n, batch = _num_examples(root, args)
    per_rank_steps = math.ceil(math.ceil(n / 2) / batch)
    assert per_rank_steps < math.ceil(n / batch)
    assert logs[0]["epoch"] == pytest.approx(1 / per_rank_steps)


@pytest.mark.integration
def test_two_ranks_batches_without_target_items(setup):  # noqa: F811
    root, base = setup
    _recipe(root)
    # index2item only: no example has a target item, the aux heads still take part at weight 0.
    args = _args(root, base, "ranks-notarget", "tasks.mix={seqrec: 0, item2index: 0, index2item: 1.0}",
                 "training.max_steps=2", "training.eval_steps=2", "training.early_stopping_patience=0")
    proc = _torchrun(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads(line) for line in (root / "runs" / "ranks-notarget" / "train_log.jsonl").read_text().splitlines()]
    assert all("loss_contrastive_semantic" not in r for r in logs if "loss_lm" in r)
