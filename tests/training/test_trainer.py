"""The Trainer subclass trains LM + aux terms, logs each term, and saves the aux heads."""

import json

import pytest
import torch
from transformers import TrainingArguments

from genrec.tasks.collate import SUMMARY_TOKEN, Collator, render
from genrec.tasks.prompts import Example
from genrec.testing import make_tiny_llm
from genrec.training.aux import AuxLosses, find_aux
from genrec.training.config import ModelConfig
from genrec.training.losses import GlobalContrastiveLoss, ReconstructionLoss
from genrec.training.model import build_model
from genrec.training.trainer import GenRecTrainer, JsonlLogger

TOKENS = ["<s0_0>", "<s0_1>", "<b0_0>", "<b0_1>"]
CODES = [["<s0_0>", "<b0_0>"], ["<s0_0>", "<b0_1>"], ["<s0_1>", "<b0_0>"], ["<s0_1>", "<b0_1>"]]


def _aux(hidden):
    g = torch.Generator().manual_seed(0)
    sem, beh = torch.randn(4, 6, generator=g), torch.randn(4, 5, generator=g)
    codes = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    return AuxLosses(GlobalContrastiveLoss(hidden, {"semantic": sem, "behavior": beh}, num_negatives=8),
                     ReconstructionLoss(hidden, semantic=sem, codes=codes))


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_trainer_logs_terms_and_updates_aux(tmp_path, mode):
    base = make_tiny_llm(tmp_path / "base")
    model, tok, _ = build_model(ModelConfig(base=str(base), mode=mode, lora_r=4), TOKENS, aux_factory=_aux)
    sid = tok.convert_tokens_to_ids(SUMMARY_TOKEN)
    data = [render(Example("seqrec", f"which item next {i}", "".join(CODES[i % 4]), i % 4), tok, sid)
            for i in range(16)]
    aux_before = {n: p.detach().clone() for n, p in find_aux(model).named_parameters() if p.requires_grad}
    assert aux_before, "aux heads must be trainable"
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=4,
                             logging_steps=2, save_steps=4, learning_rate=1e-2, use_cpu=True, report_to=[],
                             remove_unused_columns=False, seed=0, disable_tqdm=True)
    weights = {"contrastive_semantic": 0.1, "contrastive_behavior": 0.1,
               "reconstruction_embedding": 0.1, "reconstruction_codes": 0.1}
    trainer = GenRecTrainer(model=model, args=args, train_dataset=data, data_collator=Collator(tok.pad_token_id),
                            loss_weights=weights, callbacks=[JsonlLogger(tmp_path / "log.jsonl")])
    trainer.train()
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    logged = {k for rec in logs for k in rec}
    for term in ["loss_lm", *[f"loss_{k}" for k in weights]]:
        assert term in logged
    after = dict(find_aux(model).named_parameters())
    assert any(not torch.equal(aux_before[n], after[n]) for n in aux_before)
    ckpt = tmp_path / "out" / "checkpoint-4"
    assert ckpt.is_dir()
    if mode == "lora":
        from safetensors.torch import load_file

        saved = load_file(ckpt / "adapter_model.safetensors")
        assert any("genrec_aux" in k for k in saved), "aux heads must be saved with the adapter"


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_response_only_logits_equal_the_models_own_loss(tmp_path, mode):
    from genrec.training.trainer import response_lm_loss, supports_response_logits

    base = make_tiny_llm(tmp_path / "base")
    model, tok, _ = build_model(ModelConfig(base=str(base), mode=mode, lora_r=4), TOKENS)
    sid = tok.convert_tokens_to_ids(SUMMARY_TOKEN)
    data = [render(Example("seqrec", "which item next " * (i + 1), "".join(CODES[i % 4]), i % 4), tok, sid)
            for i in range(5)]
    batch = Collator(tok.pad_token_id)(data)
    for key in ("aux_rows", "aux_pos", "aux_targets", "item_rows", "item_pos", "item_ids"):
        batch.pop(key)
    assert supports_response_logits(model)
    full = model(**batch).loss
    labels = batch.pop("labels")
    out = model(**batch, output_hidden_states=True, logits_to_keep=1)
    assert out.logits.shape[1] == 1
    ours = response_lm_loss(model, out.hidden_states[-1], labels)
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-6)
    ours.backward()  # gradients flow through the head on the kept positions


@pytest.mark.parametrize("tied", [True, False])
def test_reloading_a_tied_head_is_not_reported_missing(tmp_path, tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    from genrec.training.trainer import untied_missing_keys

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["lm_head.weight"]
    assert untied_missing_keys(model, result.missing_keys) == ([] if tied else ["lm_head.weight"])
    assert untied_missing_keys(model, ["model.norm.weight"]) == ["model.norm.weight"]
