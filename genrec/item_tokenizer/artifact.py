"""The tokenizer artifact directory and its loader.

Layout of ``tokenizers_out/NAME/`` (written in one atomic rename)::

    item_codes.json          {item_id: [token, ...]} in item order (dataset order, then cold-start items)
    tokens.json              every new token string, stable order (append-only across versions)
    centroids_<stream>.npz   routing tables of the stream's code tree (genrec.item_tokenizer.tree)
    embeddings_<stream>.npy  [N, D] float32 item embeddings, rows in item_codes.json order
    config.json              resolved recipe, encoder configs, index layout, dataset checksums, provenance
    stats.json               version, collision/unique rates, per-stream and per-level code statistics
    cluster_sizes_<stream>.png
    new_items.jsonl          items added by `genrec tokens assign` (absent until then)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genrec.data.dataset import Dataset, Item
from genrec.data.split import recorded_holdout
from genrec.errors import DataError
from genrec.io import read_json, sha256_file
from genrec.item_tokenizer.codebook import Codebook
from genrec.item_tokenizer.tree import CodeTree
from genrec.item_tokenizer.vocab import index_string, parse_index

ARTIFACT_FILES = ("item_codes.json", "tokens.json", "config.json", "stats.json")


def write_item_codes(path: str | Path, item_ids: Sequence[str], tokens: Iterable[Sequence[str]]) -> None:
    """Write ``{item_id: [token, ...]}`` one item per line (readable, and fast for 1M items).

    Token strings need no escaping; ids go through ``json.dumps``.
    """
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        last = len(item_ids) - 1
        f.writelines(f'  {json.dumps(item, ensure_ascii=False)}: ["' + '", "'.join(toks)
                    + ('"],\n' if i < last else '"]\n') for i, (item, toks) in enumerate(zip(item_ids, tokens)))
        f.write("}\n")


def dataset_record(data_dir: str | Path) -> dict[str, Any]:
    """Checksums a tokenizer keeps of the dataset it was built from."""
    data_dir = Path(data_dir)
    return {"path": str(data_dir.resolve()),
            "items_sha256": sha256_file(data_dir / "items.jsonl"),
            "sequences_sha256": sha256_file(data_dir / "sequences.jsonl")}


@dataclass
class ItemTokenizer:
    """A loaded artifact: item -> tokens, the vocabulary, config and stats."""

    path: Path
    item_tokens: dict[str, list[str]]
    tokens: list[str]
    config: dict[str, Any]
    stats: dict[str, Any]
    _by_index: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> int:
        return int(self.stats.get("version", 1))

    @property
    def item_ids(self) -> list[str]:
        return list(self.item_tokens)

    @property
    def order(self) -> list[str]:
        return list(self.config["index"]["order"])

    @property
    def ks(self) -> dict[str, list[int]]:
        return {s: list(v) for s, v in self.config["index"]["ks"].items()}

    def index(self, item_id: str) -> str:
        """The item's index string, e.g. ``"<s0_12><s1_40><b0_7><b1_200>"``."""
        try:
            return index_string(self.item_tokens[item_id])
        except KeyError:
            raise DataError(f"item {item_id!r} is not in tokenizer {self.path}; "
                            "new items get codes with `genrec tokens assign`") from None

    def item_for(self, index: str | Sequence[str]) -> str | None:
        """Item id whose index is ``index`` (string or token list), ``None`` if no item has it."""
        if not self._by_index:
            self._by_index = {index_string(t): i for i, t in self.item_tokens.items()}
        key = index_string(parse_index(index) if isinstance(index, str) else index)
        return self._by_index.get(key)

    def codebook(self) -> Codebook:
        return Codebook.from_item_tokens(self.item_tokens, self.ks, self.order)

    def embeddings(self, stream: str, mmap: bool = True) -> np.ndarray:
        """``[N, D]`` float32 embeddings of ``stream`` (memory-mapped by default)."""
        path = self.path / f"embeddings_{stream}.npy"
        if not path.is_file():
            raise DataError(f"{path} is missing; this tokenizer has streams {self.order}")
        return np.load(path, mmap_mode="r" if mmap else None)

    def tree(self, stream: str) -> CodeTree:
        return CodeTree.load(self.path / f"centroids_{stream}.npz")

    def titles(self) -> dict[str, str]:
        """Display names of items from the recorded dataset (if still there) and cold-start items."""
        out: dict[str, str] = {}
        data = self.config.get("dataset") or {}
        items_file = Path(data.get("path", "")) / "items.jsonl" if data.get("path") else None
        if items_file is not None and items_file.is_file():
            with open(items_file, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        out[rec["item_id"]] = rec.get("title") or rec["item_id"]
        new = self.path / "new_items.jsonl"
        if new.is_file():
            with open(new, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        out[rec["item_id"]] = rec.get("title") or rec["item_id"]
        return out


def load_item_tokenizer(path: str | Path, dataset: str | Path | Dataset | None = None) -> ItemTokenizer:
    """Load ``tokenizers_out/NAME``; with ``dataset`` also check it is the one built from.

    ``dataset`` is a dataset directory (its items.jsonl / sequences.jsonl sha256 must match the
    recorded ones) or a loaded :class:`Dataset` (its item ids must match the built items, in
    order). A mismatch raises :class:`DataError`: the codes, and the behavior embeddings, were
    computed for other data.
    """
    path = Path(path)
    missing = [f for f in ARTIFACT_FILES if not (path / f).is_file()]
    if missing:
        raise DataError(f"{path} is not an item tokenizer directory ({', '.join(missing)} missing); "
                        "build one with `genrec tokens build --config recipes/tokens_ml100k.yaml`")
    tok = ItemTokenizer(path, read_json(path / "item_codes.json"), read_json(path / "tokens.json"),
                        read_json(path / "config.json"), read_json(path / "stats.json"))
    if dataset is not None:
        check_dataset(tok, dataset)
    return tok


def item_codes(itok: ItemTokenizer, ds: Dataset) -> list[list[str]]:
    """Index tokens per dataset item (item-index order); every item must have codes."""
    missing = [it.item_id for it in ds.items if it.item_id not in itok.item_tokens]
    if missing:
        raise DataError(f"{len(missing)} dataset item(s) have no codes in {itok.path} (e.g. {missing[:3]}); "
                        "rebuild the tokenizer on this dataset or give new items codes with `genrec tokens assign`")
    return [itok.item_tokens[it.item_id] for it in ds.items]


def stream_tables(itok: ItemTokenizer, ds: Dataset) -> dict[str, Any]:
    """``{stream: [N, D] float32 torch tensor}`` of the item embeddings, in dataset item order."""
    import torch

    pos = {iid: i for i, iid in enumerate(itok.item_ids)}
    rows = np.asarray([pos[it.item_id] for it in ds.items])
    return {s: torch.from_numpy(np.asarray(itok.embeddings(s))[rows].astype(np.float32)) for s in itok.order}


def check_dataset(tok: ItemTokenizer, dataset: str | Path | Dataset) -> None:
    """Raise :class:`DataError` when ``dataset`` differs from the one ``tok`` was built from."""
    rec = tok.config.get("dataset")
    if not rec:
        raise DataError(f"tokenizer {tok.path} was built without a dataset (precomputed embeddings only); "
                        "it cannot be checked against one")
    fix = (f"rebuild the tokenizer (`genrec tokens build --config RECIPE data={{dataset}}`), or give new "
           f"items codes with `genrec tokens assign --tokenizer {tok.path} --items NEW.jsonl`")
    if isinstance(dataset, Dataset):
        built = tok.item_ids[:int(tok.stats.get("num_build_items", len(tok.item_tokens)))]
        ids = [it.item_id for it in dataset.items]
        if held_out_share(tok)[0]:  # built without the held-out items, which were then coded as new ones
            built, ids = sorted(tok.item_ids), sorted(ids)
        if ids != built:
            raise DataError(f"the dataset's items differ from the {len(built)} items tokenizer {tok.path} was "
                            f"built from; {fix.format(dataset='DIR')}")
        return
    data_dir = Path(dataset)
    for name, key in (("items.jsonl", "items_sha256"), ("sequences.jsonl", "sequences_sha256")):
        f = data_dir / name
        if not f.is_file():
            raise DataError(f"{data_dir} is not a dataset directory ({name} is missing)")
        if sha256_file(f) != rec[key]:
            what = "items" if name == "items.jsonl" else "interaction sequences"
            raise DataError(f"{f} changed since tokenizer {tok.path} was built (sha256 mismatch): the dataset's "
                            f"{what} are not the ones the codes were computed from; {fix.format(dataset=data_dir)}")


def held_out_share(tok: ItemTokenizer) -> tuple[float, int]:
    """``(cold_items, cold_seed)`` the tokenizer was built with (``(0.0, 0)``: no items held out)."""
    return recorded_holdout((tok.config.get("config") or {}).get("cold_start"))


def read_items_jsonl(path: str | Path) -> tuple[list[Item], list[list[float] | None]]:
    """New items from JSONL: ``item_id`` required, the :class:`Item` text fields optional, other
    keys kept in ``extra``; an optional ``embedding`` list is a precomputed semantic embedding."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; give a JSONL file with one {{\"item_id\", \"title\", ...}} per line")
    items, vectors = [], []
    known = {"item_id", "title", "description", "brand", "categories", "extra"}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not str(rec.get("item_id", "")).strip():
                raise DataError(f"{path} line {lineno}: each line must be an object with a non-empty \"item_id\"")
            vectors.append(rec.pop("embedding", None))
            extra = dict(rec.pop("extra", None) or {})
            extra.update({k: rec.pop(k) for k in list(rec) if k not in known})
            cats = rec.get("categories") or []
            items.append(Item(item_id=str(rec["item_id"]), title=str(rec.get("title") or ""),
                              description=str(rec.get("description") or ""), brand=str(rec.get("brand") or ""),
                              categories=[str(c) for c in (cats if isinstance(cats, list) else [cats])],
                              extra=extra))
    if not items:
        raise DataError(f"{path} holds no items")
    return items, vectors
