"""Load a base causal LM, add the item vocabulary, initialise the new rows, attach PEFT.

Fine-tuning modes (``model.mode`` in a recipe):

- ``qlora``: base weights in bitsandbytes 4-bit NF4 with double quantisation, LoRA adapters;
- ``lora``: base weights in ``model.dtype``, LoRA adapters;
- ``full``: every weight trains.

``model.base: scratch`` builds a randomly initialised LLaMA-architecture model (sizes in
``model.scratch``) around the tokenizer named by ``model.tokenizer``: a small from-scratch
recommender for CPU benchmarking. It trains in ``full`` mode only.

In the two LoRA modes only the new item / summary rows of the (tied) embedding matrix train,
through PEFT's ``trainable_token_indices``; the rest of the vocabulary stays frozen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from genrec.encoders.item_adapter import ID_STREAM, ITEM_MODULE, attach_item_adapter
from genrec.errors import ConfigError
from genrec.tasks.collate import SUMMARY_TOKEN
from genrec.training.aux import AUX_MODULE, attach_aux
from genrec.training.config import COMPACT, SCRATCH, SCRATCH_DEFAULTS, ModelConfig
from genrec.training.dropout import add_dropout

log = logging.getLogger(__name__)

def add_item_tokens(tokenizer: Any, item_tokens: Sequence[str]) -> list[int]:
    """Add item tokens and the summary token; return their ids (item tokens first, summary last).

    Raises :class:`ConfigError` when the base tokenizer already holds any of them (their rows
    would carry an unrelated meaning), and checks each token encodes to exactly one id with and
    without a preceding space.
    """
    from genrec.item_tokenizer.vocab import add_to_tokenizer

    wanted = list(item_tokens) + [SUMMARY_TOKEN]
    vocab = tokenizer.get_vocab()
    clash = [t for t in wanted if t in vocab]
    if clash:
        raise ConfigError(f"the base model's tokenizer already has {len(clash)} of the item tokens "
                          f"(e.g. {clash[:3]}); rebuild the item tokenizer with other token prefixes or use "
                          "a base model without them")
    add_to_tokenizer(tokenizer, wanted)
    ids = tokenizer.convert_tokens_to_ids(wanted)
    for t in (wanted[0], wanted[-2] if len(wanted) > 1 else wanted[0]):
        for text in (t, " " + t, "x" + t):
            got = tokenizer(text, add_special_tokens=False)["input_ids"]
            if got[-1:] != [tokenizer.convert_tokens_to_ids(t)] or (text == t and len(got) != 1):
                raise ConfigError(f"item token {t!r} does not tokenize as one token in {text!r} ({got}); "
                                  "the tokenizer does not honour added tokens")
    return list(ids)


@torch.no_grad()
def init_new_rows(model: Any, tokenizer: Any, new_ids: Sequence[int], how: str,
                  token_texts: dict[int, list[str]] | None = None, seed: int = 0) -> None:
    """Initialise embedding rows ``new_ids`` (input and, if untied, output embeddings).

    ``mean``: every new row = mean of the original rows. ``text``: row of token ``t`` = mean over
    ``token_texts[t]`` (titles of the items whose index contains ``t``) of each text's mean token
    embedding; tokens without texts fall back to ``mean``. ``random``: the model's own init
    (normal with the embedding's std).
    """
    emb = model.get_input_embeddings().weight
    new = torch.as_tensor(list(new_ids), dtype=torch.long, device=emb.device)
    keep = torch.ones(emb.shape[0], dtype=torch.bool, device=emb.device)
    keep[new] = False
    old = emb[keep].float()
    mean, std = old.mean(0), old.std()
    rows = mean.expand(len(new), -1).clone()
    if how == "random":
        g = torch.Generator().manual_seed(seed)
        rows = torch.randn(len(new), emb.shape[1], generator=g).to(emb.device) * std
    elif how == "text" and token_texts:
        for j, tid in enumerate(new.tolist()):
            texts = token_texts.get(tid)
            if not texts:
                continue
            vecs = []
            for text in texts:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                ids = [i for i in ids if keep[i]]
                if ids:
                    vecs.append(emb[torch.as_tensor(ids, device=emb.device)].float().mean(0))
            if vecs:
                rows[j] = torch.stack(vecs).mean(0)
    emb[new] = rows.to(emb.dtype)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != emb.data_ptr():
        out.weight[new] = out.weight[keep].float().mean(0).to(out.weight.dtype)


def build_model(cfg: ModelConfig, item_tokens: Sequence[str], token_texts: dict[str, list[str]] | None = None,
                seed: int = 0, aux_factory: Callable[[int], torch.nn.Module] | None = None,
                texts: tuple[Sequence[str], Sequence[str]] | None = None,
                item_table: torch.Tensor | None = None,
                row_keep: torch.Tensor | None = None) -> tuple[Any, Any, list[int]]:
    """``(model, tokenizer, new_token_ids)`` ready to train under ``cfg.mode``.

    ``token_texts`` maps an item token string to the texts used by the ``text`` init.
    ``aux_factory(hidden_size)`` builds the auxiliary-loss heads; they are attached to the base
    model as ``genrec_aux`` and, under LoRA, saved with the adapter (``modules_to_save``).
    ``texts``: ``(instruction texts, other training texts)``, the words of a ``compact`` tokenizer.
    ``item_table [N, D]``: item embeddings of the history-item adapter (``genrec_items``), attached
    and saved the same way; ``row_keep [N]`` (bool) names the items allowed a learned row
    (``model.item_row_min_count``).
    """
    from genrec.hub import load_causal_lm

    quant = "4bit" if cfg.mode == "qlora" else None
    if cfg.base == SCRATCH:
        model, tok = scratch_model(cfg, seed, texts)
    else:
        model, tok = load_causal_lm(cfg.base, dtype=cfg.dtype, quantization=quant,
                                    device=training_device() if quant else "cpu")
        if quant:
            keep_cpu_4bit_layout(model)
    new_ids = add_item_tokens(tok, item_tokens)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    by_id = {tok.convert_tokens_to_ids(t): v for t, v in (token_texts or {}).items()}
    init_new_rows(model, tok, new_ids, cfg.new_token_init, by_id, seed)
    model.config.pad_token_id = tok.pad_token_id
    if aux_factory is not None:
        attach_aux(model, aux_factory)
    if item_table is not None:
        adapter = attach_item_adapter(model, item_table, learned_rows=ID_STREAM in cfg.item_embeddings,
                                      row_dropout=cfg.item_row_dropout)
        if row_keep is not None:
            adapter.keep_rows(row_keep)
    if cfg.mode == "full":
        if cfg.dropout:
            log.info("dropout %.2f at %d places", cfg.dropout, add_dropout(model, cfg.dropout))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model, tok, new_ids
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    token_rows = {_module_name(model, model.get_input_embeddings(), "input embedding"): list(new_ids)}
    out = model.get_output_embeddings()
    if out is not None and out.weight is not model.get_input_embeddings().weight:
        # untied LM head: its new rows must train too, or the model could read but never emit items
        token_rows[_module_name(model, out, "output embedding")] = list(new_ids)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM",
                      trainable_token_indices=token_rows,
                      modules_to_save=([AUX_MODULE] if aux_factory is not None else [])
                      + ([ITEM_MODULE] if item_table is not None else []) or None)
    model = get_peft_model(model, lora)
    return model, tok, new_ids


def scratch_model(cfg: ModelConfig, seed: int = 0, texts: tuple[Sequence[str], Sequence[str]] | None = None
                  ) -> tuple[Any, Any]:
    """A randomly initialised ``LlamaForCausalLM`` (sizes ``SCRATCH_DEFAULTS`` | ``cfg.scratch``) and
    the tokenizer of ``cfg.tokenizer`` (``compact``: built from ``texts``); embeddings tied, seeded
    by ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from genrec.hub import as_dtype, load_tokenizer

    if cfg.tokenizer == COMPACT:
        from genrec.training.compact_tokenizer import compact_tokenizer

        always, corpus = texts if texts is not None else ((), ())
        tok = compact_tokenizer(always, corpus, cfg.compact_words)
        log.info("compact tokenizer: %d words", len(tok))
    else:
        tok = load_tokenizer(cfg.tokenizer)
    sizes = {**SCRATCH_DEFAULTS, **{k: int(v) for k, v in cfg.scratch.items()}}
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise ConfigError(f"model.scratch.hidden_size={sizes['hidden_size']} must be divisible by "
                          f"num_attention_heads={sizes['num_attention_heads']}")
    config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(as_dtype(cfg.dtype))
    log.info("scratch LLaMA: %s parameters (%s)", f"{sum(p.numel() for p in model.parameters()):,}",
             ", ".join(f"{k}={v}" for k, v in sizes.items()))
    return model, tok


def training_device() -> str:
    """Where a quantized model is placed at load time (the Trainer cannot move 4-bit weights):
    this process's GPU under ``accelerate``/``torchrun`` (``LOCAL_RANK``), else the CPU."""
    import os

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def keep_cpu_4bit_layout(model: torch.nn.Module) -> None:
    """Turn off bitsandbytes' in-place CPU repacking of 4-bit weights in eval mode.

    On CPUs with AVX512-BF16, ``Linear4bit`` rewrites its weight into an inference-only layout
    the first time it runs without gradients (e.g. the Trainer's evaluation). That layout fails
    for layers narrower than a quantization block and is not the layout training expects.
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # pragma: no cover - bitsandbytes is a dependency
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _module_name(model: Any, target: torch.nn.Module, what: str) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name.rsplit(".", 1)[-1]
    raise ConfigError(f"could not find the {what} module of the base model")


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
