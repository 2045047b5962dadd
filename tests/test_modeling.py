"""Item vocabulary, new-row init and PEFT modes on a tiny LLaMA model."""

import pytest
import torch

from genrec.errors import ConfigError
from genrec.modeling import ModelConfig, add_item_tokens, build_model, trainable_parameters
from genrec.models import load_causal_lm
from genrec.tasks.collate import SUMMARY_TOKEN
from tests.tiny_llm import make_tiny_llm

TOKENS = ["<s0_0>", "<s0_1>", "<s1_0>", "<s1_1>", "<b0_0>", "<b0_1>"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_llm(tmp_path_factory.mktemp("tiny")))


def test_item_tokens_never_split(tiny):
    _, tok = load_causal_lm(tiny)
    ids = add_item_tokens(tok, TOKENS)
    assert len(ids) == len(TOKENS) + 1 and tok.convert_ids_to_tokens(ids[-1]) == SUMMARY_TOKEN
    enc = tok("next <s0_1><s1_0> and<b0_1>", add_special_tokens=False)["input_ids"]
    toks = tok.convert_ids_to_tokens(enc)
    for t in ("<s0_1>", "<s1_0>", "<b0_1>"):
        assert t in toks
    assert "Ġ" not in toks


def test_conflicting_tokens_rejected(tiny):
    _, tok = load_causal_lm(tiny)
    tok.add_tokens(["<s0_0>"])
    with pytest.raises(ConfigError, match="already has"):
        add_item_tokens(tok, TOKENS)


def test_text_init_uses_item_titles(tiny):
    texts = {"<s0_0>": ["toy story"], "<s0_1>": ["drama comedy action"]}
    model, tok, new_ids = build_model(ModelConfig(base=tiny, mode="full", new_token_init="text"), TOKENS, texts)
    emb = model.get_input_embeddings().weight
    ref = emb[tok("toy story", add_special_tokens=False)["input_ids"]].mean(0)
    assert torch.allclose(emb[new_ids[0]], ref, atol=1e-6)
    assert not torch.allclose(emb[new_ids[0]], emb[new_ids[1]])


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_lora_modes_train_only_adapters_and_new_rows(tiny, mode):
    model, tok, new_ids = build_model(ModelConfig(base=tiny, mode=mode, lora_r=4), TOKENS, None)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total
    before = model.get_input_embeddings().weight.detach().clone()
    ids = torch.tensor([[tok.convert_tokens_to_ids("<s0_1>"), 5, 6, tok.convert_tokens_to_ids("<b0_0>")]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    # Effective embedding after the step: frozen vocabulary rows stay put, the added rows move.
    out = model.get_input_embeddings()(torch.arange(len(tok)).unsqueeze(0))[0].detach().float()
    old = [i for i in range(len(tok)) if i not in new_ids]
    assert torch.allclose(out[old], before[old].float())
    assert not torch.allclose(out[new_ids[1]], before[new_ids[1]].float())
