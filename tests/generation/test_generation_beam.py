"""Constrained beam search: equal to HF generate, exact on small catalogs, always valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gen_helpers import exact_log_prob, hf_top

from genrec.errors import ConfigError
from genrec.generation import ItemTrie
from genrec.generation.beam import beam_search, constrained_beam_search


def items(res):
    return [i for i, _ in res]


def scores(res):
    return np.array([s for _, s in res])


@pytest.mark.parametrize("num_beams, k", [(8, 8), (8, 3), (20, 20), (20, 10)])
def test_top_k_equals_hf_generate(catalog, num_beams, k):
    ours = constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=num_beams, k=k)
    for prompt, got in zip(catalog.prompts, ours):
        want = hf_top(catalog, prompt, num_beams)[:k]
        assert len(got) == k and items(got) == items(want)
        assert np.allclose(scores(got), scores(want), atol=1e-4)
        assert all(a >= b for a, b in zip(scores(got), scores(got)[1:]))


def test_scores_are_exact_item_log_probs_and_k_beyond_catalog(catalog):
    small = catalog.seqs[:3] + [catalog.seqs[-1]]  # includes a 5-token item
    trie = ItemTrie.from_sequences(small, catalog.tok.eos_token_id, len(catalog.tok))
    prompt = catalog.prompts[0]
    got = constrained_beam_search(catalog.model, [prompt], trie, num_beams=10, k=10)[0]
    exact = {i: exact_log_prob(catalog.model, prompt, s + [catalog.tok.eos_token_id]) for i, s in enumerate(small)}
    assert sorted(items(got)) == [0, 1, 2, 3]  # every valid item, once each
    assert items(got) == sorted(exact, key=exact.get, reverse=True)
    assert np.allclose(scores(got), [exact[i] for i in items(got)], atol=1e-4)


class PreferInvalid(torch.nn.Module):
    """Wraps a causal LM and adds a large bonus to every token outside the catalog's next steps."""

    def __init__(self, inner, bonus: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.bonus = inner, bonus

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits + self.bonus
        return out


def test_never_emits_invalid_items_under_adversarial_logits(catalog):
    bonus = torch.zeros(catalog.model.config.vocab_size)
    bonus[:] = 50.0
    bonus[catalog.item_ids] = -50.0  # item tokens (the only valid ones besides EOS) are the least likely
    bonus[catalog.tok.eos_token_id] = -50.0
    model = PreferInvalid(catalog.model, bonus)
    res = constrained_beam_search(model, catalog.prompts, catalog.trie, num_beams=12, k=12)
    for got in res:
        assert len(got) == 12 and len(set(items(got))) == 12
        assert all(0 <= i < len(catalog.seqs) for i in items(got))
        assert np.isfinite(scores(got)).all()


def test_batch_of_different_lengths_equals_one_by_one(catalog):
    batch = constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=10, k=10)
    for prompt, got in zip(catalog.prompts, batch):
        alone = constrained_beam_search(catalog.model, [prompt], catalog.trie, num_beams=10, k=10)[0]
        assert items(got) == items(alone) and np.allclose(scores(got), scores(alone), atol=1e-4)


def test_kv_cache_expansion_equals_recompute(catalog):
    cached = constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=16, k=16)
    fresh = constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=16, k=16,
                                    use_cache=False)
    for a, b in zip(cached, fresh):
        assert items(a) == items(b) and np.allclose(scores(a), scores(b), atol=1e-4)


def test_peft_model_train_mode_and_inference_mode(catalog):
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(catalog.model), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    prompt = catalog.prompts[2]
    with torch.inference_mode():
        got = constrained_beam_search(model, [prompt], catalog.trie, num_beams=6, k=6)[0]
    assert model.training  # restored
    model.eval()
    for i, s in got:
        exact = exact_log_prob(model, prompt, catalog.seqs[i] + [catalog.tok.eos_token_id])
        assert abs(s - exact) < 1e-4
    plain = constrained_beam_search(catalog.model, [prompt], catalog.trie, num_beams=6, k=6)[0]
    assert not np.allclose(scores(got), scores(plain), atol=1e-2)  # the adapter really took part


def test_max_new_tokens_and_bad_arguments(catalog):
    # Items need 5 steps (4 tokens + EOS): 4 steps finish none.
    assert constrained_beam_search(catalog.model, catalog.prompts[:1], catalog.trie, 4, 4, max_new_tokens=4) == [[]]
    assert constrained_beam_search(catalog.model, [], catalog.trie) == []
    with pytest.raises(ConfigError, match="exceeds num_beams"):
        constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=4, k=5)
    with pytest.raises(ConfigError, match="empty"):
        constrained_beam_search(catalog.model, [[]], catalog.trie)


def test_unconstrained_loop_scores_eos_terminated_sequences(catalog):
    bonus = torch.zeros(catalog.model.config.vocab_size)
    bonus[catalog.tok.eos_token_id] = 8.0  # make EOS reachable within a few steps
    model = PreferInvalid(catalog.model, bonus)
    prompt = catalog.prompts[3]
    got = beam_search(model, [prompt], catalog.tok.eos_token_id, max_new_tokens=3, num_beams=6, k=6)[0]
    assert got and all(seq[-1] == catalog.tok.eos_token_id for seq, _ in got)
    assert len({tuple(s) for s, _ in got}) == len(got)
    with torch.no_grad():
        for seq, s in got:
            ids = torch.tensor([prompt + seq])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            pos = torch.arange(len(prompt) - 1, len(prompt) + len(seq) - 1)
            assert abs(float(logp[pos, torch.tensor(seq)].sum()) - s) < 1e-4
