"""End to end with real (tiny) encoders: a 2-layer LLaMA for text, DIN / SASRec for behavior."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from itok_synthetic import tiny_word_llama

from genrec.config import load_config
from genrec.data.dataset import Dataset, Item
from genrec.item_tokenizer.artifact import load_item_tokenizer
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.cold_start import assign_new_items
from genrec.item_tokenizer.config import TokenizerConfig


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer LLaMA with a word-level tokenizer over the test catalog's words."""
    words = ["Title: space opera cowboy western kitchen cooking jazz piano garden tools chess puzzles volume",
             " ".join(str(i) for i in range(100))]
    return tiny_word_llama(tmp_path_factory.mktemp("tiny-llama"), words)


@pytest.mark.parametrize("behavior", ["din", "sasrec", "sasrec_text"])
def test_build_with_tiny_encoders_then_cold_start_by_text(tmp_path, dataset_dir, tiny_llama, behavior):
    enc = (["behavior.din.dim=8", "behavior.din.epochs=2", "behavior.din.num_negatives=5",
            "behavior.din.batch_size=64", "behavior.din.attention_hidden=[8]", "behavior.din.mlp_hidden=[8]"]
           if behavior == "din" else
           ["behavior.sasrec.hidden=8", "behavior.sasrec.epochs=2", "behavior.sasrec.batch_size=64"])
    if behavior == "sasrec_text":  # SASRec on text+id item tables, text from the semantic stream's encoder
        behavior = "sasrec"
        enc += ["behavior.sasrec.item_embeddings=text+id", f"behavior.sasrec.text.model={tiny_llama}",
                "behavior.sasrec.text.fields=[title]", "behavior.sasrec.adapter_hidden=8"]
    cfg = load_config(TokenizerConfig, None, [
        "name=e2e", f"data={dataset_dir}", f"out_dir={tmp_path / 'out'}", "progress=false", "plots=false",
        "max_history=10", f"cache_dir={tmp_path / 'cache'}",
        f"semantic.text.model={tiny_llama}", "semantic.text.fields=[title]",
        "semantic.kmeans.k=8", "semantic.kmeans.depth=auto",
        f"behavior.encoder={behavior}", *enc, "behavior.kmeans.k=8", "behavior.kmeans.depth=auto"])
    out = build_tokenizer(cfg)
    tok = load_item_tokenizer(out, dataset=dataset_dir)
    assert tok.stats["unique_rate"] == 1.0 and tok.stats["collision_rate"] == 0.0
    assert tok.embeddings("semantic").shape == (60, 32) and tok.embeddings("behavior").shape == (60, 8)
    assert tok.config["encoders"]["behavior"]["encoder"] == behavior
    assert tok.config["encoders"]["semantic"]["config"]["model"] == str(tiny_llama)
    assert tok.config["encoders"]["behavior"]["config"]["seed"] == 0  # the tokenizer's seed reached the encoder
    assert "recall@10" in tok.stats["encoders"]["behavior"]["valid_metrics"]

    # cold start: same title as an existing item -> same text embedding -> same semantic codes
    it5 = Dataset.load(dataset_dir).items[5]
    codes = assign_new_items(out, [Item("copy5", title=it5.title)], progress=False)
    assert codes["copy5"][:2] == tok.item_tokens[it5.item_id][:2]
    after = load_item_tokenizer(out)
    assert after.version == 2 and after.stats["unique_rate"] == 1.0
    assert np.allclose(after.embeddings("semantic")[60], tok.embeddings("semantic")[5], atol=1e-5)


def test_items_without_text_embed_their_id_and_are_counted(tmp_path, dataset_dir, tiny_llama, caplog):
    items = dataset_dir / "items.jsonl"
    lines = items.read_text().splitlines()
    for i in (0, 1):  # it0, it1 lose all their text
        rec = json.loads(lines[i])
        rec.update(title="", categories=[])
        lines[i] = json.dumps(rec)
    items.write_text("\n".join(lines) + "\n")
    cfg = load_config(TokenizerConfig, None, [
        "name=blank", f"data={dataset_dir}", f"out_dir={tmp_path / 'out'}", "progress=false", "plots=false",
        f"cache_dir={tmp_path / 'cache'}", "order=[semantic]", f"semantic.text.model={tiny_llama}",
        "semantic.text.fields=[title, categories]", "semantic.kmeans.k=8", "semantic.kmeans.depth=auto"])
    with caplog.at_level(logging.WARNING, logger="genrec.item_tokenizer.build"):
        out = build_tokenizer(cfg)
    assert "2 item(s) have none of the text fields" in caplog.text and "'it0', 'it1'" in caplog.text
    tok = load_item_tokenizer(out, dataset=dataset_dir)
    assert tok.stats["encoders"]["semantic"]["items_without_text"] == 2 and tok.stats["unique_rate"] == 1.0
    assert np.isfinite(tok.embeddings("semantic")).all()
