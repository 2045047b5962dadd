"""The ``sequence`` task: stretches cover every transition once, rendering labels every item after
the first, and a served prompt is exactly a prefix of the training example it continues."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AddedToken, PreTrainedTokenizerFast

from genrec.data.dataset import Dataset, Item
from genrec.data.split import leave_one_out
from genrec.tasks.collate import (
    IGNORE_INDEX,
    SUMMARY_TOKEN,
    Collator,
    RenderedExamples,
    history_prompt,
    render_sequence,
)
from genrec.tasks.prompts import TaskBuilder, sequence_stretches

CODES = [[f"<s0_{k % 3}>", f"<s1_{k}>"] for k in range(8)]


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = ["predict each next item of this user's history, oldest first", "instruction response"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tokens = sorted({t for c in CODES for t in c}) + [SUMMARY_TOKEN]
    hf.add_tokens([AddedToken(t, lstrip=True, normalized=False) for t in tokens])
    return hf


def _ids(tok, k):
    return tok("".join(CODES[k]), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("length", [2, 3, 5, 21])
def test_stretches_cover_every_transition_exactly_once(length):
    seqs = [np.arange(n) + 100 * n for n in (0, 1, 2, 3, 7, 12)]
    stretches = sequence_stretches(seqs, length)
    assert all(2 <= len(s) <= length for s in stretches)
    got = sorted((int(s[j - 1]), int(s[j])) for s in stretches for j in range(1, len(s)))
    want = sorted((int(s[t - 1]), int(s[t])) for s in seqs for t in range(1, len(s)))
    assert got == want


def test_sequence_examples_come_from_training_prefixes_only():
    items = [Item(item_id=f"i{k}", title=f"T{k}") for k in range(8)]
    ds = Dataset(items=items, users=["a", "b"], sequences=[np.array([0, 1, 2, 3, 4, 5]), np.array([6, 7, 5])])
    split = leave_one_out(ds)
    examples = list(TaskBuilder(ds.items, CODES, max_history=2, seed=0).iter_examples(split, {"sequence": 1.0}))
    assert all(ex.task == "sequence" and ex.response == "" for ex in examples)
    assert [list(ex.items) for ex in examples] == [[1, 2, 3], [0, 1]]  # user a's prefix [0..3]; b's is too short


def test_render_labels_every_item_after_the_first(tokenizer):
    sid = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
    tb = TaskBuilder([Item(item_id=str(k)) for k in range(8)], CODES)
    r = render_sequence(tb.make("sequence", [4, 1, 6]), tokenizer, sid, 256, False, lambda k: _ids(tokenizer, k))
    eos = tokenizer.eos_token_id
    trained = [t for t, lab in zip(r.input_ids, r.labels) if lab != IGNORE_INDEX]
    assert trained == _ids(tokenizer, 1) + [eos] + _ids(tokenizer, 6) + [eos]
    # the summary state of each labelled item is the EOS closing the previous one
    assert [r.input_ids[p] for p in r.aux_pos] == [eos, eos] and list(r.aux_targets) == [1, 6]
    # the adapter position of each item is its last index token
    assert [r.input_ids[p] for p in r.item_pos] == [_ids(tokenizer, k)[-1] for k in (4, 1, 6)]
    assert list(r.item_ids) == [4, 1, 6]
    batch = Collator(tokenizer.pad_token_id)([r, r])
    assert batch["item_rows"].tolist() == [0, 0, 0, 1, 1, 1] and batch["aux_targets"].tolist() == [1, 6, 1, 6]


@pytest.mark.parametrize("room", [None, 10, 4])
def test_serving_prompt_is_a_prefix_of_the_training_example(tokenizer, room):
    """Same budget in training (max_length) and serving (max_length - trie depth): the served
    prompt of a history is the training example of history + target, cut before the target."""
    from genrec.tasks.collate import prompt_ids

    sid = tokenizer.convert_tokens_to_ids(SUMMARY_TOKEN)
    items = [Item(item_id=str(k), title=f"title {k}") for k in range(8)]
    tb = TaskBuilder(items, CODES, max_history=20)
    ids = [_ids(tokenizer, k) for k in range(8)]
    history, target = [3, 0, 5, 2, 7, 1], 6
    example = tb.make("sequence", history + [target])
    head = prompt_ids(tokenizer, example.prompt, sid, 512, False)
    max_length = 512 if room is None else len(head) + room  # room for a few items only
    rendered = RenderedExamples([example], tokenizer, sid, max_length, False, tb.index)[0]
    depth = len(ids[target]) + 1
    prompt, (pos, kept) = history_prompt(tokenizer, sid, history, tb.index, tb.titles, ids, 20,
                                         max_length - depth, False, sequence=True)
    assert rendered.input_ids == prompt + ids[target] + [tokenizer.eos_token_id]
    assert kept == (history if room is None else history[-len(kept):]) and len(kept) >= 1
    assert [prompt[p] for p in pos] == [ids[k][-1] for k in kept]
    assert RenderedExamples([example], tokenizer, sid, 512, False, tb.index).lengths()[0] > len(history)


def test_sequence_examples_need_the_index(tokenizer):
    tb = TaskBuilder([Item(item_id=str(k)) for k in range(8)], CODES)
    with pytest.raises(ValueError, match="index strings"):
        RenderedExamples([tb.make("sequence", [1, 2])], tokenizer, 0)
