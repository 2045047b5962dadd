"""Item vocabulary, new-row init and PEFT modes on a tiny LLaMA model."""

import pytest
import torch

from genrec.errors import ConfigError
from genrec.hub import load_causal_lm
from genrec.tasks.collate import SUMMARY_TOKEN
from genrec.testing import make_tiny_llm
from genrec.training.config import ModelConfig
from genrec.training.model import add_item_tokens, build_model, trainable_parameters

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


def test_untied_lm_head_trains_its_new_rows(tmp_path):
    untied = str(make_tiny_llm(tmp_path / "untied", tie=False))
    model, tok, new_ids = build_model(ModelConfig(base=untied, mode="lora", lora_r=4), TOKENS, None)
    head_before = model.get_output_embeddings()(torch.eye(32)).detach().clone()  # [H, V]: rows of W^T
    ids = torch.tensor([[5, 6, tok.convert_tokens_to_ids("<s0_1>"), tok.convert_tokens_to_ids("<b0_0>")]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    head_after = model.get_output_embeddings()(torch.eye(32)).detach()
    old = [i for i in range(len(tok)) if i not in new_ids]
    assert torch.allclose(head_after[:, old], head_before[:, old])
    assert not torch.allclose(head_after[:, new_ids[2]], head_before[:, new_ids[2]])


def test_scratch_model_is_seeded_and_full_only(tiny):
    cfg = ModelConfig(base="scratch", tokenizer=tiny, mode="full",
                      scratch={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 4, "num_key_value_heads": 2})
    a, tok, _ = build_model(cfg, TOKENS, None, seed=3)
    b, _, _ = build_model(cfg, TOKENS, None, seed=3)
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 1
    assert a.get_input_embeddings().weight.shape[0] == len(tok)
    assert torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="mode: full"):
        ModelConfig(base="scratch", mode="lora")
    with pytest.raises(ValueError, match="unknown model.scratch"):
        ModelConfig(base="scratch", mode="full", scratch={"hidden": 8})


def test_dropout_acts_in_training_only(tiny):
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}
    plain, tok, _ = build_model(ModelConfig(base="scratch", tokenizer=tiny, mode="full", scratch=sizes), TOKENS,
                                None, seed=3)
    drop, _, _ = build_model(ModelConfig(base="scratch", tokenizer=tiny, mode="full", scratch=sizes,
                                         dropout=0.3), TOKENS, None, seed=3)
    ids = torch.tensor([tok.encode("hello world <s0_1><b0_0>")])
    assert drop.config.attention_dropout == 0.3
    assert all(m.attention_dropout == 0.3 for m in drop.modules() if hasattr(m, "o_proj"))
    drop.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(drop(ids).logits, plain(ids).logits)  # same weights, no dropout in eval mode
        drop.train()
        torch.manual_seed(0)
        first = drop(ids).logits
        torch.manual_seed(1)
        second = drop(ids).logits
    assert not torch.allclose(first, second) and not torch.allclose(first, plain(ids).logits)


def test_dropout_config_errors():
    with pytest.raises(ValueError, match=r"model.dropout must be in \[0, 1\)"):
        ModelConfig(base="scratch", mode="full", dropout=1.0)
    with pytest.raises(ValueError, match="lora_dropout"):
        ModelConfig(mode="lora", dropout=0.1)


def test_dropout_needs_a_llama_family_model():
    from genrec.training.dropout import add_dropout

    class Bare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(4, 2)

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.emb

    with pytest.raises(ConfigError, match="LLaMA-family"):
        add_dropout(Bare(), 0.1)
    assert add_dropout(Bare(), 0.0) == 0
