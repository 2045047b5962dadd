"""Collaborative signal in the prompt: each history item's embedding, projected into the model.

A history item enters the model as its index tokens; with ``model.item_embeddings`` (a list of
the item tokenizer's streams, e.g. ``[behavior]``) its embeddings from those streams (the DIN or
SASRec item table for ``behavior``, the text encoder's vector for ``semantic``) enter too,
through a learned linear adapter whose output is added to the input embedding of the item's
last index token. The tables are frozen and travel with the run (its copy of the item tokenizer;
cold items get theirs from ``genrec tokens assign``); the projection trains. The name ``id`` adds
a learned row per item instead of (or beside) a frozen table: capacity for the exact item, which
is what memorised item-to-item transitions need (codes alone are shared by ~50 items per level);
items without training interactions keep a zero row. This is the hybrid
item prompt of LLaRA / CoLLM / E4SRec reduced to one vector per item, and it works alike for
scratch, full, LoRA and QLoRA models: the adapter is a submodule of the model, ``genrec_items``,
saved with the weights or, under LoRA, with the adapter (``modules_to_save``).

The vector of a history item is added at the position of its **last** index token: the tokens
that predict the item's own codes come before it, so the item is never visible to its own
prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

ITEM_MODULE = "genrec_items"


ID_STREAM = "id"  # model.item_embeddings entry: a learned row per item rather than a tokenizer stream
ROWS = "rows"  # the learned rows' submodule name (present only with the ``id`` entry)


class ItemEmbeddingAdapter(nn.Module):
    """``forward(items [T]) -> [T, H]``: the items' standardised embeddings (``table [N, D]``, D may
    be 0) projected by one linear map, plus a learned row per item when ``learned_rows``. Both start
    at zero, so a model starts out exactly as it would without the adapter."""

    def __init__(self, table: torch.Tensor, hidden: int, learned_rows: bool = False, row_dropout: float = 0.0) -> None:
        super().__init__()
        self.row_dropout = row_dropout  # training only: share of items whose learned row is hidden
        table = table.float()
        if table.shape[1]:
            table = (table - table.mean(0)) / table.std(0).clamp(min=1e-6)
        self.register_buffer("table", table)  # [N, D], saved with the weights
        self.proj = torch.nn.utils.skip_init(nn.Linear, table.shape[1], hidden, bias=False)
        nn.init.zeros_(self.proj.weight)
        if learned_rows:
            self.rows = nn.Embedding(table.shape[0], hidden)
            nn.init.zeros_(self.rows.weight)
        self.register_buffer("row_keep", None, persistent=False)  # [N] bool: items allowed a learned row

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Let only the items where ``keep [N]`` is true learn a row; the others' rows get no
        gradient and stay zero, so the trained weights serve without the mask."""
        if getattr(self, ROWS, None) is None:
            raise ValueError("keep_rows needs learned rows (the id entry of model.item_embeddings)")
        self.row_keep = torch.as_tensor(keep, dtype=torch.bool, device=self.rows.weight.device)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        out = self.proj(self.table[items].to(self.proj.weight.dtype))
        rows = getattr(self, ROWS, None)
        if rows is None:
            return out
        row = rows(items)  # [T, H]
        if self.row_keep is not None:
            row = row * self.row_keep[items].unsqueeze(1).to(row.dtype)
        if self.training and self.row_dropout:  # the codes must still carry the hidden items
            row = row * (torch.rand(row.shape[0], 1, device=row.device) >= self.row_dropout).to(row.dtype)
        return out + row


def find_item_adapter(model: nn.Module) -> nn.Module | None:
    """The (possibly PEFT-wrapped) ``genrec_items`` module inside ``model``, or ``None``."""
    for name, module in model.named_modules():
        if name.endswith(ITEM_MODULE) and not name.endswith(f"{ITEM_MODULE}.original_module"):
            return module
    return None


def item_table(tables: dict[str, torch.Tensor], streams: Sequence[str]) -> torch.Tensor:
    """``[N, sum D]``: the named streams' item tables side by side (dataset item order); the ``id``
    entry adds no column (its rows are learned: :func:`attach_item_adapter`)."""
    streams = [s for s in streams if s != ID_STREAM]
    missing = [s for s in streams if s not in tables]
    if missing:
        from genrec.errors import ConfigError

        raise ConfigError(f"model.item_embeddings names stream(s) {missing} but the item tokenizer has only "
                          f"{sorted(tables)}; use those streams or rebuild the tokenizer with both")
    num_items = len(next(iter(tables.values())))
    return torch.cat([torch.zeros(num_items, 0), *(tables[s].float() for s in streams)], dim=1)


def attach_item_adapter(model: Any, table: torch.Tensor, learned_rows: bool = False,
                        row_dropout: float = 0.0) -> nn.Module:
    """Build the adapter for ``table [N, D]`` (plus a learned row per item when ``learned_rows``,
    hidden for a ``row_dropout`` share of the items at each training step) and attach it to
    ``model`` as ``genrec_items``."""
    adapter = ItemEmbeddingAdapter(table, model.config.hidden_size, learned_rows, row_dropout)
    adapter = adapter.to(model.get_input_embeddings().weight.device)
    model.add_module(ITEM_MODULE, adapter)
    return adapter


def embed_with_items(model: nn.Module, input_ids: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
                     items: torch.Tensor, adapter: nn.Module) -> torch.Tensor:
    """``inputs_embeds [B, L, H]``: the token embeddings of ``input_ids [B, L]`` plus the adapter's
    vector of ``items [T]`` at ``(rows [T], pos [T])``."""
    embeds = model.get_input_embeddings()(input_ids)
    if not len(items):
        return embeds
    add = torch.zeros_like(embeds)
    add[rows, pos] = adapter(items).to(embeds.dtype)
    return embeds + add


def prompt_extras(adapter: nn.Module, lengths: Sequence[int],
                  items: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[torch.Tensor]:
    """Per prompt ``[P_b, H]`` additive input embeddings for the beam search
    (:func:`genrec.generation.search`'s ``prompt_embeds``): zero except at each history item's
    position (``items[b] = (positions, items)``), which holds the item's adapter vector."""
    weight = adapter.proj.weight
    out = []
    with torch.no_grad():
        for n, (pos, its) in zip(lengths, items):
            extra = weight.new_zeros(n, weight.shape[0])
            if len(its):
                extra[torch.as_tensor(list(pos), device=weight.device)] = adapter(
                    torch.as_tensor(list(its), device=weight.device))
            out.append(extra)
    return out


def load_item_adapter(model: Any, table: torch.Tensor, weights: Any) -> nn.Module:
    """Attach the adapter for ``table`` to a loaded full-weight model and load its trained
    weights from the ``weights`` safetensors file of the run (``transformers`` drops the unknown
    ``genrec_items`` keys when it loads the model)."""
    from safetensors import safe_open

    from genrec.errors import DataError

    prefix = f"{ITEM_MODULE}."
    with safe_open(str(weights), framework="pt") as f:
        state = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    adapter = attach_item_adapter(model, table, learned_rows=f"{ROWS}.weight" in state)
    if "proj.weight" not in state:
        raise DataError(f"{weights} holds no {ITEM_MODULE} weights although the run's config sets "
                        "model.item_embeddings; the run directory is incomplete — train it again")
    state["table"] = adapter.table  # the table is rebuilt from the run's item tokenizer
    adapter.load_state_dict(state)
    return adapter.to(next(model.parameters()).device)
