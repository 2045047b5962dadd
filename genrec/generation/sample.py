"""Sampling items from a model within an :class:`ItemTrie`: every sample is a valid catalog item.

Where :func:`genrec.generation.search` returns the best items, :func:`sample` draws items from
the model's distribution restricted to the trie: at each step the next token is drawn from the
softmax of the model's logits over the trie children of the current node only (temperature
applied), so a sample can never leave the catalog. The prompt is prefilled once and its KV
cache expanded to the ``n`` samples of that prompt, as the beam search does.

``log P`` of a sample here is under the *renormalised* (trie-masked) distribution; the mass
the model puts outside the trie is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genrec.errors import ConfigError
from genrec.generation.beam import _device, _Stepper
from genrec.generation.trie import ItemTrie


@dataclass
class SampleOutput:
    """``n`` samples per prompt: ``items [B, n]`` item index (trie leaf), ``seqs [B, n, steps]``
    generated tokens with EOS (``-1`` padded), ``logps [B, n]`` trie-renormalised log-probs."""

    items: torch.Tensor
    seqs: torch.Tensor
    logps: torch.Tensor


def sample(model: Any, prompt_ids: Sequence[Sequence[int]], num_samples: int, trie: ItemTrie, *,
           temperature: float = 1.0, generator: torch.Generator | None = None,
           use_cache: bool = True) -> SampleOutput:
    """Draw ``num_samples`` items per prompt from ``model`` restricted to ``trie``.

    ``prompt_ids``: one token list per prompt (batched with left padding). ``temperature`` > 0
    divides the logits. ``generator``: a ``torch.Generator`` on the model's device, for
    reproducible draws. The model runs in eval mode without gradients and gets its mode back.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    batch = len(prompt_ids)
    if batch == 0:
        empty = torch.zeros((0, num_samples), dtype=torch.long)
        return SampleOutput(empty, torch.zeros((0, num_samples, 0), dtype=torch.long), empty.float())
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            trie = trie.to(_device(model))
            items, seqs, logps = _sample(model, prompt_ids, num_samples, trie, temperature, generator, use_cache)
    finally:
        model.train(was_training)
    return SampleOutput(items.view(batch, num_samples), seqs.view(batch, num_samples, -1),
                        logps.view(batch, num_samples))


def _sample(model: Any, prompts: Sequence[Sequence[int]], n: int, trie: ItemTrie, temperature: float,
            generator: torch.Generator | None, use_cache: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sampling loop over ``R = B·n`` rows: ``(items [R], seqs [R, steps], logps [R])``."""
    stepper = _Stepper(model, prompts, use_cache)
    dev = stepper.device
    logp = stepper.prefill()  # [B, V]
    trie.check_vocab(logp.shape[-1])
    rows = len(prompts) * n
    parent = torch.arange(len(prompts), device=dev).repeat_interleave(n)  # first step: expand prompts to rows
    logp = logp[parent]
    nodes = torch.zeros(rows, dtype=torch.long, device=dev)
    done = torch.zeros(rows, dtype=torch.bool, device=dev)
    total = torch.zeros(rows, device=dev)
    seqs = torch.full((rows, trie.depth), -1, dtype=torch.long, device=dev)
    for t in range(trie.depth):
        tok, child, valid = trie.children(torch.where(done, -1, nodes), depth=t)  # [R, D]
        valid[:, 0] |= done  # finished rows draw a dummy (ignored) first slot
        lp = logp.gather(1, tok).masked_fill(~valid, float("-inf")) / temperature
        lp = torch.log_softmax(lp, dim=-1)
        pick = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(1)  # [R]
        chosen = tok.gather(1, pick[:, None]).squeeze(1)
        total += torch.where(done, 0.0, lp.gather(1, pick[:, None]).squeeze(1))
        seqs[:, t] = torch.where(done, -1, chosen)
        nodes = torch.where(done, nodes, child.gather(1, pick[:, None]).squeeze(1))
        done |= chosen == trie.eos_id
        if bool(done.all()) or t + 1 == trie.depth:
            break
        logp = stepper.step(parent, torch.where(done, trie.eos_id, chosen))
        parent = torch.arange(rows, device=dev)
    return trie.items_at(torch.where(done, nodes, -1)), seqs, total
