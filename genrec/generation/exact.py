"""Exact scoring: ``log P(item tokens, EOS | prompt)`` for **every** catalog item.

Beam search keeps ``num_beams`` prefixes per level and can miss an item whose first token
scores low. Exact scoring walks the trie level by level instead: the prompt is prefilled once,
then the paths of a level's internal nodes are fed after it, many nodes in one sequence under
a tree-attention mask (each path sees the prompt and itself), and one softmax per node gives
the log-probabilities of all its children.
A node's score is its parent's plus its token's; an item's score is its EOS leaf's. The cost
is one forward row per internal node of the trie — about the catalog size — per prompt, so it
suits small models and catalogs up to ~10^5 items; ranking is then exact over the whole
catalog (no beam misses), which is what full-ranking metrics assume.

The scores are the ones beam search reports for the items it finds (same log-softmax of the
raw logits), so the two can be compared item by item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from genrec.errors import ConfigError
from genrec.generation.beam import CACHE_KWARG, NEG_INF, SearchOutput, _device, _Stepper
from genrec.generation.filters import AttributeTable, FilterLike, node_masks
from genrec.generation.trie import ItemTrie


class TriePaths:
    """Per-level node ids and path tokens of a trie (computed once per trie and device).

    ``levels[d]``: ``(nodes [n_d], paths [n_d, d])`` — the internal nodes at depth ``d`` (those
    with children) and the tokens from the root to each. ``item_seqs [N, depth]``: each item's
    tokens, EOS included, ``-1`` padded.
    """

    def __init__(self, trie: ItemTrie) -> None:
        dev = trie.device
        ptr = trie.child_ptr
        deg = ptr[1:] - ptr[:-1]
        lo, hi = 0, 1  # nodes of depth d are the id range [lo, hi) (breadth-first numbering)
        paths = torch.zeros((1, 0), dtype=torch.long, device=dev)
        self.levels: list[tuple[torch.Tensor, torch.Tensor]] = []
        node_path: dict[int, torch.Tensor] = {}
        for _ in range(trie.depth):
            ids = torch.arange(lo, hi, device=dev)
            inner = deg[lo:hi] > 0
            self.levels.append((ids[inner], paths[inner]))
            node_path[lo] = paths
            e_lo, e_hi = int(ptr[lo]), int(ptr[hi])
            if e_hi == e_lo:
                break
            parent = torch.repeat_interleave(torch.arange(hi - lo, device=dev), deg[lo:hi])
            paths = torch.cat([paths[parent], trie.edge_tok[e_lo:e_hi].long()[:, None]], dim=1)
            lo, hi = e_lo + 1, e_hi + 1
        node_path[lo] = paths
        leaves = trie.item_leaves()
        self.item_seqs = torch.full((trie.num_items, trie.depth), -1, dtype=torch.long, device=dev)
        for start, p in node_path.items():
            if p.shape[1] == 0:
                continue
            sel = (leaves >= start) & (leaves < start + p.shape[0])
            self.item_seqs[sel, :p.shape[1]] = p[leaves[sel] - start]


def trie_paths(trie: ItemTrie) -> TriePaths:
    """The :class:`TriePaths` of ``trie`` (computed once and kept on the trie)."""
    paths = trie.derived.get("exact_paths")
    if paths is None:
        paths = trie.derived["exact_paths"] = TriePaths(trie)
    return paths


def exact_scores(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, *, chunk: int = 512,
                 prompt_embeds: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``[B, N]`` float32 ``log P(item tokens, EOS | prompt)`` of every item for every prompt.

    ``chunk``: path tokens per forward call (each call's attention mask is ``[B, chunk, P +
    chunk]``). ``prompt_embeds`` as in :func:`genrec.generation.beam.search`.
    """
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    with torch.inference_mode():
        return _exact_scores(model, prompt_ids, trie, chunk, prompt_embeds)


