"""The model of a run or export directory, loaded on this machine.

A directory with a PEFT adapter (``adapter_config.json``) loads its base model through the run's
``base_model.json`` (:func:`genrec.hub.resolve_base`: the recorded local path if it exists, else
the embedded default or the canonical hub id; runs written without that record use
``model.base`` of ``config.yaml``), **without quantisation** in ``dtype``, resizes its
embeddings to the run's tokenizer, attaches the history-item adapter when the run has one, and
applies (and optionally merges) the LoRA adapter. A directory with full weights (a ``full``
run, a merged export) is loaded as it is. The auxiliary heads saved with an adapter are not
needed and are not loaded.

``dequantize=True`` (used by ``genrec export --merge`` for QLoRA runs) loads the base in 4-bit
NF4 as QLoRA trained it and dequantizes it before the adapter is merged, so the merged weights
reproduce the training-time model rather than the float base.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from genrec import run_dir as layout
from genrec.errors import ConfigError
from genrec.hub import ModelSource, load_causal_lm, quiet_load_report, resolve_base, resolve_model


def load_run_tokenizer(run: str | Path) -> Any:
    """The extended tokenizer saved in ``run`` (pad token = EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def base_source(run: str | Path, cfg: Mapping[str, Any]) -> ModelSource:
    """Where the base model of ``run`` is on this machine (see the module docstring)."""
    record = layout.read_base(run)
    try:
        return resolve_base(record) if record else resolve_model(str((cfg.get("model") or {}).get("base", "")))
    except ConfigError as e:
        raise ConfigError(f"{e} (the base model of {run}: {layout.BASE_MODEL}, `model.base` in its "
                          f"{layout.CONFIG})") from None


def load_run_model(run: str | Path, cfg: Mapping[str, Any], tok: Any, table: torch.Tensor | None = None, *,
                   device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32", merge: bool = True,
                   dequantize: bool = False) -> Any:
    """The model of ``run`` in ``dtype`` on ``device`` (``table [N, D]``: the item table of a run
    with history-item embeddings; ``merge``: fold LoRA into the base weights)."""
    from genrec.encoders.item_adapter import ID_STREAM, attach_item_adapter, load_item_adapter

    run = Path(run)
    if not layout.has_adapter(run):
        with quiet_load_report(table is not None):  # its genrec_items keys are loaded below
            model, _ = load_causal_lm(str(run), dtype=dtype, device=str(device))
        if table is not None:
            load_item_adapter(model, table, run / layout.FULL_WEIGHTS)
        return model
    from peft import PeftModel

    src = base_source(run, cfg)
    try:
        model = _dequantized(src, dtype) if dequantize else load_causal_lm(src, dtype=dtype, device=str(device))[0]
    except ConfigError as e:
        raise ConfigError(f"{e} (the base model of {run})") from None
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    if table is not None:  # its trained weights come with the adapter (modules_to_save)
        streams = (cfg.get("model") or {}).get("item_embeddings") or []
        attach_item_adapter(model, table, learned_rows=ID_STREAM in streams)
    model = PeftModel.from_pretrained(model, str(run))
    if merge:
        model = model.merge_and_unload()
    return model.to(device)


def _dequantized(src: ModelSource, dtype: str | torch.dtype) -> Any:
    """The base model loaded in 4-bit NF4 (as QLoRA trains it) and dequantized to ``dtype``."""
    try:
        model, _ = load_causal_lm(src, dtype=dtype, device="cuda" if torch.cuda.is_available() else "cpu",
                                  quantization="4bit")
        model = model.dequantize()
    except (ImportError, RuntimeError, ValueError, NotImplementedError, AttributeError) as e:
        raise ConfigError(f"cannot dequantize the 4-bit base model {src.name!r} to merge the QLoRA adapter into it "
                          f"({type(e).__name__}: {e}); export without --merge (adapter + base reference) "
                          "instead") from None
    return model.to("cpu")
