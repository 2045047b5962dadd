"""A compact word-level tokenizer for models trained from scratch.

A scratch model on a 49k-token LLM tokenizer spends most of its parameters and most of each
step on an embedding table and LM head whose rows its prompts never use (SmolLM2's vocabulary
is 6.4M of a 7.5M-parameter tiny model). ``model.tokenizer: compact`` replaces it with the
words the training examples actually contain: the instruction templates, and the most frequent
words of the item texts the item tasks show (``model.compact_words`` of them). Item tokens are
added on top as for any tokenizer. Words outside the vocabulary map to ``<unk>``.

The result is an ordinary ``transformers`` fast tokenizer: it is saved with the run and loaded
by ``AutoTokenizer.from_pretrained`` like any other.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
_WORD = re.compile(r"\w+|[^\w\s]+")
_ITEM_TOKEN = re.compile(r"<[a-z]\d*_\d+>|<\|rec_summary\|>")


def words(text: str) -> list[str]:
    """The pieces the tokenizer's pre-tokenizer makes of ``text`` (item tokens removed)."""
    return _WORD.findall(_ITEM_TOKEN.sub(" ", text))


def compact_tokenizer(always: Iterable[str], corpus: Iterable[str], max_words: int) -> Any:
    """A word-level ``PreTrainedTokenizerFast``: every word of ``always`` (templates) plus the
    ``max_words`` most frequent other words of ``corpus`` (ties broken alphabetically)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIALS)}
    for text in always:
        for w in words(text):
            vocab.setdefault(w, len(vocab))
    counts = Counter(w for text in corpus for w in words(text) if w not in vocab)
    for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max(0, max_words)]:
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>")
