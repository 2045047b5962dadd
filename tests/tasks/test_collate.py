"""Rendering masks the prompt, keeps item tokens whole and points at the summary token."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AddedToken, PreTrainedTokenizerFast

from genrec.tasks.collate import IGNORE_INDEX, SUMMARY_TOKEN, Collator, render
from genrec.tasks.prompts import Example


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = ["a user interacted with these items in order", "which item next", "title of the item"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    hf.add_tokens([AddedToken(t, lstrip=True, normalized=False) for t in ["<s0_1>", "<s1_2>", SUMMARY_TOKEN]])
    return hf


def test_render_masks_prompt_and_targets_response(tokenizer):
    sid = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
    r = render(Example("seqrec", "which item next", "<s0_1><s1_2>", target=7), tokenizer, sid)
    assert r.input_ids[r.summary_pos] == sid
    trained = [t for t, lab in zip(r.input_ids, r.labels) if lab != IGNORE_INDEX]
    assert tokenizer.convert_ids_to_tokens(trained) == ["<s0_1>", "<s1_2>", "<eos>"]
    assert all(lab == IGNORE_INDEX for lab in r.labels[: r.summary_pos + 1])


def test_long_prompt_is_left_truncated(tokenizer):
    sid = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
    r = render(Example("seqrec", "a user interacted " * 200, "<s0_1>", 1), tokenizer, sid, max_length=64)
    assert len(r.input_ids) <= 64 and r.input_ids[r.summary_pos] == sid


def test_collator_pads_right(tokenizer):
    sid = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
    rs = [render(Example("seqrec", p, "<s0_1>", 3), tokenizer, sid) for p in ["which item next", "title"]]
    batch = Collator(tokenizer.pad_token_id)(rs)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = min(range(2), key=lambda b: len(rs[b].input_ids))
    assert batch["attention_mask"][short].sum() == len(rs[short].input_ids)
    assert (batch["labels"][short][batch["attention_mask"][short] == 0] == IGNORE_INDEX).all()
    assert batch["aux_targets"].tolist() == [3, 3] and batch["aux_rows"].tolist() == [0, 1]
    assert batch["aux_pos"].tolist() == [r.summary_pos for r in rs]
    assert batch["item_ids"].numel() == 0  # window examples carry no history-item positions


def test_lazy_examples_match_eager_rendering_and_check_budget(tokenizer):
    from genrec.tasks.collate import RenderedExamples

    sid = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
    exs = [Example("seqrec", "which item next " * (i + 1), "<s0_1><s1_2>", i) for i in range(4)]
    exs.append(Example("index2item", "title of the item", "title of the item " * 3, -1))
    lazy = RenderedExamples(exs, tokenizer, sid, max_length=128)
    assert len(lazy) == 5 and not lazy._cache
    for i in (3, 0, 4):
        assert lazy[i] == render(exs[i], tokenizer, sid, max_length=128)
    assert sorted(lazy._cache) == [0, 3, 4]
    with pytest.raises(ValueError, match="index2item example has .* tokens"):
        RenderedExamples(exs, tokenizer, sid, max_length=12)
