"""Constrained beam search over an :class:`ItemTrie`: prefill once, expand the KV cache, step.

Differences from HF ``generate(num_beams=B, prefix_allowed_tokens_fn=...)`` that make it fast,
with the same result:

- each prompt is prefilled once (a left-padded batch) and its KV cache is then expanded to
  the beams, where HF copies the prompt per beam and prefills ``B`` times as many rows;
- the candidates of a step are only the trie children of each beam (gather of ``[R, D]``
  log-probs, ``D`` = largest branching at that depth), not a top-k over ``beams × vocab``;
- the trie is a tensor table, not a Python callback per row.

Scoring is the sum of the token log-probs of the item's tokens and of EOS (log-softmax of
the raw logits, then masked, as HF does), i.e. ``log P(item, EOS | prompt)``. The selection
rule is HF's: keep the ``2·num_beams`` best candidates; those ending in EOS within the first
``num_beams`` ranks become finished hypotheses, the best ``num_beams`` others keep running.
With ``length_penalty=0.0`` (items of different lengths are then ranked by log-probability
alone) and ``early_stopping="never"``, HF returns the same top-K items with the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genrec.errors import ConfigError
from genrec.generation.filters import AttributeTable, FilterLike, node_masks
from genrec.generation.trie import ItemTrie

NEG_INF = float("-inf")
# Valid continuations the model scores -inf still rank above invalid ones.
_FLOOR = -1e30


def _cache_field() -> str:
    """Name of the KV-cache argument / output field: ``cache`` in recent transformers 5.x (where
    ``past_key_values`` is a deprecated alias), ``past_key_values`` before."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


CACHE_KWARG = _cache_field()


def _out_cache(out: Any) -> Any:
    return getattr(out, CACHE_KWARG)


