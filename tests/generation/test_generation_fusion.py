"""Fusing an item head with the code scores: candidate scores equal the beam's, the union of
beam and head candidates is ranked by the fused score, filters bind the head too."""

import pytest
import torch

from genrec.generation import ItemFilter, fused_rerank, search
from genrec.generation.exact import exact_scores
from genrec.generation.fusion import candidates, candidates_for_heads, fuse, rerank_found, unique_candidates


class FixedHead:
    """A head whose log-probs are a fixed ``[N]`` vector for every prompt (weight and extra as a real head)."""

    def __init__(self, logp: torch.Tensor, weight: float = 1.0, extra: int = 5) -> None:
        self.logp, self.weight, self.extra = logp, weight, extra

    def __call__(self, states: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        assert states.ndim == 2  # [B, H] final hidden states of the prompts
        return self.logp.expand(len(states), -1)


def _peaked(n: int, item: int) -> torch.Tensor:
    logp = torch.full((n,), -30.0)
    logp[item] = 0.0
    return torch.log_softmax(logp, 0)


def test_unique_candidates_drops_repeats_per_row():
    out = unique_candidates(torch.tensor([[3, 1, 3, -1], [2, 2, 2, 0]]))
    assert sorted(x for x in out[0].tolist() if x >= 0) == [1, 3]
    assert sorted(x for x in out[1].tolist() if x >= 0) == [0, 2]


def test_candidate_code_scores_are_the_teacher_forced_item_scores(catalog):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 6, 6, trie=catalog.trie)
    head = FixedHead(torch.log_softmax(torch.randn(n, generator=torch.Generator().manual_seed(0)), 0))
    cand, codes, head_lp = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 7)
    table = exact_scores(catalog.model, catalog.prompts, catalog.trie)  # [B, N]
    ok = cand >= 0
    assert ok.sum(1).min() >= 7  # the head's 7 best join the beam's 6 (some may coincide)
    torch.testing.assert_close(codes[ok], table.gather(1, cand.clamp(min=0))[ok], atol=1e-4, rtol=0)
    torch.testing.assert_close(head_lp[ok], head.logp[cand[ok]])
    for b in range(len(catalog.prompts)):  # every beam find is a candidate
        assert set(beam.items[b].tolist()) - {-1} <= set(cand[b].tolist())


def test_beam_scores_are_reused_and_equal_the_teacher_forced_ones(catalog):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 6, 6, trie=catalog.trie)
    head = FixedHead(torch.log_softmax(torch.randn(n, generator=torch.Generator().manual_seed(1)), 0))
    cand, codes, head_lp = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 7)
    again = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 7, beam_scores=beam.scores)
    assert torch.equal(again[0], cand) and torch.equal(again[2], head_lp)
    torch.testing.assert_close(again[1], codes, atol=1e-4, rtol=0)
    poisoned = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 7,
                          beam_scores=torch.full_like(beam.scores, -123.0))  # proof that the finds are not rescored
    in_beam = (cand[:, :, None] == beam.items[:, None, :]).any(-1) & (cand >= 0)
    assert bool((poisoned[1][in_beam] == -123.0).all()) and bool(in_beam.any())
    torch.testing.assert_close(poisoned[1][~in_beam & (cand >= 0)], codes[~in_beam & (cand >= 0)])


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0, 8.0])
def test_dropping_hopeless_proposals_keeps_the_fused_top_k(catalog, weight):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 6, 6, trie=catalog.trie)
    head = FixedHead(torch.log_softmax(2 * torch.randn(n, generator=torch.Generator().manual_seed(2)), 0))
    full = fuse(*candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 9), weight, 4)
    pruned = fused_rerank(catalog.model, catalog.prompts, catalog.trie, beam.items, head, weight, 4, 9,
                          beam_scores=beam.scores)
    assert torch.equal(pruned[1], full[1])
    torch.testing.assert_close(pruned[0], full[0], atol=1e-4, rtol=0)
    cand, codes, _ = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 9,
                                beam_scores=beam.scores, top=[(weight, 1)])
    assert bool(((codes == float("-inf")) & (cand >= 0)).any())  # some proposals were dropped unscored


