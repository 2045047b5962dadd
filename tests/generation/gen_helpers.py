"""Helpers of the generation tests: the tiny catalog, HF reference search, exact scoring."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from genrec.generation import ItemTrie
from genrec.generation.hf_reference import PrefixTable
from genrec.hub import load_causal_lm
from genrec.testing import make_tiny_llm
from genrec.training.model import add_item_tokens

LEVELS, K = ("s0", "s1", "b0", "b1"), 8
PROMPTS = ["a user interacted with these items in order",
           "here is a user's history oldest first recommend the next item toy story golden eye",
           "which item will the user interact with next",
           "drama comedy"]


@dataclass
class Catalog:
    model: Any
    tok: Any
    seqs: list[list[int]]  # item index tokens, item i = seqs[i]
    trie: ItemTrie
    table: PrefixTable
    prompts: list[list[int]]
    item_ids: list[int]  # ids of the added item tokens (level tokens, then <d_*>)


def random_codes(n: int, seed: int) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    codes: set[tuple[int, ...]] = set()
    while len(codes) < n:
        codes.add(tuple(rng.randrange(K) for _ in LEVELS))
    out = sorted(codes)
    rng.shuffle(out)
    return out


def build_catalog(root) -> Catalog:
    model, tok = load_causal_lm(str(make_tiny_llm(root)))
    names = [f"<{lvl}_{c}>" for lvl in LEVELS for c in range(K)] + [f"<d_{i}>" for i in range(3)]
    ids = add_item_tokens(tok, names)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        # Random init gives near-uniform logits; spread them so rankings have no near-ties.
        model.get_input_embeddings().weight.mul_(30)
    model.eval()
    seqs = [[ids[lvl * K + c] for lvl, c in enumerate(code)] for code in random_codes(120, seed=0)]
    # Items sharing the first codes of another item carry a disambiguation token (length 5).
    seqs += [seqs[0] + [ids[4 * K]], seqs[1] + [ids[4 * K + 1]], seqs[2][:3] + [ids[3 * K + 7], ids[4 * K + 2]]]
    seqs = [list(s) for s in dict.fromkeys(tuple(s) for s in seqs)]
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    return Catalog(model, tok, seqs, ItemTrie.from_sequences(seqs, tok.eos_token_id, len(tok)),
                   PrefixTable(seqs, tok.eos_token_id), prompts, ids[:-1])


def hf_top(cat: Catalog, prompt: list[int], num_beams: int, fn=None, processor=None) -> list[tuple[int, float]]:
    """HF ``generate`` beam search under the equivalent settings, mapped back to items."""
    from genrec.generation.hf_reference import prefix_allowed_tokens_fn

    x = torch.tensor([prompt])
    kwargs = {"logits_processor": [processor]} if processor is not None else {
        "prefix_allowed_tokens_fn": fn or prefix_allowed_tokens_fn(cat.table, len(prompt))}
    out = cat.model.generate(x, attention_mask=torch.ones_like(x), num_beams=num_beams,
                             num_return_sequences=num_beams, do_sample=False, length_penalty=0.0,
                             early_stopping="never", max_new_tokens=cat.trie.depth, eos_token_id=cat.tok.eos_token_id,
                             pad_token_id=cat.tok.pad_token_id, output_scores=True, return_dict_in_generate=True,
                             **kwargs)
    res = []
    for seq, score in zip(out.sequences, out.sequences_scores):
        item = cat.table.item(seq[len(prompt):].tolist())
        if item is not None and float(score) > -1e8:  # HF fills missing beams with -1e9 rows
            res.append((item, float(score)))
    return res


def exact_log_prob(model: Any, prompt: list[int], tokens: list[int]) -> float:
    """``log P(tokens | prompt)`` by one teacher-forced forward pass."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(tokens) - 1)
    return float(logp[pos, torch.tensor(tokens)].sum())
