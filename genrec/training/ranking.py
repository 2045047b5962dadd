"""Validation ranking during training: Recall/NDCG@K of constrained beam search on a fixed,
seeded subset of validation users, so the best checkpoint is chosen (and training stopped) by
what the model is for — ranking the next item — and not by token loss, which keeps falling on
tokens that are easy once an item's first code is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genrec.encoders.item_adapter import find_item_adapter, prompt_extras
from genrec.generation import ItemTrie
from genrec.generation.beam import constrained_beam_search
from genrec.metrics import ranking_metrics, top1_share

RANKING_KS = (10, 20)


class ValidationRanker:
    """``ranker(model) -> {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "top1_share"}``.

    ``prompts``: token ids per validation user (each history's serving prompt); ``targets [U]``:
    their held-out items; ``items[u] = (positions, items)`` of the history items (for models with
    an item adapter). ``top1_share`` is the share of users given the most common top-1 item (1.0:
    the model recommends the same item to everyone).
    """

    def __init__(self, prompts: Sequence[Sequence[int]], targets: np.ndarray, trie: ItemTrie, num_beams: int = 20,
                 items: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None, batch_size: int = 64) -> None:
        self.prompts, self.targets = list(prompts), np.asarray(targets, dtype=np.int64)
        self.trie, self.num_beams, self.items, self.batch_size = trie, num_beams, items, batch_size

    def __call__(self, model: Any) -> dict[str, float]:
        k = max(RANKING_KS)
        adapter = find_item_adapter(model)
        ranked = np.full((len(self.prompts), k), -1, dtype=np.int64)
        for start in range(0, len(self.prompts), self.batch_size):
            batch = self.prompts[start:start + self.batch_size]
            extras = None
            if adapter is not None and self.items is not None:
                extras = prompt_extras(adapter, [len(p) for p in batch], self.items[start:start + self.batch_size])
            found = constrained_beam_search(model, batch, self.trie, num_beams=max(self.num_beams, k), k=k,
                                            prompt_embeds=extras)
            for j, row in enumerate(found):
                got = [i for i, _ in row][:k]
                ranked[start + j, :len(got)] = got
        metrics = ranking_metrics(ranked, self.targets, RANKING_KS)
        metrics["top1_share"] = top1_share(ranked)
        return metrics
