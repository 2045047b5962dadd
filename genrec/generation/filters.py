"""Per-request item filters, applied inside the beam search without rebuilding the trie.

A filter resolves to an item mask ``[N]`` (allow-list ∩ attribute conditions − excluded
items); :meth:`genrec.generation.trie.ItemTrie.node_mask` turns that into a node mask so a
beam only enters nodes with an allowed item below.

Attribute conditions (``where``) are a mapping ``{attribute: condition}``, all of which must
hold. A condition is a value (equality; for list attributes such as ``categories``, the
item carries it), a list of values (any of them), or a mapping of operators::

    {"categories": "Toys"}                   # list attribute contains "Toys"
    {"brand": ["Lego", "Hasbro"]}            # any of
    {"brand": {"not_in": ["Acme"]}}          # none of
    {"price": {"ge": 5, "lt": 20}}           # numeric comparisons (eq ne lt le gt ge)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genrec.errors import ConfigError

_COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
            "eq": np.equal, "ne": np.not_equal}
_SETS = ("in", "not_in")


@dataclass
class ItemFilter:
    """What one request may receive. Item ids are item indices ``0..N-1``."""

    exclude: Sequence[int] | None = None  # never these (e.g. the user's history)
    allow: Sequence[int] | None = None  # only these; ``None`` = the whole catalog
    where: Mapping[str, Any] | None = None  # attribute conditions (module docstring), needs an AttributeTable


FilterLike = ItemFilter | torch.Tensor | None


class AttributeTable:
    """Item attributes by column: categorical columns hold one or more string values per
    item (inverted index value → items), numeric columns one float per item (``nan`` = missing)."""

    def __init__(self, num_items: int, categorical: dict[str, dict[str, np.ndarray]],
                 numeric: dict[str, np.ndarray]) -> None:
        self.num_items, self.categorical, self.numeric = num_items, categorical, numeric

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> AttributeTable:
        """One mapping per item (index order); a column is numeric when every present value is a number."""
        n = len(records)
        names = sorted({k for r in records for k in r})
        categorical: dict[str, dict[str, np.ndarray]] = {}
        numeric: dict[str, np.ndarray] = {}
        for name in names:
            values = [r.get(name) for r in records]
            present = [v for v in values if v is not None and v != "" and v != []]
            if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
                numeric[name] = np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in values])
                continue
            index: dict[str, list[int]] = {}
            for i, v in enumerate(values):
                for x in (v if isinstance(v, (list, tuple, set)) else [v]):
                    if x is not None and x != "":
                        index.setdefault(str(x), []).append(i)
            categorical[name] = {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in index.items()}
        return cls(n, categorical, numeric)

    @classmethod
    def from_items(cls, items: Sequence[Any]) -> AttributeTable:
        """From :class:`genrec.data.dataset.Item` s: ``brand``, ``categories`` and every ``extra`` key."""
        return cls.from_records([{"brand": it.brand, "categories": list(it.categories), **(it.extra or {})}
                                 for it in items])

    @property
    def columns(self) -> list[str]:
        return sorted([*self.categorical, *self.numeric])

    def mask(self, where: Mapping[str, Any]) -> np.ndarray:
        """``[N]`` bool: items meeting every condition of ``where``."""
        out = np.ones(self.num_items, dtype=bool)
        for name, cond in where.items():
            if name in self.numeric:
                out &= self._numeric(name, cond)
            elif name in self.categorical:
                out &= self._categorical(name, cond)
            else:
                raise ConfigError(f"filter attribute {name!r} is unknown; the catalog has: {', '.join(self.columns)}")
        return out

    def _any_of(self, name: str, values: Iterable[Any]) -> np.ndarray:
        hit = np.zeros(self.num_items, dtype=bool)
        index = self.categorical[name]
        for v in values:
            rows = index.get(str(v))
            if rows is not None:
                hit[rows] = True
        return hit

    def _categorical(self, name: str, cond: Any) -> np.ndarray:
        if isinstance(cond, Mapping):
            out = np.ones(self.num_items, dtype=bool)
            for op, arg in cond.items():
                vals = arg if isinstance(arg, (list, tuple, set)) else [arg]
                if op in ("in", "eq"):
                    out &= self._any_of(name, vals)
                elif op in ("not_in", "ne"):
                    out &= ~self._any_of(name, vals)
                else:
                    raise ConfigError(f"filter on {name!r}: operator {op!r} does not apply to a text attribute; "
                                      "use in, not_in, eq or ne")
            return out
        return self._any_of(name, cond if isinstance(cond, (list, tuple, set)) else [cond])

    def _numeric(self, name: str, cond: Any) -> np.ndarray:
        col = self.numeric[name]
        if not isinstance(cond, Mapping):
            vals = cond if isinstance(cond, (list, tuple, set)) else [cond]
            cond = {"in": vals}
        out = ~np.isnan(col)
        for op, arg in cond.items():
            if op in _SETS:
                vals = np.asarray(list(arg) if isinstance(arg, (list, tuple, set)) else [arg], dtype=float)
                hit = np.isin(col, vals)
                out &= hit if op == "in" else ~hit
            elif op in _COMPARE:
                try:
                    out &= _COMPARE[op](col, float(arg))
                except (TypeError, ValueError):
                    raise ConfigError(f"filter on {name!r}: {op} needs a number, got {arg!r}") from None
            else:
                raise ConfigError(f"filter on {name!r}: unknown operator {op!r}; use one of "
                                  f"{', '.join([*_SETS, *_COMPARE])}")
        return out


def _indices(values: Sequence[int], num_items: int, what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= num_items)]
    if len(bad):
        raise ConfigError(f"filter {what} holds item index {int(bad[0])}, outside the catalog of {num_items} items "
                          "(indices are 0..N-1 in item order)")
    return arr


def item_mask(flt: FilterLike, num_items: int, attributes: AttributeTable | None = None) -> torch.Tensor | None:
    """``[N]`` bool mask of the items ``flt`` allows; ``None`` when it allows everything."""
    if flt is None:
        return None
    if isinstance(flt, torch.Tensor):
        if flt.dtype != torch.bool or flt.shape != (num_items,):
            raise ConfigError(f"an item mask filter must be a bool tensor of shape ({num_items},), "
                              f"got {flt.dtype} {tuple(flt.shape)}")
        return flt
    if not isinstance(flt, ItemFilter):
        raise ConfigError(f"a filter must be an ItemFilter, a bool item mask or None, got {type(flt).__name__}")
    if flt.allow is None and not flt.exclude and not flt.where:
        return None
    mask = np.ones(num_items, dtype=bool)
    if flt.allow is not None:
        mask[:] = False
        mask[_indices(flt.allow, num_items, "allow-list")] = True
    if flt.where:
        if attributes is None:
            raise ConfigError("a filter with attribute conditions ('where') needs the catalog's AttributeTable "
                              "(pass attributes=AttributeTable.from_items(dataset.items))")
        if attributes.num_items != num_items:
            raise ConfigError(f"the attribute table describes {attributes.num_items} items, the trie {num_items}")
        mask &= attributes.mask(flt.where)
    if flt.exclude is not None and len(flt.exclude):
        mask[_indices(flt.exclude, num_items, "exclude list")] = False
    return torch.from_numpy(mask)


def _exclude_only(f: FilterLike) -> bool:
    return isinstance(f, ItemFilter) and f.allow is None and not f.where and f.exclude is not None \
        and len(f.exclude) > 0


def node_masks(trie: Any, filters: FilterLike | Sequence[FilterLike], batch: int,
               attributes: AttributeTable | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-prompt node masks for a batch: ``(masks [F, M] bool, row [B] long)`` or ``(None, None)``.

    ``filters`` is one filter for every prompt or one per prompt. Prompts without a filter
    share an all-true row, so ``F`` is the number of distinct filters (+1), not ``B``.
    """
    per = list(filters) if isinstance(filters, (list, tuple)) else [filters] * batch
    if len(per) != batch:
        raise ConfigError(f"got {len(per)} filters for {batch} prompts; give one filter or one per prompt")
    rows, row_of = [], []
    seen: dict[int, int] = {}
    for f in per:
        key = id(f)
        if key not in seen:
            seen[key] = len(rows)
            if _exclude_only(f):
                idx = torch.from_numpy(_indices(f.exclude, trie.num_items, "exclude list"))
                rows.append(trie.node_mask_excluding(idx))
            else:
                m = item_mask(f, trie.num_items, attributes)
                rows.append(None if m is None else trie.node_mask(m))
        row_of.append(seen[key])
    if all(r is None for r in rows):
        return None, None
    rows = [torch.ones(trie.num_nodes, dtype=torch.bool, device=trie.device) if r is None else r for r in rows]
    return torch.stack(rows), torch.tensor(row_of, dtype=torch.long, device=trie.device)
