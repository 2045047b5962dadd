"""The distributed path: `accelerate launch` with two CPU processes (DDP over gloo) trains and saves once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_train import _args, _recipe, setup  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_two_process_cpu_training(setup):  # noqa: F811
    root, base = setup
    _recipe(root)
    args = _args(root, base, "ddp", "training.max_steps=4", "training.early_stopping_patience=0")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes/accelerate/cpu_2proc.yaml"), "-m", "genrec.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "runs" / "ddp"
    assert (run / "adapter_model.safetensors").is_file() and (run / "README.md").is_file()
    dist = json.loads((run / "provenance.json").read_text())["distributed"]
    assert dist["world_size"] == 2 and dist["type"] == "MULTI_CPU", dist
    # Two ranks each consumed their own shard: 4 optimizer steps at per-device batch 4 ⇒ 32 examples seen.
    state = json.loads((run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
