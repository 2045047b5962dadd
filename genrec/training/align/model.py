"""The run an alignment starts from: checked against the data, loaded as a trainable policy.

A ``full`` run is loaded from its own weights; a ``lora`` / ``qlora`` run as its base model (4-bit
NF4 again for ``qlora``) with the run's extended vocabulary and its adapter loaded *trainable*,
so the alignment continues the same adapter (LoRA matrices and the item-token rows of the
embedding matrix) and is saved in the same form. Everything is checked before anything loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genrec import run_dir as layout
from genrec.data.dataset import Dataset
from genrec.errors import ConfigError, DataError
from genrec.io import read_json, sha256_file

log = logging.getLogger(__name__)
DATA_FILES = ("items.jsonl", "sequences.jsonl")


@dataclass
class StartRun:
    """The starting run's directory, resolved config and dataset directory (nothing loaded)."""

    path: Path
    config: dict[str, Any]
    data: Path

    @property
    def mode(self) -> str:
        return str((self.config.get("model") or {}).get("mode", "lora"))

    @property
    def tasks(self) -> dict[str, Any]:
        return self.config.get("tasks") or {}

    @property
    def sequence_format(self) -> bool:
        return bool((self.tasks.get("mix") or {}).get("sequence"))

    def identity(self) -> dict[str, str]:
        """sha256 of the files that identify the run's model (``run_dir.IDENTITY_FILES``)."""
        return {f: sha256_file(self.path / f) for f in layout.IDENTITY_FILES if (self.path / f).is_file()}


def check_start_run(run: str | Path, data: str | Path | None, output: Path) -> StartRun:
    """The run at ``run``, checked: finished, loadable, without history-item embeddings, not the
    output directory, and trained on ``data`` (default: its recorded dataset). Raises
    :class:`ConfigError` / :class:`DataError` naming the problem and the fix."""
    path = Path(run)
    if not path.is_dir() or not layout.is_finished(path):
        raise ConfigError(f"run={run} is not a finished genrec run directory (README.md missing); point run= at a "
                          "directory written by `genrec train` (or `genrec align`), e.g. run=runs/scientific-tiny")
    try:
        layout.require_loadable(path)
    except DataError as e:
        raise ConfigError(f"run={run}: {e}") from None
    if path.resolve() == output.resolve():
        raise ConfigError(f"the output run {output} is the starting run; choose another name= or output_dir=")
    cfg = layout.read_config(path)
    if (cfg.get("model") or {}).get("item_embeddings"):
        raise ConfigError(f"run {run} adds history-item embeddings (model.item_embeddings), which the preference "
                          "trainers cannot feed; align a run trained without them")
    recorded = Path(str(cfg.get("data", "")))
    data_dir = Path(data) if data else recorded
    if not (data_dir / "items.jsonl").is_file():
        where = f"data={data}" if data else f"the dataset recorded in {path / layout.CONFIG} ({recorded})"
        raise DataError(f"{where} is not a genrec dataset directory (items.jsonl is missing); pass the dataset the "
                        "run was trained on with data=DIR")
    _check_same_data(path, data_dir)
    return StartRun(path, cfg, data_dir)


def _check_same_data(run: Path, data: Path) -> None:
    """:class:`DataError` unless ``data``'s files have the sha256 the run's provenance recorded."""
    prov = run / layout.PROVENANCE
    inputs = read_json(prov).get("inputs", {}) if prov.is_file() else {}
    for name in DATA_FILES:
        want = next((v for k, v in inputs.items() if Path(k).name == name), None)
        if want is None:
            continue
        if not (data / name).is_file() or sha256_file(data / name) != want:
            raise DataError(f"run {run} was trained on other data than {data} ({name} differs from the sha256 in "
                            f"{prov}); pass the dataset the run was trained on with data=DIR (or leave data= empty "
                            "to use the one recorded in its config.yaml)")


@dataclass
class Policy:
    """The loaded starting run: ``model`` (trainable), ``tokenizer``, catalog and index tokens."""

    model: Any
    tokenizer: Any
    dataset: Dataset
    codes: list[list[str]]  # index tokens per item
    item_ids: list[list[int]]  # index token ids per item
    trie: Any  # genrec.generation.ItemTrie of the catalog
    summary_id: int


def load_policy(start: StartRun, dtype: str | None = None) -> Policy:
    """Load ``start`` as a trainable policy on the training device (see the module docstring)."""
    from transformers import AutoTokenizer

    from genrec.generation import ItemTrie, item_token_ids
    from genrec.hub import load_causal_lm, resolve_base
    from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer
    from genrec.tasks.collate import SUMMARY_TOKEN
    from genrec.training.model import keep_cpu_4bit_layout, training_device

    ds = Dataset.load(start.data)
    codes = item_codes(load_item_tokenizer(start.path / layout.ITEM_TOKENIZER), ds)
    mcfg = start.config.get("model") or {}
    dtype = dtype or str(mcfg.get("dtype", "float32"))
    device = training_device()
    tok = AutoTokenizer.from_pretrained(start.path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if start.mode == "full":
        model, _ = load_causal_lm(str(start.path), dtype=dtype, device=device)
    else:
        from peft import PeftModel, prepare_model_for_kbit_training

        quant = "4bit" if start.mode == "qlora" else None
        record = layout.read_base(start.path)
        try:
            base = resolve_base(record) if record is not None else str(mcfg.get("base", ""))
            model, _ = load_causal_lm(base, dtype=dtype, quantization=quant, device=device)
        except ConfigError as e:
            raise ConfigError(f"{e} (the base model of {start.path}, `model.base` in its config.yaml)") from None
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        if quant:
            keep_cpu_4bit_layout(model)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = PeftModel.from_pretrained(model, str(start.path), is_trainable=True)
    model.config.pad_token_id = tok.pad_token_id
    ids = item_token_ids(codes, tok)
    vocab = model.get_input_embeddings().weight.shape[0]
    trie = ItemTrie.from_sequences(ids, tok.eos_token_id, max(len(tok), vocab))
    log.info("loaded %s (%s, %s on %s): %d items", start.path, mcfg.get("base"), start.mode, device, len(ds.items))
    summary = tok.convert_tokens_to_ids(SUMMARY_TOKEN)
    return Policy(model, tok, ds, codes, ids, trie, int(summary))


def frozen_copy(model: Any) -> Any:
    """A frozen deep copy of a ``full``-mode model: the DPO reference (LoRA runs need none)."""
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