def _exact_scores(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, chunk: int,
                  prompt_embeds: Sequence[torch.Tensor] | None) -> torch.Tensor:
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    if "flash" in impl:
        raise ConfigError(f"exact scoring needs an attention implementation that takes a 4-D mask (sdpa or eager); "
                          f"this model uses {impl!r}: load it with attn_implementation='sdpa'")
    dev = _device(model)
    trie = trie.to(dev)
    paths = trie_paths(trie)
    stepper = _Stepper(model, prompt_ids, True, prompt_embeds)
    batch = len(prompt_ids)
    node_lp = torch.full((batch, trie.num_nodes), NEG_INF, device=dev)
    node_lp[:, 0] = 0.0
    logp = stepper.prefill()
    trie.check_vocab(logp.shape[-1])
    _expand(trie, node_lp, torch.zeros(1, dtype=torch.long, device=dev), logp[:, None, :])
    for nodes, path in paths.levels[1:]:
        per_call = max(1, chunk // path.shape[1])
        for s in range(0, nodes.numel(), per_call):
            n, p = nodes[s:s + per_call], path[s:s + per_call]
            lp = _children_logp(model, stepper, p)  # [B, n, V]
            _expand(trie, node_lp, n, lp)
    return node_lp[:, trie.item_leaves()]


def _children_logp(model: Any, stepper: _Stepper, path: torch.Tensor) -> torch.Tensor:
    """``[B, n, V]`` next-token log-probs after each prompt followed by each ``path [n, d]``.

    The ``n`` paths go in as one sequence of ``n·d`` tokens after the cached prompt, under a
    4-D mask where every token sees the prompt and the earlier tokens of its own path (tree
    attention): the prompt's keys are shared by all rows instead of copied per row.
    """
    batch, (n, d) = stepper.ids.shape[0], path.shape
    dev, width = path.device, stepper.ids.shape[1]
    dtype = next(model.parameters()).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    node = torch.arange(n, device=dev).repeat_interleave(d)
    step = torch.arange(d, device=dev).repeat(n)
    own = (node[:, None] == node[None, :]) & (step[None, :] <= step[:, None])  # [n·d, n·d]
    seen = torch.cat([stepper.attn.bool()[:, None, :].expand(batch, n * d, width),
                      own[None].expand(batch, -1, -1)], dim=2)  # [B, n·d, P + n·d]
    mask = torch.zeros(seen.shape, dtype=dtype, device=dev).masked_fill_(~seen, torch.finfo(dtype).min)
    pos = stepper.lengths[:, None] + step[None, :]
    last = torch.arange(n, device=dev) * d + d - 1
    try:
        out = model(input_ids=path.reshape(1, -1).expand(batch, -1), attention_mask=mask[:, None], position_ids=pos,
                    use_cache=True, logits_to_keep=last, **{CACHE_KWARG: stepper.cache})
    finally:
        extra = stepper.cache.get_seq_length() - width
        if extra > 0:
            stepper.cache.crop(-extra)  # drop the path tokens: the cache holds the prompts again
    return torch.log_softmax(out.logits.float(), dim=-1)


def _expand(trie: ItemTrie, node_lp: torch.Tensor, nodes: torch.Tensor, logp: torch.Tensor) -> None:
    """Write children scores: ``node_lp[:, child] = node_lp[:, node] + logp[:, node, token]``."""
    tok, child, valid = trie.children(nodes)  # [n, D]
    lp = logp.gather(2, tok[None].expand(logp.shape[0], -1, -1))  # [B, n, D]
    score = node_lp[:, nodes][:, :, None] + lp
    node_lp[:, child[valid]] = score[:, valid]


def exact_search(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, k: int, *,
                 filters: FilterLike | Sequence[FilterLike] = None, attributes: AttributeTable | None = None,
                 chunk: int = 512, prompt_embeds: Sequence[torch.Tensor] | None = None) -> SearchOutput:
    """The ``k`` best allowed items per prompt by :func:`exact_scores` (a drop-in for
    :func:`genrec.generation.beam.search` over a trie; ``seqs`` are the items' tokens)."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not prompt_ids:
        empty = torch.zeros((0, k), dtype=torch.long)
        return SearchOutput(empty.float(), empty, torch.zeros((0, k, 0), dtype=torch.long))
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            trie = trie.to(_device(model))
            scores = exact_scores(model, prompt_ids, trie, chunk=chunk, prompt_embeds=prompt_embeds)
            masks, rows = node_masks(trie, filters, len(prompt_ids), attributes)
            if masks is not None:
                scores = scores.masked_fill(~masks[rows][:, trie.item_leaves()], NEG_INF)
            top_s, top_i = scores.topk(min(k, trie.num_items), dim=1)
            if top_s.shape[1] < k:
                pad = k - top_s.shape[1]
                top_s = torch.cat([top_s, top_s.new_full((len(prompt_ids), pad), NEG_INF)], dim=1)
                top_i = torch.cat([top_i, top_i.new_full((len(prompt_ids), pad), -1)], dim=1)
            top_i = torch.where(top_s > NEG_INF, top_i, -1)
            seqs = trie_paths(trie).item_seqs[top_i.clamp(min=0)]
            seqs = torch.where(top_i[..., None] >= 0, seqs, -1)
    finally:
        model.train(was_training)
    return SearchOutput(top_s, top_i, seqs)
