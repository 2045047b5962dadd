"""Ranking with an item head beside the codes: ``log P_codes(item) + w · log P_head(item)``.

A generative recommender scores an item by its index tokens, which generalise (an item is known
by the company it keeps in each code) but are shared by many items. An item head
(:mod:`genrec.encoders.item_head`) scores every item from the prompt's final hidden state through
one row per item, which memorises what the codes cannot: "this item is followed by that one".
:func:`fused_rerank` ranks the union of the beam's items and the head's top items by the sum of
both log-probabilities (a product of experts), so the beam still proposes items the head ranks
low and the head proposes items the beam missed. Each candidate's code score is its teacher-forced
``log P(item tokens, EOS | prompt)``, the quantity the beam search reports.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from genrec.generation.beam import NEG_INF, _Stepper
from genrec.generation.exact import trie_paths
from genrec.generation.filters import AttributeTable, FilterLike, node_masks
from genrec.generation.trie import ItemTrie


def recent_items(histories: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """``[B, k]`` each history's last ``k`` items, most recent first (``-1`` where shorter)."""
    out = torch.full((len(histories), k), -1, dtype=torch.long)
    for b, h in enumerate(histories):
        tail = [int(i) for i in h][-k:][::-1] if k else []
        out[b, :len(tail)] = torch.tensor(tail, dtype=torch.long)
    return out


def unique_candidates(cand: torch.Tensor) -> torch.Tensor:
    """``cand [B, C]`` item indices (``-1``: none) with each row's repeats replaced by ``-1``."""
    srt, _ = cand.sort(dim=1)
    dup = torch.zeros_like(srt, dtype=torch.bool)
    dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
    return torch.where(dup, torch.full_like(srt, -1), srt)


def code_scores(stepper: _Stepper, first: torch.Tensor, trie: ItemTrie, cand: torch.Tensor,
                need: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, C]`` teacher-forced ``log P(item tokens, EOS | prompt)`` of the candidates ``cand [B, C]``
    (``-inf`` where ``-1``), given a prefilled ``stepper`` and its first-token log-probs ``first [B, V]``.
    Candidates of one prompt that share a token prefix share its model row (one step per distinct
    prefix and level, not per candidate). ``need [B, C]``: a candidate whose partial score falls
    below it is dropped (``-inf``) without its later steps — partial scores only fall."""
    seqs = trie_paths(trie).item_seqs  # [N, D], EOS included, -1 padded
    b, c = torch.nonzero(cand >= 0, as_tuple=True)
    out = torch.full(cand.shape, NEG_INF, device=cand.device)
    if not len(b):
        return out
    tok = seqs[cand[b, c]]  # [R, D]
    score = first[b, tok[:, 0]]
    floor = None if need is None else need[b, c]
    alive = torch.ones_like(b, dtype=torch.bool) if floor is None else score >= floor
    row = b  # each candidate's stepper row: its prompt before the first step
    for level in range(1, tok.shape[1]):
        live = torch.nonzero((tok[:, level] >= 0) & alive, as_tuple=True)[0]
        if not len(live):
            break
        prefix, inv = torch.unique(torch.cat([b[live, None], tok[live, :level]], dim=1), dim=0, return_inverse=True)
        parent = torch.zeros(len(prefix), dtype=torch.long, device=cand.device).scatter_(0, inv, row[live])
        logp = stepper.step(parent, prefix[:, -1])  # [U, V]: one row per distinct (prompt, prefix)
        score[live] += logp[inv, tok[live, level]]
        row = torch.zeros_like(b).index_copy_(0, live, inv)
        if floor is not None:
            alive &= score >= floor
    out[b, c] = torch.where(alive, score, NEG_INF)
    return out


def candidates(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, beam_items: torch.Tensor,
               head: Callable[[torch.Tensor], torch.Tensor], extra: int, *, allowed: torch.Tensor | None = None,
               prompt_embeds: Sequence[torch.Tensor] | None = None, beam_scores: torch.Tensor | None = None,
               top: Sequence[tuple[float, int]] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(items [B, C], code scores [B, C], head log-probs [B, C])`` of the union of the beam's
    items ``beam_items [B, K]`` (``-1`` padded) and the head's ``extra`` best items per prompt.

    ``head(states [B, H]) -> [B, N]`` item log-probs from the prompts' final hidden states;
    ``allowed [B, N]`` bool: the items a request's filter keeps (the head proposes only those).
    ``beam_scores [B, K]``: the search's ``log P(item, EOS | prompt)`` of the beam's items, which
    then are not scored again (only the head's other proposals are teacher-forced).
    ``top = [(weight, k), ...]`` with ``beam_scores``: only the fused top ``k`` at those weights
    is wanted, so a proposal whose partial score can no longer beat the ``k``-th best beam find at
    any of them is dropped (``-inf``; each top ``k`` is unchanged). Missing candidates are ``-1``
    with score ``-inf``.
    """
    cand, codes, at = candidates_for_heads(model, prompt_ids, trie, beam_items, [head], extra, allowed=allowed,
                                           prompt_embeds=prompt_embeds, beam_scores=beam_scores, top=top)
    return cand, codes[0], at[0]


