"""Recommend with a trained run: the Python API behind ``genrec recommend``, ``evaluate`` and ``serve``.

::

    from genrec.inference.recommender import GenRecommender

    rec = GenRecommender.from_pretrained("runs/ml100k-smollm2")
    for r in rec.recommend(["50", "172", "Star Wars (1977)"], k=10, exclude="history"):
        print(r.item_id, r.title, r.score)

Loading (:meth:`GenRecommender.from_pretrained`) reads a run directory written by ``genrec
train`` or ``genrec export``: the catalog from its ``catalog.jsonl``
(:mod:`genrec.inference.catalog`), the model as :mod:`genrec.inference.weights` loads it: the
base model found through ``base_model.json`` **without quantisation** in ``dtype`` (default: the
run's ``model.dtype``), the LoRA adapter applied and merged (``merge=True``); full weights (a
``full`` run, a merged export) as they are. A QLoRA run is therefore served on float base
weights: the adapter was trained against the 4-bit NF4 weights, so scores differ slightly from
the quantised training-time model (a merged ``genrec export`` reproduces that one).

A request is rendered exactly as training renders it (:func:`genrec.tasks.collate.history_prompt`:
the ``seqrec`` task's first phrasing, or for a run trained on the ``sequence`` task its
instruction followed by the history items, each closed by EOS; chat template, summary token;
a run with history-item embeddings gets them added as in training), decoded by constrained
beam search over the trie of the catalog (:mod:`genrec.generation`), and scored by
``log P(item tokens, EOS | prompt)`` (+ ``w · log P_head(item)`` with an item head,
:mod:`genrec.generation.fusion`; higher is better; results are sorted by it).

Request rules:

- ``history``: item ids, or exact titles when no item has that id (a title shared by several
  items is an error naming them); unknown entries raise :class:`~genrec.errors.RequestError`
  naming every one; an empty history is an error; a history longer than the run's
  ``tasks.max_history`` keeps its most recent ``max_history`` items, as in training.
- ``k``: at least 1; a ``k`` larger than the catalog is clamped to the catalog size with a
  warning. Fewer than ``k`` items come back when the filters allow fewer.
- ``exclude``: ``None`` (default: seen items may be recommended again, the protocol of
  ``genrec evaluate`` and the baselines), ``"history"`` (drop the history's items) or a list of
  item ids / titles. ``allow``: only these items. ``where``: attribute conditions such as
  ``{"categories": "Comedy"}`` (see :mod:`genrec.generation.filters`).
- ``instruction``: replaces the prompt text. ``{history}`` in it becomes the history's item
  indices and ``{titles}`` its titles; without either placeholder the instruction is put in
  front of the default prompt (which carries the history). The model was trained on the
  default phrasings, so free-form instructions are a best-effort extra.
- ``num_beams``: beam width (default 20, raised to ``k`` when ``k`` is larger); an explicit
  value below ``k`` is an error. Ignored with ``scoring="exact"`` (the recommender's setting),
  which scores every catalog item instead of searching (:mod:`genrec.generation.exact`).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec import run_dir as layout
from genrec.data.dataset import Dataset, Item
from genrec.encoders.item_adapter import find_item_adapter, prompt_extras
from genrec.encoders.item_head import run_item_head
from genrec.errors import ConfigError, DataError, RequestError
from genrec.generation import AttributeTable, ItemFilter, ItemTrie, exact_search, item_token_ids, search
from genrec.generation.fusion import rerank_found
from genrec.runtime import resolve_device
from genrec.tasks.collate import SUMMARY_TOKEN, history_prompt
from genrec.tasks.prompts import TITLE_CHARS, index_string, render_history, serving_template

log = logging.getLogger(__name__)

DEFAULT_BEAMS = 20


@dataclass
class Recommendation:
    """One recommended item; ``score``: ``log P(item, EOS | prompt)`` (+ ``w · log P_head`` with an item head)."""

    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecommendRequest:
    """The arguments of :meth:`GenRecommender.recommend` as one object (for batches)."""

    history: Sequence[str]
    k: int = 10
    exclude: str | Sequence[str] | None = None
    allow: Sequence[str] | None = None
    where: Mapping[str, Any] | None = None
    instruction: str | None = None
    num_beams: int | None = None


@dataclass
class PreparedRequest:
    """A validated request: prompt token ids, item filter and search sizes."""

    prompt: list[int]
    filter: ItemFilter | None
    k: int
    num_beams: int
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items: tuple[list[int], list[int]] = ([], [])  # history items' positions and indices (item adapter)


class GenRecommender:
    """A trained model, its tokenizer, the catalog and the trie of valid item indices.

    Build it with :meth:`from_pretrained`; the constructor takes already loaded parts (tests,
    custom loading). ``codes[i]`` are the index tokens of ``items[i]``.
    """

    def __init__(self, model: Any, tokenizer: Any, items: Sequence[Item], codes: Sequence[Sequence[str]], *,
                 max_history: int = 20, max_length: int = 512, use_chat_template: bool = True,
                 num_beams: int = DEFAULT_BEAMS, name: str = "", base_model: str = "",
                 run_dir: str | Path | None = None, data_dir: str | Path | None = None,
                 sequence_format: bool = False, scoring: str = "beam", item_head: Any = None) -> None:
        if scoring not in ("beam", "exact"):
            raise ConfigError(f"scoring must be 'beam' or 'exact', got {scoring!r}")
        if len(items) != len(codes):
            raise DataError(f"{len(items)} items but {len(codes)} code lists")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.items = list(items)
        self.max_history, self.max_length, self.use_chat_template = max_history, max_length, use_chat_template
        self.num_beams, self.scoring = num_beams, scoring
        self.name, self.base_model = name, base_model
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.index = [index_string(c) for c in codes]
        self.titles = [it.display for it in self.items]
        self.summary_id = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
        if self.summary_id is None or self.summary_id == tokenizer.unk_token_id:
            raise DataError(f"the tokenizer has no {SUMMARY_TOKEN} token; load the tokenizer saved in the run "
                            "directory")
        seqs = item_token_ids(codes, tokenizer)
        self.sequence_format = sequence_format  # trained on the sequence task: history items follow the prompt
        self.item_ids = seqs  # index token ids per item
        self.item_adapter = find_item_adapter(self.model)
        self.item_head = item_head  # encoders.item_head.ItemHead fused with the code scores, or None
        vocab = model.get_input_embeddings().weight.shape[0]
        self.trie = ItemTrie.from_sequences(seqs, tokenizer.eos_token_id, max(len(tokenizer), vocab))
        self._by_tokens = {tuple(s): i for i, s in enumerate(seqs)}
        self.attributes = AttributeTable.from_items(self.items)
        self._by_id = {it.item_id: i for i, it in enumerate(self.items)}
        self._by_title: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            if it.title:
                self._by_title.setdefault(it.title, []).append(i)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, merge: bool = True, *,
                        data_dir: str | Path | None = None, num_beams: int = DEFAULT_BEAMS,
                        scoring: str = "beam", item_head: bool = True) -> GenRecommender:
        """Load a run directory of ``genrec train`` or ``genrec export`` (see the module docstring).

        ``device``: default ``cuda`` when available, else ``cpu``. ``dtype``: default the run's
        ``model.dtype``. ``merge``: fold the LoRA weights into the base weights (faster decoding).
        ``data_dir``: a dataset directory whose items replace the run's catalog (needed only for
        runs written without ``catalog.jsonl`` whose recorded ``data`` directory has moved).
        ``scoring``: ``"beam"`` (constrained beam search) or ``"exact"`` (every item scored).
        ``item_head``: fuse the run's item head (``item_head.safetensors``, written by ``genrec
        head`` or ``training.item_head``) with the code scores when the run has one; ``False``
        ranks by the codes alone.
        """
        from genrec.encoders.item_adapter import item_table
        from genrec.inference.catalog import load_catalog
        from genrec.inference.weights import load_run_model, load_run_tokenizer
        from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer, stream_tables

        run = layout.require_loadable(run_dir)
        cfg = layout.read_config(run)
        mcfg, tcfg = cfg.get("model") or {}, cfg.get("tasks") or {}
        items, data = load_catalog(run, cfg, data_dir)
        ds = Dataset(items=items, users=[], sequences=[])
        itok = load_item_tokenizer(run / layout.ITEM_TOKENIZER)
        codes = item_codes(itok, ds)
        device = resolve_device(device)  # None / "auto": this process's GPU when present, else the CPU
        dtype = dtype if dtype is not None else mcfg.get("dtype", "float32")
        tok = load_run_tokenizer(run)
        mode = mcfg.get("mode", "lora")
        base = str(mcfg.get("base", ""))
        streams = list(mcfg.get("item_embeddings") or [])
        table = item_table(stream_tables(itok, ds), streams) if streams else None
        model = load_run_model(run, cfg, tok, table, device=device, dtype=dtype, merge=merge)
        model.config.pad_token_id = tok.pad_token_id
        log.info("loaded %s (%s on %s, %s): %d items", run, base, device, mode, len(ds.items))
        head = run_item_head(run / layout.ITEM_HEAD, model.get_input_embeddings().weight.shape[1], len(ds.items),
                             device) if item_head else None
        return cls(model, tok, ds.items, codes, max_history=int(tcfg.get("max_history", 20)),
                   max_length=int(tcfg.get("max_length", 512)),
                   use_chat_template=bool(tcfg.get("use_chat_template", True)), num_beams=num_beams,
                   name=run.name, base_model=base, run_dir=run, data_dir=data,
                   sequence_format=bool((tcfg.get("mix") or {}).get("sequence")), scoring=scoring, item_head=head)

    # ----------------------------------------------------------------------------------- lookups
    @property
    def num_items(self) -> int:
        return len(self.items)

    def resolve(self, refs: Sequence[Any], what: str = "history") -> np.ndarray:
        """Item indices of item ids or exact titles; :class:`RequestError` names every unknown one."""
        if isinstance(refs, (str, bytes)) or not isinstance(refs, Sequence):
            raise RequestError(f"{what} must be a list of item ids, got {type(refs).__name__}", what, [refs])
        out, unknown = [], []
        for ref in refs:
            key = str(ref)
            if key in self._by_id:
                out.append(self._by_id[key])
            elif len(self._by_title.get(key, ())) == 1:
                out.append(self._by_title[key][0])
            elif key in self._by_title:
                ids = [self.items[i].item_id for i in self._by_title[key]]
                raise RequestError(f"{what}: title {key!r} is shared by items {ids}; give an item id instead",
                                   what, [key])
            else:
                unknown.append(key)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                                                 else "")
            raise RequestError(f"{what}: unknown item id(s) or title(s) {shown}; the catalog has {self.num_items} "
                               "items (ids as in the dataset's items.jsonl)", what, unknown)
        return np.asarray(out, dtype=np.int64)

    def prompt_text(self, history: Sequence[int], instruction: str | None = None) -> str:
        """The prompt text for a history of item indices (most recent last), rendered by the
        function that renders the training prompts (:func:`genrec.tasks.prompts.render_history`)."""
        return render_history(serving_template(instruction, self.sequence_format), history, self.index, self.titles,
                              self.max_history, TITLE_CHARS)

    def prompt_for(self, history: Sequence[int], instruction: str | None = None) -> list[int]:
        """Prompt token ids for a history of item indices (most recent last), as training renders it."""
        return self.render(history, instruction)[0]

    def render(self, history: Sequence[int], instruction: str | None = None
               ) -> tuple[list[int], tuple[list[int], list[int]]]:
        """``(prompt ids, (positions, items))``: :meth:`prompt_for` and, for a ``sequence``-format
        run, where each kept history item sits (:func:`genrec.tasks.collate.history_prompt`)."""
        return history_prompt(self.tokenizer, self.summary_id, history, self.index, self.titles, self.item_ids,
                              self.max_history, self.max_length - self.trie.depth, self.use_chat_template,
                              self.sequence_format, instruction)

    # ----------------------------------------------------------------------------------- requests
    def prepare(self, request: RecommendRequest | Mapping[str, Any]) -> PreparedRequest:
        """Validate a request and build its prompt and filter; raises :class:`RequestError`."""
        if isinstance(request, Mapping):
            unknown = set(request) - set(RecommendRequest.__dataclass_fields__)
            if unknown:
                raise RequestError(f"unknown request field(s) {sorted(unknown)}", min(unknown), sorted(unknown))
            if "history" not in request:
                raise RequestError("a request needs a history (a list of item ids)", "history")
            request = RecommendRequest(**request)
        if isinstance(request.history, (str, bytes)) or not isinstance(request.history, Sequence):
            raise RequestError(f"history must be a list of item ids, got {type(request.history).__name__}",
                               "history", [request.history])
        if len(request.history) == 0:
            raise RequestError("history is empty; give at least one item id", "history")
        history = self.resolve(request.history, "history")
        if len(history) > self.max_history:
            log.debug("history of %d items truncated to its last %d", len(history), self.max_history)
            history = history[-self.max_history:]
        k = request.k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RequestError(f"k must be an integer >= 1, got {k!r}", "k", [k])
        k = int(k)
        if k > self.num_items:
            log.warning("k=%d exceeds the catalog of %d items; returning at most %d", k, self.num_items,
                        self.num_items)
            k = self.num_items
        beams = request.num_beams
        if beams is None:
            beams = max(self.num_beams, k)
        elif isinstance(beams, bool) or not isinstance(beams, (int, np.integer)) or beams < k:
            raise RequestError(f"num_beams={beams!r} must be an integer >= k={k} (beam search finds at most "
                               "num_beams items); leave it unset to use max(20, k)", "num_beams", [beams])
        flt = ItemFilter()
        exclude = request.exclude
        if isinstance(exclude, str):
            if exclude != "history":
                raise RequestError(f"exclude must be 'history', a list of item ids or null, got {exclude!r}",
                                   "exclude", [exclude])
            flt.exclude = np.unique(history).tolist()
        elif exclude is not None:
            flt.exclude = np.unique(self.resolve(exclude, "exclude")).tolist() or None
        if request.allow is not None:
            flt.allow = np.unique(self.resolve(request.allow, "allow")).tolist()
        if request.where:
            if not isinstance(request.where, Mapping):
                raise RequestError(f"where must be a mapping of attribute conditions, got {request.where!r}", "where")
            try:
                self.attributes.mask(request.where)
            except Exception as e:  # noqa: BLE001 - any failure here is a malformed condition
                raise RequestError(f"where: {e}", "where", list(request.where)) from None
            flt.where = dict(request.where)
        if request.instruction is not None and not isinstance(request.instruction, str):
            raise RequestError("instruction must be a string", "instruction")
        empty = flt.exclude is None and flt.allow is None and not flt.where
        prompt, items = self.render(history, request.instruction)
        return PreparedRequest(prompt, None if empty else flt, k, int(beams), history, items)

    def recommend(self, history: Sequence[str], k: int = 10, exclude: str | Sequence[str] | None = None,
                  allow: Sequence[str] | None = None, where: Mapping[str, Any] | None = None,
                  instruction: str | None = None, num_beams: int | None = None) -> list[Recommendation]:
        """Top-``k`` items for one history, best first (see the module docstring for the rules)."""
        req = RecommendRequest(history, k, exclude, allow, where, instruction, num_beams)
        return self.decode([self.prepare(req)])[0]

    def recommend_batch(self, requests: Sequence[RecommendRequest | Mapping[str, Any]]) -> list[list[Recommendation]]:
        """:meth:`recommend` for many requests, decoded together (one batched beam search per beam
        width). Every request is validated first; the first invalid one raises."""
        return self.decode([self.prepare(r) for r in requests])

    def decode(self, prepared: Sequence[PreparedRequest]) -> list[list[Recommendation]]:
        """Run the beam search for validated requests; one batch per distinct beam width."""
        out: list[list[Recommendation]] = [[] for _ in prepared]
        groups: dict[int, list[int]] = {}
        for j, p in enumerate(prepared):
            groups.setdefault(p.num_beams, []).append(j)
        for beams, members in groups.items():
            k = max(prepared[j].k for j in members)
            ranked, _ = self.search([prepared[j].prompt for j in members], [prepared[j].filter for j in members],
                                    k, beams, [prepared[j].items for j in members],
                                    [prepared[j].history for j in members])
            for j, res in zip(members, ranked):
                out[j] = [Recommendation(self.items[i].item_id, self.items[i].display, s)
                          for i, s in res[:prepared[j].k]]
        return out

    def search(self, prompts: Sequence[Sequence[int]], filters: Sequence[ItemFilter | None], k: int,
               num_beams: int, items: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
               histories: Sequence[Sequence[int]] | None = None) -> tuple[list[list[tuple[int, float]]], dict[str, int]]:
        """Constrained beam search over the catalog trie (``items``: per prompt, the second part of
        :meth:`render`; needed by a model with an item adapter; ``histories``: the item indices,
        for the item head's transition term).

        Returns ``(results, counts)``: per prompt ``[(item_index, score), ...]`` best first, and
        ``{"generated", "invalid"}``: finished hypotheses returned, and how many decode (token by
        token) to no catalog item or to another item than the trie leaf (dropped from the results).
        """
        if not prompts:
            return [], {"generated": 0, "invalid": 0}
        extras = None
        if self.item_adapter is not None:
            if items is None:
                raise ConfigError("this model adds history-item embeddings: pass each prompt's items from render()")
            extras = prompt_extras(self.item_adapter, [len(p) for p in prompts], items)
        head, found = self.item_head, k if self.item_head is None else max(k, num_beams)  # head: re-rank all finds
        with self._lock:
            if self.scoring == "exact":
                out = exact_search(self.model, prompts, self.trie, found, filters=list(filters),
                                   attributes=self.attributes, prompt_embeds=extras)
            else:
                out = search(self.model, prompts, max(num_beams, found), found, trie=self.trie,
                             filters=list(filters), attributes=self.attributes, prompt_embeds=extras)
        scores, items, seqs = out.scores, out.items, out.seqs
        eos = self.trie.eos_id
        results, generated, invalid = [], 0, 0
        for sb, ib, qb in zip(scores.tolist(), items.tolist(), seqs.tolist()):
            row = []
            for s, i, q in zip(sb, ib, qb):
                if s == float("-inf"):
                    continue
                generated += 1
                toks = [t for t in q if t >= 0]
                decoded = self._by_tokens.get(tuple(toks[:-1])) if toks and toks[-1] == eos else None
                if decoded is None or decoded != i:
                    invalid += 1
                    continue
                row.append((decoded, float(s)))
            results.append(row)
        if head is not None:  # code score + weight * head log-prob over the finds and the head's best items
            with self._lock:
                results = rerank_found(self.model, prompts, self.trie, results, head, k, list(filters),
                                       self.attributes, extras, histories)
        return results, {"generated": generated, "invalid": invalid}


# --------------------------------------------------------------------------------------- CLI
def recommendation_table(recs: Sequence[Recommendation]) -> str:
    """Fixed-width table: rank, score, item id, title."""
    if not recs:
        return "(no item satisfies the request's filters)"
    width = max(7, max(len(r.item_id) for r in recs))
    lines = [f"{'rank':>4}  {'score':>9}  {'item_id':<{width}}  title"]
    lines += [f"{n:>4}  {r.score:9.4f}  {r.item_id:<{width}}  {r.title}" for n, r in enumerate(recs, 1)]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``genrec recommend``."""
    where = None
    if args.where:
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as e:
            raise RequestError(f"--where is not valid JSON ({e.msg}); e.g. --where '{{\"categories\": \"Comedy\"}}'",
                               "where") from None
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # stdout may be JSON for a pipe; keep stderr to real messages
    rec = GenRecommender.from_pretrained(args.model, device=args.device, data_dir=args.data, scoring=args.scoring,
                                         item_head=not args.no_item_head)
    recs = rec.recommend(args.history, k=args.k, exclude="history" if args.exclude_history else None,
                         where=where, instruction=args.instruction, num_beams=args.num_beams)
    if args.json:
        print(json.dumps([r.to_dict() for r in recs], ensure_ascii=False, indent=2))
    else:
        print(recommendation_table(recs))
    return 0
