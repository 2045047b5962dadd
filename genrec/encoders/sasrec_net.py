"""The SASRec network (Kang & McAuley, ICDM 2018): causal self-attention over item histories.

The model reads a left-padded history ``[B, L]`` of item indices (``-1`` = padding) and
produces one hidden state per position; the score of item ``i`` at a position is the dot
product with row ``i`` of the item table, which is shared between input and output (tied
embeddings). The item table is a learned ID table (``item_embeddings="id"``), frozen text
vectors through a learned adapter (``"text"``, :mod:`genrec.encoders.text_items`), or their sum
(``"text+id"``). After training, :meth:`SASRec.item_embeddings` is a behaviour embedding of the
catalog (``[N, H]``, row ``i`` = item index ``i``).

Item index ``0`` is a real item in the canonical dataset, so inside the model every index is
shifted by one and row ``0`` of the table is the padding row.

Positions are counted from the first real item of each row (``0, 1, 2, ...`` whatever the
padding). With causal attention the state at position ``t`` is then exactly the encoding of the
window ``row[0..t]`` on its own, so training on every position of a row is the same as training
on each of its prefixes as a separate example.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.encoders.text_items import ITEM_EMBEDDINGS, TextAdapter


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t`` that are not padding."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, L, H]``, ``allowed`` ``[B, 1, L, L]`` bool → ``[B, L, H]``."""
        b, length, hidden = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, length, hidden))


class Block(nn.Module):
    """Pre-norm transformer block: attention and a two-layer feed-forward, each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.norm2 = nn.LayerNorm(hidden)
        # The paper's point-wise feed-forward keeps the inner width equal to the hidden size.
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender with a tied item table.

    Args:
        num_items: catalog size ``N`` (item indices ``0..N-1``).
        hidden: embedding and layer width ``H``.
        layers: number of transformer blocks.
        heads: attention heads (``hidden`` must be divisible by it).
        dropout: dropout on embeddings, attention weights and sub-layer outputs.
        max_len: longest history ``L`` the model reads (longer inputs keep their last ``L`` items).
        item_embeddings: ``id``, ``text`` or ``text+id`` (:data:`~genrec.encoders.text_items.ITEM_EMBEDDINGS`).
        text_features: frozen text vectors ``[N, D]`` for the text item tables.
        adapter_hidden: inner width of the text adapter (``0`` = linear).
        adapter_dropout: dropout inside the text adapter; ``None`` = ``dropout``.
    """

    def __init__(self, num_items: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2, max_len: int = 20, item_embeddings: str = "id",
                 text_features: torch.Tensor | np.ndarray | None = None, adapter_hidden: int = 256,
                 adapter_dropout: float | None = None) -> None:
        super().__init__()
        if item_embeddings not in ITEM_EMBEDDINGS:
            raise ValueError(f"item_embeddings must be one of {ITEM_EMBEDDINGS}, got {item_embeddings!r}")
        if item_embeddings != "id" and (text_features is None or len(text_features) != num_items):
            raise ValueError(f"item_embeddings={item_embeddings!r} needs text_features [{num_items}, D]")
        self.num_items = num_items
        self.max_len = max_len
        self.item_embeddings_mode = item_embeddings
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0) if item_embeddings != "text" else None
        self.text_adapter = (TextAdapter(torch.as_tensor(text_features), hidden, adapter_hidden,
                                         dropout if adapter_dropout is None else adapter_dropout)
                             if item_embeddings != "id" else None)
        if item_embeddings == "text+id":
            # Items without a training interaction keep no ID part: their row is rebuilt from text alone.
            self.register_buffer("id_known", torch.ones(num_items, dtype=torch.bool))
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small normal init keeps the initial logits near zero, so the softmax starts close to uniform.
        std = 1.0 / math.sqrt(self.pos_emb.embedding_dim)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif p.dim() == 2:
                nn.init.normal_(p, std=std if "emb" in name else 0.02)
        if self.item_emb is not None:
            with torch.no_grad():
                self.item_emb.weight[0].zero_()

    @property
    def device(self) -> torch.device:
        return self.pos_emb.weight.device

    def encode(self, seqs: torch.Tensor | np.ndarray, table: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``[B, L, H]`` for left-padded histories ``[B, L]`` (``-1`` = padding).

        Padding positions come out as zeros. ``L`` may be at most ``max_len``. ``table`` is
        :meth:`item_weight` when the caller already computed it (text item tables are computed once
        per batch).
        """
        seqs = torch.as_tensor(seqs, dtype=torch.long, device=self.device)
        if seqs.shape[1] > self.max_len:
            seqs = seqs[:, -self.max_len:]
        valid = seqs >= 0  # [B, L]
        tokens = torch.where(valid, seqs + 1, torch.zeros_like(seqs))
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        if self.item_embeddings_mode == "id":
            items = self.item_emb(tokens)
        else:
            table = self.item_weight() if table is None else table
            items = F.pad(table, (0, 0, 1, 0))[tokens]  # row 0 = padding
        x = items + self.pos_emb(positions)
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        length = seqs.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=self.device)
        # Padding queries may attend to themselves only, so no softmax row is empty (which would give NaN).
        allowed = (causal & (valid[:, None, :] | eye)).unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed) * valid.unsqueeze(-1)
        return self.norm(x) * valid.unsqueeze(-1)

    def forward(self, seqs: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.encode(seqs)

    def item_weight(self) -> torch.Tensor:
        """The item table ``[N, H]`` shared by input and output: the ID table (without its padding
        row), the text adapter's output, or their sum (``text+id``; unknown items: text only)."""
        table = None
        if self.item_emb is not None:
            table = self.item_emb.weight[1:]
            if self.item_embeddings_mode == "text+id":
                table = table * self.id_known.unsqueeze(1).to(table.dtype)
        if self.text_adapter is not None:
            text = self.text_adapter()
            table = text if table is None else table + text
        return table

    def logits(self, hidden: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Scores over the whole catalog ``[..., N]`` for hidden states ``[..., H]``."""
        return hidden @ (self.item_weight() if table is None else table).T

    def score(self, seqs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Next-item scores ``[B, N]`` for left-padded histories ``[B, L]`` (last column = latest item)."""
        table = self.item_weight()
        return self.logits(self.encode(seqs, table)[:, -1], table)

    def item_embeddings(self) -> np.ndarray:
        """Item table as ``float32`` ``[N, H]``; row ``i`` is item index ``i`` (no padding row)."""
        return self.item_weight().detach().cpu().float().numpy().copy()
