"""Per-request filters inside the search: exclude, allow-list, attributes, per-prompt batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gen_helpers import hf_top

from genrec.data.dataset import Item
from genrec.errors import ConfigError
from genrec.generation import AttributeTable, ItemFilter, ItemTrie, item_mask, node_masks
from genrec.generation.beam import constrained_beam_search
from genrec.generation.hf_reference import TrieLogitsProcessor


def items(res):
    return [i for i, _ in res]


def sub_trie(catalog, keep):
    return ItemTrie.from_sequences([catalog.seqs[i] for i in keep], catalog.tok.eos_token_id, len(catalog.tok))


def test_exclude_equals_search_over_the_rebuilt_catalog(catalog):
    prompt = catalog.prompts[1]
    plain = constrained_beam_search(catalog.model, [prompt], catalog.trie, num_beams=12, k=12)[0]
    seen = items(plain)[:5] + [7, 9]  # the best items plus a few others
    got = constrained_beam_search(catalog.model, [prompt], catalog.trie, num_beams=12, k=12,
                                  filters=ItemFilter(exclude=seen))[0]
    assert len(got) == 12 and not set(items(got)) & set(seen)
    keep = [i for i in range(len(catalog.seqs)) if i not in seen]
    ref = constrained_beam_search(catalog.model, [prompt], sub_trie(catalog, keep), num_beams=12, k=12)[0]
    assert items(got) == [keep[i] for i in items(ref)]
    assert np.allclose([s for _, s in got], [s for _, s in ref], atol=1e-4)


def test_allow_list_smaller_than_k_returns_exactly_it(catalog):
    allow = [3, 50, 121, 77]  # 121 is a 5-token item
    res = constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=10, k=10,
                                  filters=ItemFilter(allow=allow, exclude=[77]))
    for got in res:
        assert sorted(items(got)) == [3, 50, 121]
    empty = constrained_beam_search(catalog.model, catalog.prompts[:1], catalog.trie, num_beams=4, k=4,
                                    filters=ItemFilter(allow=[5], exclude=[5]))
    assert empty == [[]]


def test_attribute_filter_and_per_prompt_filters(catalog):
    n = len(catalog.seqs)
    rng = np.random.default_rng(0)
    cats = rng.choice(["Toys", "Games", "Books"], size=n)
    price = rng.uniform(1, 50, size=n)
    attrs = AttributeTable.from_items([Item(item_id=str(i), brand="Acme" if i % 3 else "Zed",
                                            categories=[str(c), "All"], extra={"price": float(p)})
                                       for i, (c, p) in enumerate(zip(cats, price))])
    where = {"categories": ["Toys", "Games"], "brand": {"not_in": ["Zed"]}, "price": {"lt": 30}}
    want = np.flatnonzero((cats != "Books") & (np.arange(n) % 3 != 0) & (price < 30))
    assert torch.equal(item_mask(ItemFilter(where=where), n, attrs), torch.from_numpy(np.isin(np.arange(n), want)))
    filters = [ItemFilter(where=where), None, ItemFilter(exclude=[0, 1, 2]), ItemFilter(where={"categories": "Books"})]
    batch = constrained_beam_search(catalog.model, catalog.prompts, catalog.trie, num_beams=8, k=8,
                                    filters=filters, attributes=attrs)
    assert set(items(batch[0])) <= set(want.tolist()) and len(batch[0]) == 8
    assert all(cats[i] == "Books" for i in items(batch[3]))
    for prompt, flt, got in zip(catalog.prompts, filters, batch):
        alone = constrained_beam_search(catalog.model, [prompt], catalog.trie, num_beams=8, k=8, filters=flt,
                                        attributes=attrs)[0]
        assert items(got) == items(alone)


def test_filtered_processor_with_hf_generate_matches(catalog):
    prompt = catalog.prompts[0]
    flt = ItemFilter(exclude=list(range(0, 120, 2)))
    masks, _ = node_masks(catalog.trie, flt, 1)
    proc = TrieLogitsProcessor(catalog.trie, len(prompt), num_beams=8, node_masks=masks)
    hf = hf_top(catalog, prompt, 8, processor=proc)
    ours = constrained_beam_search(catalog.model, [prompt], catalog.trie, num_beams=8, k=8, filters=flt)[0]
    assert items(ours) == [i for i, _ in hf] and all(i % 2 or i >= 120 for i in items(ours))


@pytest.mark.parametrize("flt, match", [
    (ItemFilter(exclude=[10_000]), "outside the catalog"),
    (ItemFilter(where={"colour": "red"}), "unknown"),
    (ItemFilter(where={"price": {"approx": 3}}), "unknown operator"),
    (ItemFilter(where={"brand": {"lt": 3}}), "does not apply"),
    (torch.ones(3, dtype=torch.bool), "shape"),
])
def test_bad_filters_are_reported(catalog, flt, match):
    attrs = AttributeTable.from_records([{"brand": "A", "price": 1.0}] * len(catalog.seqs))
    with pytest.raises(ConfigError, match=match):
        constrained_beam_search(catalog.model, catalog.prompts[:1], catalog.trie, num_beams=2, k=2,
                                filters=flt, attributes=attrs)
