"""Reference adapters for Hugging Face ``generate``, to check and benchmark :mod:`genrec.generation`.

Not part of the package's API (``genrec.generation`` does not export them): the tests compare
the tensor trie and the beam search against these, and ``bench/decoding.py`` times HF
``generate`` with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessor

from genrec.generation.trie import ItemTrie, scatter_allowed


class TrieLogitsProcessor(LogitsProcessor):
    """HF ``generate`` adapter: masks each row to the trie continuations of its generated tokens.

    ``prompt_len`` is the (padded) prompt width of ``input_ids``. ``node_masks [B, M]`` (from
    :meth:`ItemTrie.node_mask`) restrict prompt ``b``'s rows. Rows that already hold a complete
    item (HF keeps such rows as low-score fillers) may only emit EOS.
    """

    def __init__(self, trie: ItemTrie, prompt_len: int, num_beams: int = 1,
                 node_masks: torch.Tensor | None = None) -> None:
        self.trie, self.prompt_len, self.num_beams, self.node_masks = trie, prompt_len, num_beams, node_masks

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        trie = self.trie.to(scores.device)
        gen = input_ids[:, self.prompt_len:]
        node = trie.walk(gen)
        tok, child, valid = trie.children(node)
        if self.node_masks is not None:
            prompt = torch.arange(len(node), device=node.device) // self.num_beams
            valid &= self.node_masks.to(node.device)[prompt[:, None], child.clamp(max=trie.num_nodes - 1)]
        out = scatter_allowed(scores, tok, valid)
        stuck = ~valid.any(1)
        out[stuck, trie.eos_id] = scores[stuck, trie.eos_id]
        return out


class PrefixTable:
    """Plain-Python reference: ``{prefix tuple: sorted allowed next tokens}`` of ``seqs + [eos]``.

    Independent of :class:`ItemTrie` on purpose; it checks the tensor trie in tests and is the
    usual ``prefix_allowed_tokens_fn`` baseline in benchmarks.
    """

    def __init__(self, seqs: Sequence[Sequence[int]], eos_id: int) -> None:
        self.eos_id = eos_id
        table: dict[tuple[int, ...], set[int]] = {}
        self.items: dict[tuple[int, ...], int] = {}
        for i, s in enumerate(seqs):
            path = tuple(int(t) for t in s) + (eos_id,)
            for j in range(len(path)):
                table.setdefault(path[:j], set()).add(path[j])
            self.items[path] = i
        self.table = {p: sorted(v) for p, v in table.items()}

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Allowed next tokens; ``[eos]`` after a complete item or off the trie (HF needs one)."""
        return self.table.get(tuple(prefix), [self.eos_id])

    def item(self, generated: Sequence[int]) -> int | None:
        """Item whose tokens + EOS are ``generated`` (trailing padding ignored), else ``None``."""
        gen = [int(t) for t in generated]
        if self.eos_id in gen:
            gen = gen[:gen.index(self.eos_id) + 1]
        return self.items.get(tuple(gen))


def prefix_allowed_tokens_fn(tables: PrefixTable | Sequence[PrefixTable], prompt_len: int
                             ) -> Callable[[int, torch.Tensor], list[int]]:
    """``prefix_allowed_tokens_fn(batch_id, input_ids)`` for HF ``generate``; one table or one per prompt."""
    def fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        table = tables if isinstance(tables, PrefixTable) else tables[batch_id]
        return table.allowed(input_ids[prompt_len:].tolist())
    return fn
