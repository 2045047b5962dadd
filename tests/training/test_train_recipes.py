"""Every training recipe loads into the schema, names its launch command, and ships configs that exist."""

from pathlib import Path

import pytest
import yaml

from genrec.config import load_config
from genrec.training.config import TrainConfig

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("train_*.yaml")), ids=lambda p: p.name)
def test_train_recipe_loads(path):
    cfg = load_config(TrainConfig, path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "genrec" in first and path.name in first
    assert cfg.model.mode in ("qlora", "lora", "full")


@pytest.mark.parametrize("path", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_reference_existing_files(path):
    cfg = yaml.safe_load(path.read_text())
    ds = (cfg.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds:
        assert (RECIPES.parent / ds).is_file()
    assert cfg["num_processes"] >= 2
