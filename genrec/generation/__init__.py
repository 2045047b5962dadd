"""Constrained decoding of item indices: tensor trie, beam search, per-request filters."""

from genrec.generation.beam import beam_search, constrained_beam_search
from genrec.generation.filters import AttributeTable, ItemFilter, item_mask, node_masks
from genrec.generation.trie import (
                                    ItemTrie,
                                    PrefixTable,
                                    TrieLogitsProcessor,
                                    item_token_ids,
                                    prefix_allowed_tokens_fn,
)

__all__ = ["AttributeTable", "ItemFilter", "ItemTrie", "PrefixTable", "TrieLogitsProcessor", "beam_search",
           "constrained_beam_search", "item_mask", "item_token_ids", "node_masks", "prefix_allowed_tokens_fn"]
