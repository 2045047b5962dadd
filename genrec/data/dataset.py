"""The canonical dataset: an item table plus per-user chronological sequences.

Every reader in :mod:`genrec.data.formats` produces :class:`RawData`; :func:`build_dataset`
turns it into a :class:`Dataset` with the same cleaning rules for every source, and
:meth:`Dataset.save` writes the directory layout every later stage reads::

    DIR/items.jsonl      one item per line, in item-index order:
                         {"item_id", "title", "description", "brand", "categories", "extra"}
    DIR/sequences.jsonl  one user per line: {"user_id", "items": [item_id, ...], "timestamps": [...] | null}
    DIR/stats.json       {"users", "items", "interactions", ...counts of what cleaning dropped}
    DIR/manifest.json    format, source path, filters, input checksums, library versions
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genrec.data.columnar import Interactions, group_columns
from genrec.errors import DataError
from genrec.io import atomic_dir, provenance, read_json, write_json

log = logging.getLogger(__name__)

TEXT_FIELDS = ("title", "description", "brand", "categories")


@dataclass
class Item:
    """One catalog item. ``item_id`` is the stable string id from the source."""

    item_id: str
    title: str = ""
    description: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def has_text(self) -> bool:
        return bool(self.title.strip() or self.description.strip() or self.brand.strip() or self.categories)

    def text(self, fields: Iterable[str] = TEXT_FIELDS, sep: str = "\n") -> str:
        """The item's text as ``Field: value`` lines over the non-empty ``fields``."""
        parts = []
        for name in fields:
            value = getattr(self, name, None)
            if value is None:
                value = self.extra.get(name)
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value)
            if value:
                parts.append(f"{name.capitalize()}: {value}")
        return sep.join(parts) if parts else self.item_id

    @property
    def display(self) -> str:
        """Short human-readable name (title, else the id)."""
        return self.title or self.item_id


