"""Tiny stand-ins built in seconds, for the tests and the benchmarks: nothing is downloaded.

- :func:`make_tiny_llm`: a random tiny LLaMA model and a byte-level BPE tokenizer (with a chat
  template) trained on a few sentences;
- :func:`tiny_dataset`: a small catalog and users walking it;
- :func:`make_tiny_run`: a trained genrec run (dataset + item tokenizer from random embeddings +
  LoRA adapter on the tiny LLaMA), as ``genrec train`` writes it.

This module sits at the top of the import layers (it drives training); library code never
imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GENRES = ("Comedy", "Drama", "Action")
CORPUS = [
    "a user interacted with these items in order which item will the user interact with next",
    "here is a user's history oldest first recommend the next item",
    "what is the title of item name the item whose index is give the index of the item described here",
    "toy story golden eye four rooms get shorty copycat the movie film drama comedy action",
]


def make_tiny_llm(path: Path, hidden: int = 32, layers: int = 2, vocab: int = 400, seed: int = 0,
                  tie: bool = True) -> Path:
    """Save a tiny random LLaMA model + byte-level BPE tokenizer (with a chat template) to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 10, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 unk_token="<unk>", bos_token="<|im_start|>")
    hf.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tie, pad_token_id=hf.pad_token_id, eos_token_id=hf.eos_token_id,
                      bos_token_id=hf.bos_token_id)
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return path


def tiny_dataset(num_items: int = 24, num_users: int = 30):
    """Items ``m0..m{N-1}`` titled ``"film i <genre>"`` with one genre each; users walk the catalog."""
    from genrec.data.dataset import Dataset, Item

    items = [Item(item_id=f"m{i}", title=f"film {i} {GENRES[i % 3].lower()}", categories=[GENRES[i % 3]],
                  extra={"year": 1990 + i}) for i in range(num_items)]
    seqs = [np.asarray([(u + 2 * t) % num_items for t in range(6)], dtype=np.int64) for u in range(num_users)]
    return Dataset(items=items, users=[f"u{u}" for u in range(num_users)], sequences=seqs,
                   stats={"users": num_users, "items": num_items, "interactions": 6 * num_users})


def make_tiny_run(root: str | Path, name: str = "tiny", steps: int = 4, mode: str = "lora",
                  overrides: Sequence[str] = (), tokenizer_overrides: Sequence[str] = ()) -> Path:
    """Build data, item tokenizer and a ``steps``-step training run under ``root`` (``overrides``:
    more recipe ``KEY=VALUE`` settings, ``tokenizer_overrides``: the tokenizer's); return the run dir."""
    from genrec.config import load_config
    from genrec.item_tokenizer.build import build_tokenizer
    from genrec.item_tokenizer.config import TokenizerConfig
    from genrec.training.config import TrainConfig
    from genrec.training.recipe import run

    root = Path(root)
    ds = tiny_dataset()
    data = root / "data"
    ds.save(data)
    rng = np.random.default_rng(0)
    np.save(root / "sem.npy", rng.normal(size=(ds.num_items, 8)).astype(np.float32))
    np.save(root / "beh.npy", rng.normal(size=(ds.num_items, 6)).astype(np.float32))
    quiet = logging.getLogger("genrec").level
    logging.getLogger("genrec").setLevel(logging.WARNING)
    try:
        build_tokenizer(load_config(TokenizerConfig, None, [
            "name=tiny", f"data={data}", f"out_dir={root / 'tok'}", "plots=false", "progress=false",
            "semantic.encoder=precomputed", f"semantic.embeddings={root / 'sem.npy'}", "semantic.kmeans.k=4",
            "behavior.encoder=precomputed", f"behavior.embeddings={root / 'beh.npy'}", "behavior.kmeans.k=4",
            *tokenizer_overrides]))
        base = make_tiny_llm(root / "base", hidden=32, layers=2)
        cfg = load_config(TrainConfig, None, [
            f"name={name}", f"output_dir={root / 'runs'}", f"data={data}", f"tokenizer={root / 'tok' / 'tiny'}",
            f"model.base={base}", f"model.mode={mode}", "model.lora_r=4",
            "tasks.mix={seqrec: 2.0, item2index: 1.0}", "tasks.max_eval_examples=4", "tasks.max_history=8",
            "losses.weights={contrastive_semantic: 0.1}", "losses.num_negatives=8",
            f"training.max_steps={steps}", "training.batch_size=8", f"training.eval_steps={steps}",
            "training.logging_steps=1", "training.learning_rate=0.01", "training.early_stopping_patience=0",
            *overrides])
        return run(cfg)
    finally:
        logging.getLogger("genrec").setLevel(quiet)
