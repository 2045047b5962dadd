"""Item-token strings: spelling, the full vocabulary, parsing, and adding to an HF tokenizer.

A token names its stream, its level and its code: ``<s0_12>`` is semantic level 0 code 12,
``<b1_200>`` behavior level 1 code 200, ``<d_3>`` the disambiguation token 3 (no level). An
item's index is its tokens concatenated without separators, e.g. ``<s0_12><s1_40><b0_7><b1_200>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from genrec.errors import DataError

#: stream name -> the letter its tokens start with
STREAM_LETTERS = {"semantic": "s", "behavior": "b"}
DISAMBIGUATION = "d"

_TOKEN = re.compile(r"<([a-z])(\d*)_(\d+)>")


def token(letter: str, level: int | None, code: int) -> str:
    """``token("s", 0, 12) == "<s0_12>"``; ``token("d", None, 3) == "<d_3>"``."""
    return f"<{letter}{'' if level is None else level}_{code}>"


def stream_tokens(letter: str, ks: Sequence[int]) -> list[str]:
    """Every token of one stream, level by level, codes ascending: ``sum(ks)`` strings."""
    return [token(letter, lvl, c) for lvl, k in enumerate(ks) for c in range(k)]


def vocabulary(streams: Sequence[tuple[str, Sequence[int]]], n_disambiguation: int = 0) -> list[str]:
    """All new tokens in a stable order: each ``(letter, ks)`` stream in index order, then
    ``<d_0> .. <d_{n-1}>``. Appending (never reordering) keeps earlier token ids valid."""
    out: list[str] = []
    for letter, ks in streams:
        out.extend(stream_tokens(letter, ks))
    out.extend(token(DISAMBIGUATION, None, i) for i in range(n_disambiguation))
    return out


def parse_token(tok: str) -> tuple[str, int | None, int]:
    """``"<s1_40>"`` -> ``("s", 1, 40)``; ``"<d_3>"`` -> ``("d", None, 3)``."""
    m = _TOKEN.fullmatch(tok)
    if not m:
        raise DataError(f"{tok!r} is not an item token (expected e.g. <s0_12>, <b1_7> or <d_0>)")
    letter, level, code = m.groups()
    return letter, (int(level) if level else None), int(code)


def parse_index(text: str) -> list[str]:
    """Split an index string ``"<s0_12><s1_40><b0_7>"`` into its tokens.

    Whitespace between tokens is ignored; anything else that is not a token is an error.
    """
    compact = "".join(text.split())
    tokens = [m.group(0) for m in _TOKEN.finditer(compact)]
    if "".join(tokens) != compact:
        raise DataError(f"{text!r} is not a sequence of item tokens (e.g. <s0_12><s1_40><b0_7><b1_200>)")
    return tokens


def codes_to_tokens(codes: Sequence[int], layout: Sequence[tuple[str, int | None]]) -> list[str]:
    """Codes ``[L]`` -> tokens, ``layout[i] = (letter, level)`` giving position ``i``'s spelling."""
    return [token(letter, level, int(c)) for (letter, level), c in zip(layout, codes)]


def tokens_to_codes(tokens: Iterable[str], layout: Sequence[tuple[str, int | None]]) -> list[int]:
    """Inverse of :func:`codes_to_tokens`; a token at the wrong position is an error."""
    out = []
    tokens = list(tokens)
    if len(tokens) < len(layout):
        raise DataError(f"index {''.join(tokens)} has {len(tokens)} tokens, expected {len(layout)}")
    for pos, ((letter, level), tok) in enumerate(zip(layout, tokens)):
        got_letter, got_level, code = parse_token(tok)
        if (got_letter, got_level) != (letter, level):
            raise DataError(f"token {tok} at position {pos} should be {token(letter, level, code)}-style")
        out.append(code)
    return out


def index_string(tokens: Iterable[str]) -> str:
    """Tokens joined with no separator (a space before an added token would tokenize apart)."""
    return "".join(tokens)


def add_to_tokenizer(tokenizer: Any, tokens: Sequence[str]) -> int:
    """Add item tokens to a Hugging Face tokenizer as normal (not special) added tokens.

    ``lstrip=True`` lets ``"... <s0_12>"`` with a space still map to the single token instead of
    a stray space token, and not being special keeps them in ``decode(skip_special_tokens=True)``.
    Returns how many tokens were new.
    """
    from tokenizers import AddedToken

    return int(tokenizer.add_tokens([AddedToken(t, lstrip=True, rstrip=False, normalized=False,
                                                single_word=False) for t in tokens]))
