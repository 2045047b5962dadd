"""A trie of valid item token sequences held as flat tensors, for constrained decoding.

Every item is its index tokens followed by EOS, e.g. ``<s0_12><s1_40><b0_7><b1_200></s>``.
Nodes are numbered breadth-first with children in token order, so the edges form one CSR
table with an implicit child id: edge ``e`` (parent ``p``, token ``t``) leads to node ``e + 1``.
Items are also sorted by path, so the leaves below any node are one contiguous range of that
order; a per-request item mask becomes a per-node "some allowed leaf below" mask with one
cumulative sum (:meth:`ItemTrie.node_mask`).

Memory is ``O(nodes)`` — about 112 MB for 1M items of 4 tokens — and never ``[nodes, vocab]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from genrec.errors import ConfigError, DataError

NEG_INF = float("-inf")


class ItemTrie:
    """Transition tables of the trie; build with :meth:`from_sequences`.

    Attributes (``M`` nodes, ``E = M - 1`` edges, ``N`` items):
        child_ptr  ``[M + 1]`` int64: edges of node ``n`` are ``child_ptr[n]:child_ptr[n + 1]``.
        edge_tok   ``[E]`` int32: token of each edge, ascending within a node.
        edge_key   ``[E]`` int64: ``parent * vocab_size + token``, strictly ascending (for lookups).
        node_item  ``[M]`` int32: item index at leaves (nodes entered by EOS), ``-1`` elsewhere.
        leaf_lo, leaf_hi ``[M]`` int32: the node's leaves are ranks ``lo:hi`` of ``rank_item``.
        rank_item  ``[N]`` int64: item index at each rank of the path order.
        max_degree per depth (python ints): all beams of step ``t`` sit at depth ``t``, so the
            gather width of a step is known without a device sync.
    """

    def __init__(self, *, child_ptr: torch.Tensor, edge_tok: torch.Tensor, edge_key: torch.Tensor,
                 node_item: torch.Tensor, leaf_lo: torch.Tensor, leaf_hi: torch.Tensor, rank_item: torch.Tensor,
                 max_degree: list[int], eos_id: int, vocab_size: int) -> None:
        self.child_ptr, self.edge_tok, self.edge_key = child_ptr, edge_tok, edge_key
        self.node_item, self.leaf_lo, self.leaf_hi, self.rank_item = node_item, leaf_lo, leaf_hi, rank_item
        self.max_degree, self.eos_id, self.vocab_size = list(max_degree), int(eos_id), int(vocab_size)
        self._copies: dict[torch.device, ItemTrie] = {child_ptr.device: self}
        self._item_leaf: torch.Tensor | None = None
        self.derived: dict[str, Any] = {}  # tables other decoders derive from this trie once (exact scoring's paths)

    # ----------------------------------------------------------------------------------- build
    @classmethod
    def from_sequences(cls, seqs: Sequence[Sequence[int]], eos_id: int, vocab_size: int) -> ItemTrie:
        """Trie of ``seqs[i] + [eos_id]``; item ``i`` is the leaf reached by ``seqs[i]``.

        Raises :class:`DataError` on an empty catalog or sequence, a token outside
        ``[0, vocab_size)``, EOS inside a sequence, or two items with the same tokens.
        """
        n = len(seqs)
        if n == 0:
            raise DataError("cannot build an item trie from an empty catalog")
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        if lengths.min() == 0:
            raise DataError(f"item {int(np.argmin(lengths))} has no tokens; every item needs an index")
        width = int(lengths.max()) + 1
        grid = np.full((n, width), -1, dtype=np.int64)
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=int(lengths.sum()))
        cols = np.arange(width)[None, :] < lengths[:, None]
        grid[cols] = flat
        if flat.min() < 0 or flat.max() >= vocab_size:
            bad = int(np.nonzero((grid >= vocab_size).any(1) | ((grid < 0) & cols).any(1))[0][0])
            raise DataError(f"item {bad} has token ids {list(seqs[bad])} outside the vocabulary [0, {vocab_size}); "
                            "add the item tokens to the tokenizer and resize the model first")
        if (flat == eos_id).any():
            bad = int(np.nonzero((grid == eos_id).any(1))[0][0])
            raise DataError(f"item {bad} contains the EOS id {eos_id} inside its index {list(seqs[bad])}")
        grid[np.arange(n), lengths] = eos_id
        order = np.lexsort(grid.T[::-1])  # lexsort's last key is the primary one
        grid = grid[order]
        if n > 1:
            same = (grid[1:] == grid[:-1]).all(1)
            if same.any():
                r = int(np.nonzero(same)[0][0])
                a, b = sorted((int(order[r]), int(order[r + 1])))
                raise DataError(f"items {a} and {b} have the same index tokens {list(seqs[a])}; item indices must "
                                "be unique (rebuild the item tokenizer with disambiguation tokens)")
        return cls._from_sorted(grid, order, eos_id, vocab_size)

    @classmethod
    def _from_sorted(cls, grid: np.ndarray, order: np.ndarray, eos_id: int, vocab_size: int) -> ItemTrie:
        """``grid [N, W]``: EOS-terminated rows in path order, ``-1`` after EOS."""
        n, width = grid.shape
        parents, toks, items, lo, hi = [], [], [], [np.zeros(1, np.int64)], [np.full(1, n, np.int64)]
        row_node = np.zeros(n, dtype=np.int64)  # node of each row at the current depth
        differs = np.zeros(n, dtype=bool)
        differs[0] = True
        next_id = 1
        for d in range(width):
            col = grid[:, d]
            differs[1:] |= col[1:] != col[:-1]
            present = col >= 0
            start = present & differs
            local = np.cumsum(start) - 1
            starts = np.nonzero(start)[0]
            parents.append(row_node[starts])
            toks.append(col[starts])
            counts = np.bincount(local[present], minlength=len(starts))
            lo.append(starts)
            hi.append(starts + counts)
            leaf = np.full(len(starts), -1, dtype=np.int64)
            is_eos = col[starts] == eos_id
            leaf[is_eos] = order[starts[is_eos]]
            items.append(leaf)
            row_node = np.where(present, next_id + local, -1)
            next_id += len(starts)
        parent = np.concatenate(parents)
        tok = np.concatenate(toks)
        num_nodes = next_id
        degree = np.bincount(parent, minlength=num_nodes)
        child_ptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(degree, out=child_ptr[1:])
        depth_sizes = [1] + [len(p) for p in parents]
        bounds = np.cumsum([0] + depth_sizes)
        max_degree = [int(degree[bounds[d]:bounds[d + 1]].max()) for d in range(width)]
        return cls(child_ptr=torch.from_numpy(child_ptr),
                   edge_tok=torch.from_numpy(tok.astype(np.int32)),
                   edge_key=torch.from_numpy(parent * vocab_size + tok),
                   node_item=torch.from_numpy(np.concatenate([np.full(1, -1)] + items).astype(np.int32)),
                   leaf_lo=torch.from_numpy(np.concatenate(lo).astype(np.int32)),
                   leaf_hi=torch.from_numpy(np.concatenate(hi).astype(np.int32)),
                   rank_item=torch.from_numpy(order.astype(np.int64)),
                   max_degree=max_degree, eos_id=eos_id, vocab_size=vocab_size)

    # ---------------------------------------------------------------------------- properties
    @property
    def num_items(self) -> int:
        return int(self.rank_item.numel())

    @property
    def num_nodes(self) -> int:
        return int(self.child_ptr.numel()) - 1

    @property
    def depth(self) -> int:
        """Tokens on the longest root-to-leaf path, EOS included (the most decoding steps)."""
        return len(self.max_degree)

    @property
    def device(self) -> torch.device:
        return self.child_ptr.device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.child_ptr, self.edge_tok, self.edge_key,
                                                          self.node_item, self.leaf_lo, self.leaf_hi, self.rank_item))

    def to(self, device: str | torch.device) -> ItemTrie:
        """This trie on ``device`` (copies are kept, so repeated calls cost nothing)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._copies:
            t = ItemTrie(**{k: getattr(self, k).to(device) for k in (
                "child_ptr", "edge_tok", "edge_key", "node_item", "leaf_lo", "leaf_hi", "rank_item")},
                max_degree=self.max_degree, eos_id=self.eos_id, vocab_size=self.vocab_size)
            t._copies = self._copies
            self._copies[device] = t
        return self._copies[device]

    def check_vocab(self, vocab: int) -> None:
        """:class:`ConfigError` when the model's output has fewer than ``vocab_size`` entries."""
        if self.vocab_size > vocab:
            raise ConfigError(f"the trie has token ids up to {self.vocab_size - 1} but the model's vocabulary has "
                              f"{vocab} entries; resize the model's embeddings after adding item tokens")

    # ---------------------------------------------------------------------------- vectorised ops
    def children(self, node_ids: torch.Tensor, depth: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded children of each node: ``(tokens, child_ids, valid)``, each ``[R, D]``.

        ``D`` is the largest degree at ``depth`` (all nodes given must sit there) or among the
        given nodes. Padding repeats the node's last edge (so gathers stay in range) and is marked
        invalid. ``node_ids < 0`` (dead beams) have no children.
        """
        node = node_ids.clamp(min=0)
        deg = torch.where(node_ids >= 0, self.child_ptr[node + 1] - self.child_ptr[node], 0)
        width = self.max_degree[depth] if depth is not None else int(deg.max().clamp(min=1))
        width = max(width, 1)
        ar = torch.arange(width, device=node.device)
        valid = ar < deg[:, None]
        edge = self.child_ptr[node][:, None] + torch.minimum(ar, (deg - 1).clamp(min=0)[:, None])
        edge = edge.clamp(max=max(self.edge_tok.numel() - 1, 0))
        return self.edge_tok[edge].long(), edge + 1, valid

    def mask_logits(self, logits: torch.Tensor, node_ids: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """``logits [R, V]`` with every token not allowed after ``node_ids [R]`` set to ``-inf``."""
        tok, _, valid = self.children(node_ids, depth)
        return scatter_allowed(logits, tok, valid)

    def allowed_mask(self, node_ids: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """``[R, V]`` bool: token allowed after each node (``V`` = ``vocab_size`` or the trie's)."""
        tok, _, valid = self.children(node_ids)
        width = vocab_size or self.vocab_size
        out = torch.zeros(len(node_ids), width + 1, dtype=torch.bool, device=tok.device)
        return out.scatter_(1, torch.where(valid, tok, width), True)[:, :width]

    def advance(self, node_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node along ``tokens [R]``; ``-1`` where the token is not allowed."""
        tokens = tokens.to(torch.long)
        ok = (node_ids >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        key = node_ids.clamp(min=0) * self.vocab_size + tokens.clamp(0, self.vocab_size - 1)
        e = torch.searchsorted(self.edge_key, key).clamp(max=self.edge_key.numel() - 1)
        ok &= self.edge_key[e] == key
        return torch.where(ok, e + 1, torch.full_like(e, -1))

    def walk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of ``tokens [R, T]`` from the root (``-1`` when off the trie)."""
        node = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        for j in range(tokens.shape[1]):
            node = self.advance(node, tokens[:, j])
        return node

    def items_at(self, node_ids: torch.Tensor) -> torch.Tensor:
        """Item index at each node (``-1`` unless it is a leaf)."""
        out = self.node_item[node_ids.clamp(min=0)].long()
        return torch.where(node_ids >= 0, out, torch.full_like(out, -1))

    def node_mask(self, item_mask: torch.Tensor) -> torch.Tensor:
        """``[M]`` bool: node has at least one leaf whose item is allowed by ``item_mask [N]``.

        One gather and one cumulative sum over the path order: ``O(N + M)``, no Python loop.
        """
        if item_mask.shape != (self.num_items,):
            raise ValueError(f"item mask has shape {tuple(item_mask.shape)}, the trie has {self.num_items} items")
        ranked = item_mask.to(self.device, torch.bool)[self.rank_item].to(torch.int32)
        cs = torch.zeros(self.num_items + 1, dtype=torch.int32, device=self.device)
        torch.cumsum(ranked, 0, out=cs[1:])
        return cs[self.leaf_hi.long()] > cs[self.leaf_lo.long()]

    def parent(self, node_ids: torch.Tensor) -> torch.Tensor:
        """Parent of each node (``-1`` for the root): edge ``n - 1`` leads to node ``n``."""
        key = self.edge_key[(node_ids - 1).clamp(min=0)]
        return torch.where(node_ids > 0, key // self.vocab_size, torch.full_like(key, -1))

    def item_leaves(self) -> torch.Tensor:
        """``[N]`` leaf node of each item (computed once)."""
        if self._item_leaf is None:
            leaves = torch.nonzero(self.node_item >= 0).squeeze(1)
            out = torch.empty(self.num_items, dtype=torch.long, device=self.device)
            out[self.node_item[leaves].long()] = leaves
            self._item_leaf = out
        return self._item_leaf

    def node_mask_excluding(self, items: torch.Tensor) -> torch.Tensor:
        """Same as ``node_mask`` of "all items but ``items``", in ``O(M + len(items) * depth)``:
        a node is closed when every leaf below it is excluded. The usual filter (a user's history)
        excludes a few dozen items, so this skips the full cumulative sum."""
        leaves = self.item_leaves()[torch.unique(items.to(self.device, torch.long))]
        path = [leaves]
        for _ in range(self.depth):
            path.append(self.parent(path[-1]))
        nodes = torch.cat(path)
        nodes, count = torch.unique(nodes[nodes >= 0], return_counts=True)
        full = count >= (self.leaf_hi[nodes] - self.leaf_lo[nodes]).long()
        mask = torch.ones(self.num_nodes, dtype=torch.bool, device=self.device)
        mask[nodes[full]] = False
        return mask


def scatter_allowed(logits: torch.Tensor, tok: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``logits [R, V]`` kept at ``tok [R, D]`` where ``valid``, ``-inf`` elsewhere."""
    width = logits.shape[1]
    # Invalid slots write into a spare column, so they never overwrite an allowed entry.
    out = logits.new_full((logits.shape[0], width + 1), NEG_INF)
    out.scatter_(1, torch.where(valid, tok, width), logits.gather(1, tok))
    return out[:, :width]


def item_token_ids(item_tokens: Sequence[Sequence[str]], tokenizer) -> list[list[int]]:
    """Token ids of each item's index tokens; :class:`DataError` names a token the tokenizer lacks."""
    vocab = tokenizer.get_vocab()
    out = []
    for i, toks in enumerate(item_tokens):
        try:
            out.append([vocab[t] for t in toks])
        except KeyError as e:
            raise DataError(f"item {i}: token {e.args[0]} is not in the model's tokenizer; add the item vocabulary "
                            "with genrec.training.model.add_item_tokens (and resize the model) first") from None
    return out
