"""The tensor trie against a plain-Python prefix table, node masks against brute force."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from gen_helpers import hf_top

from genrec.errors import DataError
from genrec.generation import ItemTrie
from genrec.generation.hf_reference import PrefixTable, TrieLogitsProcessor, prefix_allowed_tokens_fn

EOS, V = 1, 60


def random_catalog(n: int, seed: int) -> list[list[int]]:
    """Distinct items of 2-5 tokens over a small alphabet (so prefixes are shared a lot)."""
    rng = random.Random(seed)
    out: dict[tuple[int, ...], None] = {}
    while len(out) < n:
        out[tuple(rng.randrange(2, 12) for _ in range(rng.choice([2, 3, 4, 4, 4, 5])))] = None
    return [list(s) for s in out]


def test_trie_matches_prefix_table():
    seqs = random_catalog(300, seed=1)
    trie, table = ItemTrie.from_sequences(seqs, EOS, V), PrefixTable(seqs, EOS)
    prefixes = list(table.table)
    assert trie.num_nodes == len(prefixes) + len(seqs)  # inner nodes + one leaf per item
    width = max(len(p) for p in prefixes)
    grid = torch.full((len(prefixes), width), 0, dtype=torch.long)
    for r, p in enumerate(prefixes):
        grid[r, :len(p)] = torch.tensor(p, dtype=torch.long)
    nodes = torch.stack([trie.walk(grid[r:r + 1, :len(p)])[0] for r, p in enumerate(prefixes)])
    assert (nodes >= 0).all() and len(set(nodes.tolist())) == len(prefixes)
    want = torch.zeros(len(prefixes), V, dtype=torch.bool)
    for r, p in enumerate(prefixes):
        want[r, table.table[p]] = True
    assert torch.equal(trie.allowed_mask(nodes), want)
    logits = torch.randn(len(prefixes), V)
    masked = trie.mask_logits(logits, nodes)
    assert torch.equal(masked.isfinite(), want) and torch.equal(masked[want], logits[want])
    # Advancing along a disallowed token leaves the trie; a complete item is a leaf naming it.
    off = trie.advance(nodes, torch.full_like(nodes, 13))
    assert (off == -1).all()
    for i in random.Random(0).sample(range(len(seqs)), 40):
        leaf = trie.walk(torch.tensor([seqs[i] + [EOS]]))
        assert trie.items_at(leaf).tolist() == [i]
        assert trie.items_at(trie.walk(torch.tensor([seqs[i]]))).tolist() == [-1]


def test_node_mask_is_any_allowed_leaf_below():
    seqs = random_catalog(200, seed=2)
    trie = ItemTrie.from_sequences(seqs, EOS, V)
    allowed = torch.rand(len(seqs), generator=torch.Generator().manual_seed(0)) < 0.1
    got = trie.node_mask(allowed)
    want = torch.zeros(trie.num_nodes, dtype=torch.bool)
    for i in np.nonzero(allowed.numpy())[0]:
        path = seqs[i] + [EOS]
        for j in range(len(path) + 1):
            want[trie.walk(torch.tensor([path[:j]], dtype=torch.long))] = True
    assert torch.equal(got, want)
    assert not trie.node_mask(torch.zeros(len(seqs), dtype=torch.bool)).any()
    # The exclusion fast path agrees, including when whole subtrees are excluded.
    first = seqs[0][0]
    for excluded in (torch.nonzero(~allowed).squeeze(1), torch.tensor([0, 5, 5, 17]),
                     torch.tensor([i for i, s in enumerate(seqs) if s[0] == first])):
        keep = torch.ones(len(seqs), dtype=torch.bool)
        keep[excluded] = False
        assert torch.equal(trie.node_mask_excluding(excluded), trie.node_mask(keep))


@pytest.mark.parametrize("seqs, match", [
    ([[3, 4], [3, 4]], "same index tokens"),
    ([[3, EOS, 4]], "EOS id"),
    ([[3, V]], "outside the vocabulary"),
    ([[3], []], "no tokens"),
    ([], "empty catalog"),
])
def test_bad_catalogs_are_rejected(seqs, match):
    with pytest.raises(DataError, match=match):
        ItemTrie.from_sequences(seqs, EOS, V)


def test_large_catalog_has_no_dense_table():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 256, size=(60_000, 4)), axis=0)
    trie = ItemTrie.from_sequences((codes + 2).tolist(), EOS, 2 + 256)
    assert trie.num_items == len(codes) and trie.depth == 5
    # O(nodes) memory: a few ints per node, far below nodes x vocab.
    assert trie.nbytes() < 40 * trie.num_nodes
    leaf = trie.walk(torch.tensor(np.c_[codes[:50] + 2, np.full(50, EOS)]))
    assert trie.items_at(leaf).tolist() == list(range(50))


def test_logits_processor_equals_prefix_allowed_tokens_fn(catalog):
    prompt = catalog.prompts[1]
    by_fn = hf_top(catalog, prompt, 8, fn=prefix_allowed_tokens_fn(catalog.table, len(prompt)))
    by_proc = hf_top(catalog, prompt, 8, processor=TrieLogitsProcessor(catalog.trie, len(prompt), num_beams=8))
    assert [i for i, _ in by_fn] == [i for i, _ in by_proc] and len(by_fn) == 8
    assert np.allclose([s for _, s in by_fn], [s for _, s in by_proc], atol=1e-5)
