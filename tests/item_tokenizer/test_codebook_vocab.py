"""Token spelling, index parsing, disambiguation and code statistics."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.errors import DataError
from genrec.item_tokenizer.codebook import Codebook, collision_rate, disambiguate
from genrec.item_tokenizer.stats import entropy_bits, level_stats
from genrec.item_tokenizer.vocab import (
    add_to_tokenizer,
    codes_to_tokens,
    index_string,
    parse_index,
    parse_token,
    token,
    tokens_to_codes,
    vocabulary,
)

KS = {"semantic": [4, 3], "behavior": [5, 2]}


def _codebook(sem: list[list[int]], beh: list[list[int]]) -> Codebook:
    ids = [f"i{i}" for i in range(len(sem))]
    return Codebook.from_streams(ids, {"semantic": np.array(sem), "behavior": np.array(beh)}, KS,
                                 ["semantic", "behavior"])


def test_token_spelling_and_parsing():
    assert token("s", 0, 12) == "<s0_12>" and token("b", 1, 200) == "<b1_200>" and token("d", None, 3) == "<d_3>"
    assert parse_token("<b1_200>") == ("b", 1, 200) and parse_token("<d_3>") == ("d", None, 3)
    assert parse_index("<s0_12><s1_40> <b0_7><b1_200>") == ["<s0_12>", "<s1_40>", "<b0_7>", "<b1_200>"]
    with pytest.raises(DataError, match="not a sequence of item tokens"):
        parse_index("<s0_12>junk<b0_1>")
    with pytest.raises(DataError, match="not an item token"):
        parse_token("<s0_x>")


def test_codes_round_trip_through_strings():
    cb = _codebook([[0, 1], [3, 2], [3, 2]], [[4, 0], [1, 1], [1, 1]])
    layout = cb.layout
    assert layout == [("s", 0), ("s", 1), ("b", 0), ("b", 1)]
    for row, toks in zip(cb.codes, cb.item_tokens()):
        text = index_string(toks)
        assert tokens_to_codes(parse_index(text), layout) == row.tolist()
        assert codes_to_tokens(row, layout) == toks[:4]
    back = Codebook.from_item_tokens(dict(zip(cb.item_ids, cb.item_tokens())), KS, ["semantic", "behavior"])
    assert np.array_equal(back.codes, cb.codes) and np.array_equal(back.disamb, cb.disamb)


def test_collisions_get_disambiguation_tokens_only_where_needed():
    cb = _codebook([[0, 1], [3, 2], [3, 2], [1, 0], [3, 2]], [[4, 0], [1, 1], [1, 1], [0, 0], [1, 1]])
    assert cb.disamb.tolist() == [-1, 0, 1, -1, 2]
    assert cb.collision_rate == pytest.approx(1 - 3 / 5)  # 3 distinct indices among 5 items
    assert cb.unique_rate == 1.0
    toks = cb.item_tokens()
    assert toks[0] == ["<s0_0>", "<s1_1>", "<b0_4>", "<b1_0>"]
    assert toks[4][-1] == "<d_2>" and toks[1][-1] == "<d_0>"
    # no index is a proper prefix of another (a decoder can stop at a complete index)
    strings = [index_string(t) for t in toks]
    assert not any(a != b and b.startswith(a) for a in strings for b in strings)
    assert cb.vocabulary()[-3:] == ["<d_0>", "<d_1>", "<d_2>"]


def test_order_puts_behavior_first_when_asked():
    ids = ["a", "b"]
    cb = Codebook.from_streams(ids, {"semantic": np.array([[1, 2], [0, 0]]), "behavior": np.array([[3, 1], [0, 1]])},
                               KS, ["behavior", "semantic"])
    assert cb.item_tokens()[0] == ["<b0_3>", "<b1_1>", "<s0_1>", "<s1_2>"]


def test_vocabulary_is_stable_and_complete():
    v = vocabulary([("s", [2, 3]), ("b", [2])], n_disambiguation=2)
    assert v == ["<s0_0>", "<s0_1>", "<s1_0>", "<s1_1>", "<s1_2>", "<b0_0>", "<b0_1>", "<d_0>", "<d_1>"]


def test_disambiguate_and_collision_rate_functions():
    codes = np.array([[1, 1], [1, 1], [2, 0], [1, 1]])
    assert disambiguate(codes).tolist() == [0, 1, -1, 2]
    assert collision_rate(codes) == pytest.approx(0.5)
    assert collision_rate(np.array([[0], [1]])) == 0.0


def test_level_stats_values():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 0]])
    lv = level_stats(codes, [2, 2])
    assert lv[0] == {"K": 2, "clusters_used": 2, "codes_used": 2, "largest_cluster": 2, "smallest_cluster": 2,
                     "entropy_bits": 1.0, "code_entropy_bits": 1.0, "collision_rate": 0.5}
    assert lv[1]["clusters_used"] == 3 and lv[1]["largest_cluster"] == 2
    assert lv[1]["collision_rate"] == pytest.approx(0.25)
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)


def test_add_to_tokenizer_keeps_tokens_whole():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(["recommend the next item for this user"] * 5,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    new = vocabulary([("s", [3]), ("b", [3])])
    assert add_to_tokenizer(tok, new) == 6
    ids = tok("next: <s0_2><b0_1>")["input_ids"]
    spaced = tok("next: <s0_2> <b0_1>")["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[-2:] == ["<s0_2>", "<b0_1>"]
    assert spaced == ids  # lstrip: a space before an item token adds no stray token
    # not special: they survive skip_special_tokens (decode may space them; parse_index allows that)
    assert parse_index(tok.decode(ids[-2:], skip_special_tokens=True)) == ["<s0_2>", "<b0_1>"]
