"""A tiny LLaMA-architecture model and BPE tokenizer built in-test (no downloads)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
