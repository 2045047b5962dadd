"""Constrained decoding of item indices: tensor trie, beam search, exact scoring, sampling, per-request filters.

HF ``generate`` reference adapters (for tests and benchmarks) live in
:mod:`genrec.generation.hf_reference`, outside this package's exports.
"""

from genrec.generation.beam import SearchOutput, search
from genrec.generation.exact import exact_scores, exact_search
from genrec.generation.filters import AttributeTable, ItemFilter, item_mask, node_masks
from genrec.generation.fusion import fused_rerank
from genrec.generation.sample import SampleOutput, sample
from genrec.generation.trie import ItemTrie, item_token_ids

__all__ = ["AttributeTable", "ItemFilter", "ItemTrie", "SampleOutput", "SearchOutput", "exact_scores", "exact_search",
           "fused_rerank", "item_mask", "item_token_ids", "node_masks", "sample", "search"]