def test_one_pass_keeps_the_fused_top_k_of_every_weight(catalog):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 6, 6, trie=catalog.trie)
    head = FixedHead(torch.log_softmax(2 * torch.randn(n, generator=torch.Generator().manual_seed(3)), 0))
    weights = (0.0, 1.0, 4.0)
    full = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 9)
    pruned = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 9, beam_scores=beam.scores,
                        top=[(w, 4) for w in weights])
    for w in weights:
        assert torch.equal(fuse(*pruned, w, 4)[1], fuse(*full, w, 4)[1])


def test_several_heads_in_one_pass_rank_as_each_head_alone(catalog):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 6, 6, trie=catalog.trie)
    heads = [FixedHead(torch.log_softmax(2 * torch.randn(n, generator=torch.Generator().manual_seed(s)), 0), extra=4)
             for s in (4, 5, 6)]
    weights = (0.0, 1.0, 4.0)
    cand, codes, head_lp = candidates_for_heads(catalog.model, catalog.prompts, catalog.trie, beam.items, heads, 4,
                                                beam_scores=beam.scores, top=[(w, 3) for w in weights])
    assert codes.shape == head_lp.shape == (3, *cand.shape)
    for e, head in enumerate(heads):
        alone = candidates(catalog.model, catalog.prompts, catalog.trie, beam.items, head, 4)
        own = codes[e] > float("-inf")
        # head e scores no more than its own candidates: the beam's finds and its 4 best
        assert int(own.sum()) <= int((alone[0] >= 0).sum())
        for w in weights:
            assert torch.equal(fuse(cand, codes[e], head_lp[e], w, 3)[1], fuse(*alone, w, 3)[1])


def test_weight_zero_keeps_the_beam_order_and_a_heavy_head_decides(catalog):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 5, 5, trie=catalog.trie)
    scores, items = fused_rerank(catalog.model, catalog.prompts, catalog.trie, beam.items,
                                 FixedHead(_peaked(n, 0)), 0.0, 5, 0)
    assert torch.equal(items, beam.items)
    torch.testing.assert_close(scores, beam.scores, atol=1e-4, rtol=0)
    target = n - 1  # an item the beam did not find: the head proposes it, its weight ranks it first
    _, items = fused_rerank(catalog.model, catalog.prompts, catalog.trie, beam.items,
                            FixedHead(_peaked(n, target)), 10.0, 5, 3)
    assert items[:, 0].tolist() == [target] * len(catalog.prompts)


def test_fuse_ranks_by_code_plus_weighted_head():
    cand = torch.tensor([[4, 7, -1]])
    codes = torch.tensor([[-1.0, -2.0, float("-inf")]])
    head = torch.tensor([[-5.0, -1.0, float("-inf")]])
    assert fuse(cand, codes, head, 0.1, 3)[1].tolist() == [[4, 7, -1]]  # -1.5 vs -2.1
    assert fuse(cand, codes, head, 1.0, 2)[1].tolist() == [[7, 4]]  # -3 vs -6


def test_filters_bind_the_head_proposals(catalog):
    n = len(catalog.seqs)
    beam = search(catalog.model, catalog.prompts, 4, 4, trie=catalog.trie)
    found = [[(int(i), float(s)) for i, s in zip(ib, sb)] for ib, sb in zip(beam.items.tolist(), beam.scores.tolist())]
    head = FixedHead(_peaked(n, n - 1), weight=10.0, extra=3)
    ranked = rerank_found(catalog.model, catalog.prompts, catalog.trie, found, head, 4,
                          ItemFilter(exclude=[n - 1]))
    assert all(n - 1 not in [i for i, _ in row] for row in ranked)
    ranked = rerank_found(catalog.model, catalog.prompts, catalog.trie, found, head, 4)
    assert all(row[0][0] == n - 1 for row in ranked)
