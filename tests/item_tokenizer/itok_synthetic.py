"""Synthetic embeddings and tiny dataset directories for the item tokenizer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrec.data.dataset import Item, RawData, build_dataset


def blobs(n: int, dim: int, centers: int, seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``centers`` well-separated unit-norm centres: (points [n, dim], centre id [n])."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    label = np.arange(n) % centers
    return (c[label] + spread * rng.standard_normal((n, dim))).astype(np.float32), label


def make_dataset(root: Path, n_items: int = 60, n_users: int = 40, seed: int = 0) -> Path:
    """A tiny canonical dataset dir: items with genre-like titles, users with 5-12 interactions."""
    rng = np.random.default_rng(seed)
    genres = ["space opera", "cowboy western", "kitchen cooking", "jazz piano", "garden tools", "chess puzzles"]
    items = {f"it{i}": Item(f"it{i}", title=f"{genres[i % len(genres)]} volume {i}",
                            categories=[genres[i % len(genres)]]) for i in range(n_items)}
    inter = []
    for u in range(n_users):
        g = u % len(genres)  # each user mostly stays in one genre
        pool = [i for i in range(n_items) if i % len(genres) == g]
        for t, i in enumerate(rng.choice(pool, size=int(rng.integers(5, 10)), replace=False)):
            inter.append((f"u{u}", f"it{i}", float(t)))
    for i in range(n_items):  # every item interacted with at least once
        inter.append((f"u{i % n_users}", f"it{i}", 100.0 + i))
    ds = build_dataset(RawData(interactions=inter, items=items, format="test", inputs=[]))
    out = root / "data"
    ds.save(out)
    return out


def tiny_word_llama(path: Path, texts: list[str]) -> Path:
    """Save a 2-layer LLaMA with a word-level tokenizer over the words of ``texts`` to ``path``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