@dataclass
class RawData:
    """What a reader hands to :func:`build_dataset`.

    ``interactions`` are ``(user_id, item_id, timestamp)`` in source order; ``timestamp``
    may be ``None`` when the source is already chronological (the order is then kept).
    ``items`` is ``None`` when the source has no item table (ids double as text).
    ``inputs`` lists the files read, for checksums. ``counts`` carries reader-level
    cleaning counts (e.g. k-core removals) into ``stats.json``.
    """

    interactions: list[tuple[str, str, float | None]] | Interactions  # rows, or columns for large sources
    items: dict[str, Item] | None
    format: str
    inputs: list[str]
    filters: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Dataset:
    """In-memory canonical dataset. Item indices ``0..N-1`` follow ``items`` order."""

    items: list[Item]
    users: list[str]
    sequences: list[np.ndarray]  # per user, int64 item indices, chronological
    timestamps: list[np.ndarray] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_index: dict[str, int] = {it.item_id: i for i, it in enumerate(self.items)}

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def item_ids(self, indices: Iterable[int]) -> list[str]:
        return [self.items[int(i)].item_id for i in indices]

    def lookup(self, item_ids: Iterable[str]) -> np.ndarray:
        """Item ids → int64 indices; unknown ids raise :class:`DataError` naming them."""
        ids = list(item_ids)
        missing = [i for i in ids if i not in self.item_index]
        if missing:
            raise DataError(f"unknown item id(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                            "they are not in this dataset's items.jsonl")
        return np.asarray([self.item_index[i] for i in ids], dtype=np.int64)

    def save(self, out_dir: str | Path) -> Path:
        """Write the dataset directory atomically (see module docstring)."""
        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            with open(tmp / "items.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(asdict(it), ensure_ascii=False) + "\n" for it in self.items)
            ids = [it.item_id for it in self.items]
            with open(tmp / "sequences.jsonl", "w", encoding="utf-8") as f:
                for u, (user, seq) in enumerate(zip(self.users, self.sequences)):
                    ts = None if self.timestamps is None else _json_times(self.timestamps[u])
                    rec = {"user_id": user, "items": [ids[i] for i in seq.tolist()], "timestamps": ts}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            write_json(tmp / "stats.json", self.stats)
            write_json(tmp / "manifest.json", self.manifest)
        return out_dir

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read a directory written by :meth:`save`; clear errors for anything else."""
        path = Path(path)
        for name in ("items.jsonl", "sequences.jsonl", "stats.json"):
            if not (path / name).is_file():
                raise DataError(f"{path} is not a genrec dataset directory ({name} is missing); "
                                "create one with `genrec data prepare --format FORMAT --path RAW --out DIR`")
        items = [Item(**rec) for rec in _read_jsonl(path / "items.jsonl")]
        index = {it.item_id: i for i, it in enumerate(items)}
        users, seqs, stamps, has_ts = [], [], [], True
        for lineno, rec in enumerate(_read_jsonl(path / "sequences.jsonl"), 1):
            try:
                seqs.append(np.asarray([index[i] for i in rec["items"]], dtype=np.int64))
            except KeyError as e:
                raise DataError(f"{path / 'sequences.jsonl'} line {lineno}: item {e} is not in items.jsonl; "
                                "the directory is inconsistent, re-run `genrec data prepare`") from None
            users.append(rec["user_id"])
            if rec.get("timestamps") is None:
                has_ts = False
            else:
                stamps.append(np.asarray(rec["timestamps"], dtype=np.float64))
        manifest = read_json(path / "manifest.json") if (path / "manifest.json").is_file() else {}
        return cls(items=items, users=users, sequences=seqs, timestamps=stamps if has_ts else None,
                   stats=read_json(path / "stats.json"), manifest=manifest)


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def _json_times(ts: np.ndarray) -> list[float | int]:
    """``[_num(t) for t in ts]``, at array speed when every time is a whole number of seconds."""
    if np.all(np.abs(ts) < 2**53) and np.all(ts == np.trunc(ts)):
        return ts.astype(np.int64).tolist()
    return [_num(t) for t in ts.tolist()]


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None


def build_dataset(raw: RawData, *, source: str = "", strict: bool = False, min_user_interactions: int = 3,
                  keep_cold_items: bool = False, config: dict[str, Any] | None = None,
                  input_checksums: dict[str, str] | None = None) -> Dataset:
    """Clean ``raw`` into a :class:`Dataset` with the rules shared by every format.

    - interactions whose item is absent from the item table are dropped and counted
      (``strict=True`` raises instead);
    - each user's interactions are sorted by timestamp (stable: ties keep source order);
    - users with fewer than ``min_user_interactions`` (default 3: one each for train,
      valid and test) are dropped and counted;
    - items without any text keep their id as title, counted;
    - items never interacted with (after the above) are dropped unless ``keep_cold_items``.
    Each non-zero count is also logged as a one-line warning. Columnar interactions
    (:class:`~genrec.data.columnar.Interactions`) follow the same rules with array sorts.
    """
    counts: dict[str, int] = dict(raw.counts)
    items = raw.items
    if isinstance(raw.interactions, Interactions):
        users, codes, times, splits, used = group_columns(raw.interactions, items, strict=strict,
                                                          min_user_interactions=min_user_interactions, counts=counts)
        has_ts = times is not None
        stamps = np.split(times, splits) if times is not None else None
    else:
        users, ordered, stamps, used = _group_rows(raw, strict, min_user_interactions, counts)
        has_ts = stamps is not None
    if items is None:
        items = {i: Item(item_id=i) for i in sorted(used)}
    catalog = [it for iid, it in items.items() if keep_cold_items or iid in used]
    counts["items_without_interactions_dropped"] = len(items) - len(catalog)
    no_text = 0
    for it in catalog:
        if not it.has_text():
            it.title = it.item_id
            no_text += 1
    counts["items_without_text"] = no_text

    index = {it.item_id: i for i, it in enumerate(catalog)}
    if isinstance(raw.interactions, Interactions):
        to_index = np.asarray([index.get(i, -1) for i in raw.interactions.item_ids], dtype=np.int64)
        sequences = np.split(to_index[codes], splits)
    else:
        sequences = [np.asarray([index[i] for i in seq], dtype=np.int64) for seq in ordered]
    n_inter = int(sum(len(s) for s in sequences))
    lengths = np.asarray([len(s) for s in sequences])
    stats: dict[str, Any] = {
        "users": len(users), "items": len(catalog), "interactions": n_inter,
        "avg_sequence_length": round(float(lengths.mean()), 4),
        "max_sequence_length": int(lengths.max()),
        "density": round(n_inter / (len(users) * max(len(catalog), 1)), 8),
        "format": raw.format,
        **counts,
    }
    for key, value in counts.items():
        if value:
            log.warning("%s: %d", key.replace("_", " "), value)
    manifest = provenance(config=config or {}, inputs=input_checksums or {})
    manifest.update({"format": raw.format, "source": source, "filters": {
        "min_user_interactions": min_user_interactions, "keep_cold_items": keep_cold_items,
        "strict": strict, **raw.filters}})
    return Dataset(items=catalog, users=users, sequences=sequences,
                   timestamps=[np.asarray(s, dtype=np.float64) for s in stamps] if has_ts else None,
                   stats=stats, manifest=manifest)


def _group_rows(raw: RawData, strict: bool, min_user_interactions: int, counts: dict[str, int]
                ) -> tuple[list[str], list[list[str]], list[list[float]] | None, set[str]]:
    """Row-list grouping of :func:`build_dataset`: users, their item ids in time order, times, used ids."""
    items = raw.items
    by_user: dict[str, list[tuple[float | None, int, str]]] = {}
    unknown = 0
    unknown_examples: list[str] = []
    for order, (user, item, ts) in enumerate(raw.interactions):
        if items is not None and item not in items:
            unknown += 1
            if len(unknown_examples) < 3:
                unknown_examples.append(item)
            continue
        by_user.setdefault(user, []).append((ts, order, item))
    if unknown and strict:
        raise DataError(f"{unknown} interaction(s) refer to items absent from the item table "
                        f"(e.g. {unknown_examples}); fix the item file or drop --strict to skip them")
    counts["interactions_unknown_item_dropped"] = unknown

    users: list[str] = []
    ordered: list[list[str]] = []
    stamps: list[list[float]] = []
    has_ts = all(ts is not None for rows in by_user.values() for ts, _, _ in rows)
    short_users = short_inter = 0
    for user, rows in by_user.items():
        if len(rows) < min_user_interactions:
            short_users += 1
            short_inter += len(rows)
            continue
        if has_ts:
            rows.sort(key=lambda r: (r[0], r[1]))
        users.append(user)
        ordered.append([r[2] for r in rows])
        if has_ts:
            stamps.append([float(r[0]) for r in rows])
    counts["users_too_short_dropped"] = short_users
    counts["interactions_of_short_users_dropped"] = short_inter
    if not users:
        raise DataError(f"no user has at least {min_user_interactions} interactions after cleaning; "
                        "check the input files and the column mapping")
    return users, ordered, stamps if has_ts else None, {i for seq in ordered for i in seq}
