"""``genrec export``: a self-contained copy of a run, to serve it on another machine.

::

    genrec export runs/ml100k-smollm2 --out exports/ml100k-smollm2 --merge

writes, atomically (a temporary sibling directory renamed into place; an existing ``--out`` is
refused)::

    OUT/model.safetensors, config.json        --merge: LoRA folded into the base weights (QLoRA: into
                                              the dequantized 4-bit base it trained on); plain
                                              transformers loads it (AutoModelForCausalLM)
    OUT/adapter_model.safetensors, ...        without --merge: the adapter; base_model.json names the
                                              base (local path, canonical hub id, embedded default)
    OUT/tokenizer.json ...                    the extended tokenizer (AutoTokenizer)
    OUT/item_tokenizer/  OUT/catalog.jsonl    item codes and the catalog
    OUT/config.yaml, provenance.json, base_model.json   the run's records
    OUT/export.json                           source run, merged or not, versions, checksums
    OUT/README.md                             model card: Hugging Face metadata, how to load it

A ``full``-mode run holds full weights already; they are copied as they are. ``genrec
recommend --model OUT``, ``genrec serve --model OUT`` and ``GenRecommender.from_pretrained(OUT)``
load an export like a run. A run written before runs carried their catalog needs ``--data``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from genrec import run_dir as layout
from genrec.errors import ConfigError
from genrec.inference.catalog import load_catalog, write_catalog
from genrec.io import atomic_dir, checksums, provenance, write_json

log = logging.getLogger(__name__)

# Files of a run that an export leaves out (rewritten, or training-only).
SKIPPED = {layout.CARD, layout.TRAIN_LOG, layout.LOSS_CURVE, layout.CATALOG}
ADAPTER_FILES = {layout.ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin"}


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False, data_dir: str | Path | None = None) -> Path:
    """Write the export of ``run_dir`` to ``out`` (see the module docstring); returns ``out``.

    ``merge``: merged full weights instead of adapter + base reference. ``data_dir``: the
    dataset whose items become the catalog, for runs without ``catalog.jsonl``.
    """
    run = layout.require_loadable(run_dir)
    out = Path(out)
    if out.exists():
        raise ConfigError(f"--out {out} already exists; export writes a new directory, choose another path")
    cfg = layout.read_config(run)
    items, _ = load_catalog(run, cfg, data_dir)
    mcfg = cfg.get("model") or {}
    merged = merge and layout.has_adapter(run)
    if merge and not merged:
        log.info("%s holds full weights already; copying them", run)
    with atomic_dir(out, overwrite=False) as tmp:
        for f in sorted(run.iterdir()):
            if f.is_file() and f.name not in SKIPPED and not (merged and f.name in ADAPTER_FILES):
                shutil.copy2(f, tmp / f.name)
        shutil.copytree(run / layout.ITEM_TOKENIZER, tmp / layout.ITEM_TOKENIZER)
        write_catalog(items, tmp / layout.CATALOG)
        if merged:
            _write_merged(run, cfg, items, tmp)
        weights = [tmp / f for f in ("model.safetensors", "adapter_model.safetensors")]
        write_json(tmp / layout.EXPORT, provenance(
            {"run": str(run.resolve()), "merge": merged, "dequantized": merged and mcfg.get("mode") == "qlora",
             "data": str(data_dir) if data_dir is not None else None},
            inputs={Path(k).name: v for k, v in checksums(weights + [tmp / layout.CATALOG]).items()}))
        (tmp / layout.CARD).write_text(export_card(run, out, cfg, merged, len(items)), encoding="utf-8")
    log.info("exported %s to %s (%s)", run, out, "merged weights" if merged else
             "full weights" if not layout.has_adapter(run) else "adapter + base reference")
    return out


def _write_merged(run: Path, cfg: dict[str, Any], items: list[Any], out: Path) -> None:
    """Save the run's model with its LoRA merged (QLoRA: into the dequantized 4-bit base) to ``out``."""
    from genrec.data.dataset import Dataset
    from genrec.encoders.item_adapter import item_table
    from genrec.inference.weights import load_run_model, load_run_tokenizer
    from genrec.item_tokenizer.artifact import load_item_tokenizer, stream_tables

    mcfg = cfg.get("model") or {}
    streams = list(mcfg.get("item_embeddings") or [])
    table = None
    if streams:
        itok = load_item_tokenizer(run / layout.ITEM_TOKENIZER)
        table = item_table(stream_tables(itok, Dataset(items=items, users=[], sequences=[])), streams)
    tok = load_run_tokenizer(run)
    model = load_run_model(run, cfg, tok, table, device="cpu", dtype=mcfg.get("dtype", "float32"), merge=True,
                           dequantize=mcfg.get("mode") == "qlora")
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)


def export_card(run: Path, out: Path, cfg: dict[str, Any], merged: bool, num_items: int) -> str:
    """The export's model card: the run card's metadata with genrec's fields, how to load the
    export, and the run card's description of the training (its own loading section left out)."""
    text = (run / layout.CARD).read_text(encoding="utf-8") if (run / layout.CARD).is_file() else ""
    meta, body = layout.split_card(text)
    base = layout.read_base(run) or {}
    canonical = base.get("canonical")
    adapter = layout.has_adapter(run) and not merged
    meta = layout.card_metadata(meta, canonical, "peft" if adapter else "transformers",
                                "adapter" if adapter else "finetune")
    kind = "merged weights" if merged else "adapter + base reference" if adapter else "full weights"
    base_name = canonical or base.get("name") or (cfg.get("model") or {}).get("base", "")
    if adapter:
        plain = f"""```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{out.name}")
base = AutoModelForCausalLM.from_pretrained("{base_name}")
base.resize_token_embeddings(len(tok))
model = PeftModel.from_pretrained(base, "{out.name}")
```"""
    else:
        plain = f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{out.name}")
model = AutoModelForCausalLM.from_pretrained("{out.name}")
```"""
    return layout.join_card(meta, f"""# genrec recommender: {cfg.get('name', run.name)} (export)

Exported by `genrec export` from `{run}` ({kind}). Base model: `{base_name}`. Catalog:
{num_items:,} items (`catalog.jsonl`); item codes in `item_tokenizer/`; recipe in `config.yaml`.

## Load it

With genrec (no dataset directory needed): `genrec recommend --model {out.name} --history ITEM_ID ...`,
`genrec serve --model {out.name}`, or
`GenRecommender.from_pretrained("{out.name}")`{" (the base model is found through `base_model.json`: its local path if it exists, else the embedded default or the hub id)" if adapter else ""}.

With plain transformers{" + peft" if adapter else ""} (the model generates item-code tokens; prompts as genrec renders them):

{plain}

{_without_load_section(body)}""")


def _without_load_section(body: str) -> str:
    """The run card's body without its title and its ``## Load it`` section (paths of the run)."""
    keep, skipping = [], False
    for line in body.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("## "):
            skipping = line.strip() == "## Load it"
        if not skipping:
            keep.append(line)
    return "\n".join(keep).strip()


def main(args: argparse.Namespace) -> int:
    """``genrec export``."""
    out = export_run(args.run, args.out, merge=args.merge, data_dir=args.data)
    print(out)
    return 0
