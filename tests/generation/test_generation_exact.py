"""Exact scoring over the trie: every item's log-probability, and top-k agreeing with beam search."""

import pytest
import torch
from gen_helpers import exact_log_prob

from genrec.errors import ConfigError
from genrec.generation import ItemFilter, search
from genrec.generation.exact import exact_scores, exact_search, trie_paths


def test_every_item_score_equals_a_teacher_forced_forward(catalog):
    scores = exact_scores(catalog.model, catalog.prompts[:2], catalog.trie, chunk=7)  # odd chunk: many calls
    assert scores.shape == (2, len(catalog.seqs))
    eos = catalog.tok.eos_token_id
    for b in range(2):
        for i in (0, 1, 5, len(catalog.seqs) - 1, len(catalog.seqs) - 3):  # incl. 5-token items
            ref = exact_log_prob(catalog.model, catalog.prompts[b], catalog.seqs[i] + [eos])
            assert scores[b, i].item() == pytest.approx(ref, abs=1e-4)
    # A distribution over the catalog: the items' probabilities sum to at most 1.
    assert torch.logsumexp(scores, 1).max().item() <= 1e-5


def test_top_k_contains_beam_results_and_never_ranks_lower(catalog):
    exact = exact_search(catalog.model, catalog.prompts, catalog.trie, 10)
    beam = search(catalog.model, catalog.prompts, 10, 10, trie=catalog.trie)
    assert torch.all(exact.scores[:, 0] >= beam.scores[:, 0] - 1e-5)
    assert torch.all(exact.scores >= beam.scores - 1e-5)  # rank by rank, exact finds at least as likely items
    # Every item beam search found carries the same score in the exact table.
    table = exact_scores(catalog.model, catalog.prompts, catalog.trie)
    found = beam.items >= 0
    assert torch.allclose(table.gather(1, beam.items.clamp(min=0))[found], beam.scores[found], atol=1e-4)
    # seqs are the items' tokens, EOS included.
    eos = catalog.tok.eos_token_id
    for b in range(len(catalog.prompts)):
        for j in range(10):
            toks = [t for t in exact.seqs[b, j].tolist() if t >= 0]
            assert toks == catalog.seqs[exact.items[b, j]] + [eos]


def test_filters_batches_and_k_beyond_catalog(catalog):
    allow = [3, 7, 11]
    out = exact_search(catalog.model, catalog.prompts[:2], catalog.trie, 5, filters=ItemFilter(allow=allow))
    assert set(out.items[:, :3].flatten().tolist()) <= set(allow)
    assert out.items[:, 3:].eq(-1).all() and torch.isinf(out.scores[:, 3:]).all()
    one = exact_search(catalog.model, catalog.prompts[1:2], catalog.trie, 4)
    both = exact_search(catalog.model, catalog.prompts[:2], catalog.trie, 4)
    assert one.items[0].tolist() == both.items[1].tolist()
    assert torch.allclose(one.scores[0], both.scores[1], atol=1e-4)
    n = len(catalog.seqs)
    big = exact_search(catalog.model, catalog.prompts[:1], catalog.trie, n + 3)
    assert sorted(big.items[0, :n].tolist()) == list(range(n)) and big.items[0, n:].eq(-1).all()


def test_paths_and_bad_arguments(catalog):
    paths = trie_paths(catalog.trie)
    assert paths.levels[0][0].tolist() == [0] and paths.levels[0][1].shape == (1, 0)
    for nodes, path in paths.levels:
        assert torch.equal(catalog.trie.walk(path), nodes)
    with pytest.raises(ConfigError, match="chunk"):
        exact_scores(catalog.model, catalog.prompts, catalog.trie, chunk=0)
    with pytest.raises(ConfigError, match="k must be"):
        exact_search(catalog.model, catalog.prompts, catalog.trie, 0)
    assert exact_search(catalog.model, [], catalog.trie, 3).items.shape == (0, 3)


def test_a_trie_beyond_the_model_vocabulary_is_refused_by_every_decoder(catalog):
    from genrec.generation import ItemTrie, sample

    vocab = catalog.model.get_input_embeddings().weight.shape[0]
    wide = ItemTrie.from_sequences(catalog.seqs, catalog.tok.eos_token_id, vocab + 5)
    for decode in (lambda: search(catalog.model, catalog.prompts[:1], 4, 2, trie=wide),
                   lambda: exact_search(catalog.model, catalog.prompts[:1], wide, 2),
                   lambda: sample(catalog.model, catalog.prompts[:1], 2, wide)):
        with pytest.raises(ConfigError, match="resize the model's embeddings"):
            decode()

