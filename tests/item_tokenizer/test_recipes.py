"""Every tokenizer recipe loads into its schema and starts with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.item_tokenizer.config import TokenizerConfig

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("tokens_*.yaml"))


def test_there_are_tokenizer_recipes():
    assert {p.name for p in RECIPES} >= {"tokens_ml100k.yaml", "tokens_beauty.yaml", "tokens_scientific.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_tokenizer_recipe_loads_and_documents_its_command(path: Path):
    cfg = load_config(TokenizerConfig, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# genrec tokens build --config recipes/{path.name}"
    assert any("Prerequisite" in line for line in lines[:6])
    assert cfg.data and cfg.name
    # encoder sections were checked against the encoders' own schemas
    assert cfg.semantic.encoder == "precomputed" or type(cfg.semantic.text).__name__ == "TextEncoderConfig"
    assert cfg.behavior.encoder != "din" or type(cfg.behavior.din).__name__ == "DINConfig"
    # and overrides still apply on top of a recipe
    assert load_config(TokenizerConfig, path, ["semantic.kmeans.k=16"]).semantic.kmeans.k == 16