def _device(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids [B, P], attention_mask [B, P], lengths [B])`` with prompts right-aligned."""
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ConfigError(f"prompt {lengths.index(0)} is empty; every prompt needs at least one token")
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[b, width - len(p):] = 1
    return ids.to(device), mask.to(device), torch.tensor(lengths, device=device)


class _Stepper:
    """Runs the model: prefill, then one token per beam row (with or without a KV cache)."""

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], use_cache: bool,
                 prompt_embeds: Sequence[torch.Tensor] | None = None) -> None:
        self.model, self.use_cache = model, use_cache
        self.device = _device(model)
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        self.ids, self.attn, self.lengths = _left_pad(prompts, pad if isinstance(pad, int) else 0, self.device)
        self.extra = None  # [B, P, H] additive prompt embeddings, left-padded like the prompts
        if prompt_embeds is not None:
            if len(prompt_embeds) != len(prompts) or any(e.shape[0] != len(p) for e, p in zip(prompt_embeds, prompts)):
                raise ConfigError("prompt_embeds must hold one [len(prompt), H] tensor per prompt")
            width = self.ids.shape[1]
            self.extra = torch.zeros((len(prompts), width, prompt_embeds[0].shape[1]), device=self.device)
            for b, e in enumerate(prompt_embeds):
                self.extra[b, width - e.shape[0]:] = e.to(self.device, torch.float32)
        self.cache = None
        self.row_prompt = torch.arange(len(prompts), device=self.device)
        self.history = torch.zeros((len(prompts), 0), dtype=torch.long, device=self.device)

    def prefill(self, with_states: bool = False) -> Any:
        """``[B, V]`` float32 log-probs of the first item token; with ``with_states`` also the
        prompts' final hidden states ``[B, H]`` (the last layer's, after the final norm)."""
        pos = (self.attn.cumsum(-1) - 1).clamp(min=0)
        out = self.model(**self._feed(self.ids, self.row_prompt), attention_mask=self.attn, position_ids=pos,
                         use_cache=self.use_cache, logits_to_keep=1, output_hidden_states=with_states)
        self.cache = _out_cache(out) if self.use_cache else None
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        return (logp, out.hidden_states[-1][:, -1].float()) if with_states else logp

    def step(self, parent: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Rows become ``parent [R]`` (rows of the previous step) extended by ``tokens [R]``;
        returns ``[R, V]`` log-probs of the next token."""
        first = self.history.shape[1] == 0
        self.row_prompt = self.row_prompt[parent]
        self.history = torch.cat([self.history[parent], tokens[:, None]], dim=1)
        t = self.history.shape[1]
        attn = torch.cat([self.attn[self.row_prompt], self.attn.new_ones(len(parent), t)], dim=1)
        if self.use_cache:
            # The first call turns B prompt rows into R beam rows (an expansion); later ones reorder.
            if first:
                self.cache.batch_select_indices(parent)
            else:
                self.cache.reorder_cache(parent)
            pos = (self.lengths[self.row_prompt] + t - 1)[:, None]
            out = self.model(input_ids=tokens[:, None], attention_mask=attn, position_ids=pos,
                             use_cache=True, logits_to_keep=1, **{CACHE_KWARG: self.cache})
            self.cache = _out_cache(out)
        else:
            ids = torch.cat([self.ids[self.row_prompt], self.history], dim=1)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            out = self.model(**self._feed(ids, self.row_prompt), attention_mask=attn, position_ids=pos,
                             use_cache=False, logits_to_keep=1)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def _feed(self, ids: torch.Tensor, row_prompt: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model input for rows ``ids [R, L]`` whose first ``P`` columns are the prompts
        ``row_prompt [R]``: token ids, or embeddings when prompt embeddings are added."""
        if self.extra is None:
            return {"input_ids": ids}
        embeds = self.model.get_input_embeddings()(ids)
        width = self.extra.shape[1]
        embeds[:, :width] += self.extra[row_prompt].to(embeds.dtype)
        return {"inputs_embeds": embeds}


def _search(model: Any, prompts: Sequence[Sequence[int]], num_beams: int, k: int, steps: int, eos_id: int,
            trie: ItemTrie | None, masks: torch.Tensor | None, mask_row: torch.Tensor | None,
            use_cache: bool, prompt_embeds: Sequence[torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The beam loop. Returns the top-k finished hypotheses per prompt:
    ``scores [B, k]`` (``-inf`` where fewer were found), ``items [B, k]`` (leaf item, ``-1``
    unconstrained) and ``seqs [B, k, steps]`` generated tokens (``-1`` padded)."""
    stepper = _Stepper(model, prompts, use_cache, prompt_embeds)
    dev, batch = stepper.device, len(prompts)
    logp = stepper.prefill()
    vocab = logp.shape[-1]
    if trie is not None:
        trie.check_vocab(vocab)
    per = 1  # beams per prompt: one (the root) before the first step
    nodes = torch.zeros(batch, dtype=torch.long, device=dev)
    scores = torch.zeros(batch, device=dev)
    hist = torch.zeros((batch, 0), dtype=torch.long, device=dev)
    fin_s = torch.full((batch, k), NEG_INF, device=dev)
    fin_i = torch.full((batch, k), -1, dtype=torch.long, device=dev)
    fin_q = torch.full((batch, k, steps), -1, dtype=torch.long, device=dev)
    rank = torch.arange(2 * num_beams, device=dev)
    for t in range(steps):
        rows = scores.numel()
        if trie is not None:
            tok, child, valid = trie.children(nodes, depth=t)
            if masks is not None:
                prompt_of_row = stepper.row_prompt if t else torch.arange(batch, device=dev)
                valid &= masks[mask_row[prompt_of_row][:, None], child]
            lp = logp.gather(1, tok).clamp(min=_FLOOR).masked_fill(~valid, NEG_INF)
        else:
            lp = logp
            tok = torch.arange(vocab, device=dev).expand(rows, vocab)
            child = torch.zeros(1, 1, dtype=torch.long, device=dev).expand(rows, vocab)
            valid = torch.ones(1, 1, dtype=torch.bool, device=dev).expand(rows, vocab)
        width = lp.shape[1]
        cand = (scores[:, None] + lp).view(batch, per * width)
        n_keep = min(2 * num_beams, per * width)
        top_s, top_i = cand.topk(n_keep, dim=1)
        src_row = (top_i // width) + (torch.arange(batch, device=dev) * per)[:, None]
        col = top_i % width
        # Advanced indexing reads the (possibly expanded, unconstrained) tables without copying them.
        c_tok, c_child, c_valid = tok[src_row, col], child[src_row, col], valid[src_row, col]
        c_valid &= scores.view(-1)[src_row] > NEG_INF
        is_eos = c_tok == eos_id
        seqs = torch.cat([hist[src_row], c_tok[..., None]], dim=2)  # [B, n_keep, t + 1]
        # Finished: EOS within the top num_beams ranks (HF's rule), kept in a running top-k pool.
        done = c_valid & is_eos & (rank[:n_keep] < num_beams)
        new_s = torch.where(done, top_s, NEG_INF)
        new_i = trie.items_at(c_child) if trie is not None else torch.full_like(c_tok, -1)
        pad = torch.full((batch, n_keep, steps - t - 1), -1, dtype=torch.long, device=dev)
        all_s = torch.cat([fin_s, new_s], dim=1)
        fin_s, pick = all_s.topk(k, dim=1)
        fin_i = torch.cat([fin_i, new_i], dim=1).gather(1, pick)
        fin_q = torch.cat([fin_q, torch.cat([seqs, pad], dim=2)], dim=1)[torch.arange(batch, device=dev)[:, None], pick]
        # Running: the best num_beams non-EOS valid candidates.
        run_s = torch.where(c_valid & ~is_eos, top_s, NEG_INF)
        n_run = min(num_beams, n_keep)
        run_s, run_j = run_s.topk(n_run, dim=1)
        if n_run < num_beams:
            fill = num_beams - n_run
            run_s = torch.cat([run_s, run_s.new_full((batch, fill), NEG_INF)], dim=1)
            run_j = torch.cat([run_j, run_j[:, :1].expand(batch, fill)], dim=1)
        # A prompt is done once its k-th finished score beats every running beam (scores only fall).
        worst = fin_s[:, -1:]
        run_s = torch.where(run_s > worst, run_s, NEG_INF)
        alive = run_s > NEG_INF
        if t + 1 == steps or not bool(alive.any()):
            break
        scores = run_s.reshape(-1)
        parent = src_row.gather(1, run_j).reshape(-1)
        next_tok = torch.where(alive, c_tok.gather(1, run_j), eos_id).reshape(-1)
        nodes = torch.where(alive, c_child.gather(1, run_j), -1).reshape(-1) if trie is not None else nodes[parent]
        hist = seqs.gather(1, run_j[..., None].expand(-1, -1, t + 1)).reshape(batch * num_beams, t + 1)
        per = num_beams
        logp = stepper.step(parent, next_tok)
    return fin_s, fin_i, fin_q


@dataclass
class SearchOutput:
    """The top-``k`` finished hypotheses per prompt, best first.

    ``scores [B, k]`` ``log P(tokens, EOS | prompt)`` (``-inf`` where fewer were found);
    ``items [B, k]`` the trie leaf's item index (``-1`` when unconstrained or not found);
    ``seqs [B, k, steps]`` the generated tokens, EOS included (``-1`` padded).
    """

    scores: torch.Tensor
    items: torch.Tensor
    seqs: torch.Tensor


def search(model: Any, prompt_ids: Sequence[Sequence[int]], num_beams: int, k: int, *,
           trie: ItemTrie | None = None, eos_id: int | None = None, max_new_tokens: int | None = None,
           filters: FilterLike | Sequence[FilterLike] = None, attributes: AttributeTable | None = None,
           use_cache: bool = True, prompt_embeds: Sequence[torch.Tensor] | None = None) -> SearchOutput:
    """Beam search over ``trie`` (or over the whole vocabulary when ``trie`` is ``None``).

    ``prompt_ids``: one token list per prompt (any lengths; batched with left padding).
    ``filters``: one filter for all prompts or one per prompt (:mod:`genrec.generation.filters`,
    constrained search only); ``attributes`` resolves their ``where`` conditions.
    ``max_new_tokens`` caps the steps (default: the trie depth, EOS included; required without a
    trie). ``eos_id`` defaults to the trie's. ``use_cache=False`` recomputes every step from
    scratch (a reference). ``prompt_embeds``: one ``[len(prompt), H]`` tensor per prompt added to
    its input embeddings (the history-item vectors of :mod:`genrec.encoders.item_adapter`). Works
    for plain HF and PEFT causal LMs on any device; the model runs in eval mode and gets its
    previous mode back.
    """
    if not prompt_ids:
        empty = torch.zeros((0, k), dtype=torch.long)
        return SearchOutput(empty.float(), empty, torch.zeros((0, k, 0), dtype=torch.long))
    if num_beams < 1 or k < 1:
        raise ConfigError(f"num_beams and k must be >= 1, got num_beams={num_beams}, k={k}")
    if k > num_beams:
        raise ConfigError(f"k={k} exceeds num_beams={num_beams}: beam search finds at most num_beams items; "
                          f"raise num_beams to at least {k}")
    if trie is None and (eos_id is None or max_new_tokens is None):
        raise ConfigError("an unconstrained search needs eos_id and max_new_tokens")
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            masks = rows = None
            if trie is not None:
                trie = trie.to(_device(model))
                masks, rows = node_masks(trie, filters, len(prompt_ids), attributes)
                steps = trie.depth if max_new_tokens is None else min(trie.depth, max_new_tokens)
                eos_id = trie.eos_id if eos_id is None else eos_id
            else:
                steps = int(max_new_tokens)  # type: ignore[arg-type]
            scores, items, seqs = _search(model, prompt_ids, num_beams, k, steps, int(eos_id), trie, masks, rows,
                                          use_cache, prompt_embeds)
    finally:
        model.train(was_training)
    return SearchOutput(scores, items, seqs)


def constrained_beam_search(model: Any, prompt_ids: Sequence[Sequence[int]], trie: ItemTrie, num_beams: int = 20,
                            k: int = 10, filters: FilterLike | Sequence[FilterLike] = None,
                            max_new_tokens: int | None = None, *, attributes: AttributeTable | None = None,
                            use_cache: bool = True, prompt_embeds: Sequence[torch.Tensor] | None = None
                            ) -> list[list[tuple[int, float]]]:
    """Top-``k`` distinct valid items per prompt as ``[(item_index, log_prob), ...]``, best first
    (:func:`search` over ``trie``). Fewer than ``k`` results come back when fewer items are allowed."""
    out = search(model, prompt_ids, num_beams, k, trie=trie, max_new_tokens=max_new_tokens, filters=filters,
                 attributes=attributes, use_cache=use_cache, prompt_embeds=prompt_embeds)
    s, i = out.scores.tolist(), out.items.tolist()
    return [[(int(it), float(sc)) for it, sc in zip(ib, sb) if it >= 0 and sc > NEG_INF] for ib, sb in zip(i, s)]


def beam_search(model: Any, prompt_ids: Sequence[Sequence[int]], eos_id: int, max_new_tokens: int,
                num_beams: int = 20, k: int = 10, use_cache: bool = True) -> list[list[tuple[list[int], float]]]:
    """The same loop without any constraint: top-``k`` EOS-terminated token sequences per
    prompt as ``[(tokens, log_prob), ...]`` (for measuring what the trie costs)."""
    out = search(model, prompt_ids, num_beams, k, eos_id=eos_id, max_new_tokens=max_new_tokens,
                 use_cache=use_cache)
    return [[([t for t in q if t >= 0], float(sc)) for sc, q in zip(sb, qb) if sc > NEG_INF]
            for sb, qb in zip(out.scores.tolist(), out.seqs.tolist())]
