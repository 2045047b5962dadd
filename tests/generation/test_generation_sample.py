"""Sampling within the trie: every sample is a catalog item, draws are seeded, log-probs are the
trie-renormalised ones, and the KV cache changes nothing."""

from __future__ import annotations

import pytest
import torch

from genrec.errors import ConfigError
from genrec.generation import sample


def _draw(catalog, seed, **kw):
    gen = torch.Generator().manual_seed(seed)
    return sample(catalog.model, catalog.prompts, 16, catalog.trie, generator=gen, **kw)


def test_every_sample_is_a_catalog_item(catalog):
    out = _draw(catalog, 0)
    by_tokens = {tuple(s): i for i, s in enumerate(catalog.seqs)}
    assert out.items.shape == (len(catalog.prompts), 16)
    for items, seqs in zip(out.items.tolist(), out.seqs.tolist()):
        for item, seq in zip(items, seqs):
            toks = [t for t in seq if t >= 0]
            assert toks[-1] == catalog.tok.eos_token_id and by_tokens[tuple(toks[:-1])] == item
    assert len(set(out.items.flatten().tolist())) > 8  # a distribution, not one item repeated


def test_items_that_extend_another_item_are_drawn_too(catalog):
    from genrec.generation import ItemTrie

    seqs = [catalog.seqs[0], catalog.seqs[-3], catalog.seqs[1], catalog.seqs[-2]]  # 4 tokens, and 5 extending them
    trie = ItemTrie.from_sequences(seqs, catalog.tok.eos_token_id, len(catalog.tok))
    out = sample(catalog.model, catalog.prompts, 32, trie, temperature=2.0, generator=torch.Generator().manual_seed(0))
    assert set(out.items.flatten().tolist()) == {0, 1, 2, 3}
    for item, seq in zip(out.items.flatten().tolist(), out.seqs.flatten(0, 1).tolist()):
        assert [t for t in seq if t >= 0] == seqs[item] + [catalog.tok.eos_token_id]


def test_draws_are_seeded_and_cache_free_equal(catalog):
    a, b, c = _draw(catalog, 1), _draw(catalog, 1), _draw(catalog, 2)
    assert torch.equal(a.items, b.items) and not torch.equal(a.items, c.items)
    nocache = _draw(catalog, 1, use_cache=False)
    assert torch.equal(a.items, nocache.items)
    assert torch.allclose(a.logps, nocache.logps, atol=1e-4)


def test_log_probs_are_renormalised_over_the_trie(catalog):
    out = _draw(catalog, 3)
    prompt = catalog.prompts[0]
    for seq, lp in zip(out.seqs[0].tolist()[:4], out.logps[0].tolist()[:4]):
        toks = [t for t in seq if t >= 0]
        ids = torch.tensor([prompt + toks])
        with torch.no_grad():
            logp = torch.log_softmax(catalog.model(input_ids=ids).logits[0].float(), -1)
        want, node = 0.0, torch.zeros(1, dtype=torch.long)
        for j, t in enumerate(toks):
            allowed = catalog.trie.allowed_mask(node, logp.shape[-1])[0]
            row = logp[len(prompt) - 1 + j]
            want += float(row[t] - torch.logsumexp(row[allowed], 0))
            node = catalog.trie.advance(node, torch.tensor([t]))
        assert lp == pytest.approx(want, abs=1e-3)


def test_bad_arguments(catalog):
    with pytest.raises(ConfigError, match="temperature"):
        sample(catalog.model, catalog.prompts, 2, catalog.trie, temperature=0)
    with pytest.raises(ConfigError, match="num_samples"):
        sample(catalog.model, catalog.prompts, 0, catalog.trie)
