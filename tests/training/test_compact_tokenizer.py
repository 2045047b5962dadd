"""The compact word-level tokenizer: instruction words always, the most frequent corpus words up to
the budget, <unk> for the rest; item tokens stay single tokens; it saves and reloads unchanged."""

from transformers import AutoTokenizer

from genrec.item_tokenizer.vocab import add_to_tokenizer
from genrec.training.compact_tokenizer import compact_tokenizer, words


def test_vocabulary_budget_and_unknown_words(tmp_path):
    tok = compact_tokenizer(["### Instruction:\n{prompt}", "Predict each next item."],
                            ["red pen red pen red", "blue pen", "green <s0_3> thing"], max_words=2)
    vocab = tok.get_vocab()
    assert {"Predict", "item", "Instruction", "###", "{", "prompt"} <= set(vocab)
    assert {"pen", "red"} <= set(vocab) and "blue" not in vocab and "<s0_3>" not in vocab
    assert words("a <s1_2>, b") == ["a", ",", "b"]
    ids = tok("red blue pen", add_special_tokens=False)["input_ids"]
    assert ids[1] == tok.unk_token_id and tok.eos_token == "<eos>" and tok.pad_token == "<pad>"
    add_to_tokenizer(tok, ["<s0_3>", "<s1_2>"])
    got = tok("Predict <s0_3><s1_2>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(got) == ["Predict", "<s0_3>", "<s1_2>"]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("Predict <s0_3><s1_2> red", add_special_tokens=False)["input_ids"] == got + [vocab["red"]]
    assert len(again) == len(tok)