def candidates_for_heads(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, beam_items: torch.Tensor,
                         heads: Sequence[Callable[[torch.Tensor], torch.Tensor]], extra: int, *,
                         allowed: torch.Tensor | None = None, prompt_embeds: Sequence[torch.Tensor] | None = None,
                         beam_scores: torch.Tensor | None = None, top: Sequence[tuple[float, int]] = ()
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`candidates` for several heads over one prefill: ``(items [B, C], code scores [E, B, C],
    head log-probs [E, B, C])`` for ``E = len(heads)``. ``items`` is the union of the beam's items and
    every head's ``extra`` best; head ``e``'s code scores are ``-inf`` outside its own candidates (the
    beam's and its own proposals), so :func:`fuse` of ``(items, codes[e], head_lp[e])`` ranks exactly
    what :func:`candidates` with head ``e`` alone gives. ``top`` prunes as there, over every head.
    """
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            stepper = _Stepper(model, prompt_ids, True, prompt_embeds)
            first, states = stepper.prefill(with_states=True)
            lps = [h(states).float() for h in heads]  # E x [B, N]
            beam_items = beam_items.to(first.device)
            tops = []
            for lp in lps:
                proposal = lp if allowed is None else lp.masked_fill(~allowed.to(lp.device), NEG_INF)
                top_s, top_i = proposal.topk(min(extra, proposal.shape[1]), dim=1)
                tops.append(torch.where(top_s > NEG_INF, top_i, torch.full_like(top_i, -1)))
            cand = unique_candidates(torch.cat([beam_items, *tops], dim=1))
            at = torch.stack([torch.where(cand >= 0, lp.gather(1, cand.clamp(min=0)), NEG_INF) for lp in lps])
            in_beam = (cand[:, :, None] == beam_items[:, None, :]).any(-1) & (cand >= 0)  # [B, C]
            own = torch.stack([in_beam | ((cand[:, :, None] == t[:, None, :]) & (cand[:, :, None] >= 0)).any(-1)
                               for t in tops])  # [E, B, C]: head e's own candidates
            if beam_scores is None:
                codes = code_scores(stepper, first, trie.to(first.device), cand)
            else:  # [B, C, K] match of each candidate against the beam's finds
                match = (cand[:, :, None] == beam_items[:, None, :]) & (cand[:, :, None] >= 0)
                found = match.any(-1)
                known = torch.where(match, beam_scores.to(first.device)[:, None, :].float(), NEG_INF).amax(-1)
                need = None
                # the k-th best fused find is the bar to clear, the lowest bar over heads and weights
                # decides; fewer finds than k leave nothing to prune
                if all(k <= found.shape[1] for _, k in top):
                    for e, (w, k) in itertools.product(range(len(heads)), top):
                        bar = torch.where(found, known + w * at[e], NEG_INF).topk(k, dim=1).values[:, -1:]
                        low = bar - w * at[e] - 1e-4  # the margin keeps float rounding from dropping a tie
                        low = torch.where(own[e], low, torch.full_like(low, float("inf")))  # not head e's to score
                        need = low if need is None else torch.minimum(need, low)
                rest = code_scores(stepper, first, trie.to(first.device), cand.masked_fill(found, -1), need)
                codes = torch.where(found, known, rest)
    finally:
        model.train(was_training)
    return cand, torch.where(own, codes.unsqueeze(0), torch.full_like(at, NEG_INF)), at


def fuse(cand: torch.Tensor, codes: torch.Tensor, head_lp: torch.Tensor, weight: float, k: int
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` ``(scores [B, k], items [B, k])`` of the candidates of :func:`candidates` by
    ``code score + weight · head log-prob`` (``-inf`` / ``-1`` where fewer exist)."""
    fused = torch.where(cand >= 0, codes + weight * head_lp, torch.full_like(codes, NEG_INF))
    scores, order = fused.topk(min(k, fused.shape[1]), dim=1)
    return scores, torch.where(scores > NEG_INF, cand.gather(1, order), torch.full_like(order, -1))


def fused_rerank(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, beam_items: torch.Tensor,
                 head: Callable[[torch.Tensor], torch.Tensor], weight: float, k: int, extra: int, *,
                 allowed: torch.Tensor | None = None, prompt_embeds: Sequence[torch.Tensor] | None = None,
                 beam_scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`candidates` then :func:`fuse`: the top-``k`` ``(scores [B, k], items [B, k])``."""
    cand, codes, head_lp = candidates(model, prompt_ids, trie, beam_items, head, extra, allowed=allowed,
                                      prompt_embeds=prompt_embeds, beam_scores=beam_scores, top=[(weight, k)])
    return fuse(cand, codes, head_lp, weight, k)


def rerank_found(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, found: Sequence[Sequence[tuple]],
                 head: Any, k: int, filters: FilterLike | Sequence[FilterLike] = None,
                 attributes: AttributeTable | None = None, prompt_embeds: Sequence[torch.Tensor] | None = None,
                 histories: Sequence[Sequence[int]] | None = None) -> list[list[tuple[int, float]]]:
    """:func:`fused_rerank` of a search's results ``found[b] = [(item, score), ...]`` with an
    :class:`~genrec.encoders.item_head.ItemHead` (its ``weight`` and ``extra``), under the same
    per-request ``filters``; ``histories``: each prompt's history items, most recent last (for
    the head's transition term; ``None`` leaves it out). Returns per prompt ``[(item, fused score), ...]``, best first."""
    width = max([1, *map(len, found)])
    beam = torch.full((len(found), width), -1, dtype=torch.long)
    beam_scores = torch.full((len(found), width), NEG_INF)
    for b, row in enumerate(found):
        beam[b, :len(row)] = torch.tensor([int(i) for i, _ in row], dtype=torch.long)
        beam_scores[b, :len(row)] = torch.tensor([float(s) for _, s in row])
    masks, rows = node_masks(trie, filters, len(prompt_ids), attributes)
    allowed = None if masks is None else masks[rows][:, trie.item_leaves()]
    recent = None if histories is None else recent_items(histories, head.orders)
    scores, items = fused_rerank(model, prompt_ids, trie, beam, lambda states: head(states, recent), head.weight, k,
                                 head.extra, allowed=allowed, prompt_embeds=prompt_embeds, beam_scores=beam_scores)
    return [[(int(i), float(s)) for i, s in zip(ib, sb) if i >= 0] for ib, sb in zip(items.tolist(), scores.tolist())]
