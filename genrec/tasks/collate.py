"""Tokenise instruction examples: prompt (masked) + summary token + response (trained).

Layout of one rendered example::

    [chat-templated prompt ...][<|rec_summary|>][response tokens ...][eos]
     labels = -100 ..........    -100            response ids ...     eos

The summary token closes the prompt, so its hidden state depends on the prompt only and is
available at inference time too; the auxiliary losses read the state at ``summary_pos``.

A ``sequence`` example renders its items one after another, each closed by EOS::

    [prompt ...][<|rec_summary|>][item 1 tokens][eos][item 2 tokens][eos] ... [item n tokens][eos]
     labels = -100 .........................................  item 2 ids, eos ... item n ids, eos

The state before each labelled item (the EOS closing the previous one) is that item's summary
state for the auxiliary losses. :func:`sequence_prompt_ids` renders a serving history the same
way, so a served prompt is exactly a prefix of a training example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genrec.tasks.prompts import Example, render_history, serving_template

IGNORE_INDEX = -100
SUMMARY_TOKEN = "<|rec_summary|>"
FALLBACK_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
SYSTEM_PROMPT = "You are a recommender system. Answer with item indices or item titles."


def prompt_text(tokenizer: Any, prompt: str, use_chat_template: bool = True) -> str:
    """The prompt as the model sees it: the tokenizer's chat template when it has one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return FALLBACK_TEMPLATE.format(prompt=prompt)


def prompt_ids(tokenizer: Any, prompt: str, summary_id: int, max_prompt_tokens: int,
               use_chat_template: bool = True) -> list[int]:
    """Token ids of the templated prompt followed by the summary token, left-truncated to fit."""
    ids = tokenizer(prompt_text(tokenizer, prompt, use_chat_template), add_special_tokens=False)["input_ids"]
    # Keep the end of the prompt (most recent history and the generation header) when too long.
    return ids[-(max_prompt_tokens - 1):] + [summary_id]


def sequence_prompt_ids(prompt: list[int], item_ids: Sequence[Sequence[int]], eos_id: int) -> list[int]:
    """``prompt`` (templated prompt + summary token) followed by each history item's token ids
    and EOS: the serving prompt of a run trained with the ``sequence`` task."""
    out = list(prompt)
    for ids in item_ids:
        out += list(ids) + [eos_id]
    return out


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    summary_pos: int
    target: int
    task: str
    aux_pos: tuple[int, ...] = ()  # sequence examples: the state before each labelled item
    aux_targets: tuple[int, ...] = ()  # ... and that item
    item_pos: tuple[int, ...] = ()  # sequence examples: the last index token of each item
    item_ids: tuple[int, ...] = ()  # ... and that item (for model.item_embeddings)


def _check_response(n_tokens: int, task: str, max_length: int) -> None:
    """A response (with EOS) must leave room for a prompt within ``max_length``."""
    if n_tokens >= max_length - 8:
        raise ValueError(f"response of a {task} example has {n_tokens} tokens, "
                         f"more than max_length={max_length} allows")


def render_sequence(example: Example, tokenizer: Any, summary_id: int, max_length: int,
                    use_chat_template: bool, index_ids: Any) -> Rendered:
    """A ``sequence`` example; ``index_ids(item) -> token ids`` of an item's index. Oldest items
    are dropped (down to two) while the example exceeds ``max_length``; the layout is the one
    :func:`serving_prompt` builds, so a served prompt is a prefix of it."""
    prompt = prompt_ids(tokenizer, example.prompt, summary_id, max_length, use_chat_template)
    body = _recent_that_fit([list(index_ids(i)) for i in example.items], max_length - len(prompt), keep=2)
    items = list(example.items)[len(example.items) - len(body):]
    ids = sequence_prompt_ids(prompt, body, tokenizer.eos_token_id)
    last = item_last_positions(len(prompt), body)
    first_end = last[0] + 2 if last else len(ids)  # the first item (and its EOS) is context only
    labels = [IGNORE_INDEX] * first_end + ids[first_end:]
    # the state before each labelled item is the EOS closing the previous one
    return Rendered(ids, labels, len(prompt) - 1, -1, example.task, tuple(p + 1 for p in last[:-1]),
                    tuple(items[1:]), tuple(last), tuple(items))


def _recent_that_fit(items: list[list[int]], room: int, keep: int) -> list[list[int]]:
    """The most recent ``items`` (token ids, oldest first) whose tokens plus one EOS each fit in
    ``room``; never fewer than ``keep`` (or all, when there are fewer)."""
    while len(items) > keep and sum(len(h) + 1 for h in items) > room:
        items = items[1:]
    return items


def render(example: Example, tokenizer: Any, summary_id: int, max_length: int = 512,
           use_chat_template: bool = True) -> Rendered:
    """Tokenise one example; only the response and EOS carry labels."""
    response = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    _check_response(len(response), example.task, max_length)
    prompt = prompt_ids(tokenizer, example.prompt, summary_id, max_length - len(response), use_chat_template)
    return Rendered(input_ids=prompt + response, labels=[IGNORE_INDEX] * len(prompt) + response,
                    summary_pos=len(prompt) - 1, target=example.target, task=example.task)


class Collator:
    """Right-pad a list of :class:`Rendered` into tensors.

    Returns ``input_ids [B, L]``, ``attention_mask [B, L]``, ``labels [B, L]`` (``-100`` on prompt and
    padding), ``item_rows [I]`` / ``item_pos [I]`` / ``item_ids [I]`` (each history item of a
    ``sequence`` example and the position of its last index token), and the auxiliary-loss rows
    ``aux_rows [T]`` (batch row), ``aux_pos [T]`` (position of the summary state), ``aux_targets [T]``
    (target item) and ``aux_hist [T, H]`` (the items before it in a ``sequence`` example,
    left-padded with ``-1``; all ``-1`` for window examples): one per example whose response is an
    item index and one per labelled item of a ``sequence`` example.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, batch: Sequence[Rendered]) -> dict[str, torch.Tensor]:
        length = max(len(r.input_ids) for r in batch)
        ids = torch.full((len(batch), length), self.pad, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for b, r in enumerate(batch):
            n = len(r.input_ids)
            ids[b, :n] = torch.tensor(r.input_ids)
            labels[b, :n] = torch.tensor(r.labels)
            mask[b, :n] = 1
        rows, pos, targets = [], [], []
        for b, r in enumerate(batch):
            # a window example's response is its target; a sequence example has one per labelled item
            at, tg = ((r.summary_pos,), (r.target,)) if r.target >= 0 else (r.aux_pos, r.aux_targets)
            rows += [b] * len(at)
            pos += at
            targets += tg
        item_rows = [b for b, r in enumerate(batch) for _ in r.item_pos]
        # per aux row, the items before its target: a sequence example's earlier items (a window example
        # renders its history as text, so it has none here)
        hists = [[] if r.target >= 0 else list(r.item_ids[:k + 1]) for r in batch
                 for k in range(1 if r.target >= 0 else len(r.aux_pos))]
        width = max((len(h) for h in hists), default=0) or 1
        aux_hist = torch.full((len(hists), width), -1, dtype=torch.long)
        for t, h in enumerate(hists):
            if h:
                aux_hist[t, width - len(h):] = torch.tensor(h)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "aux_rows": torch.tensor(rows, dtype=torch.long), "aux_pos": torch.tensor(pos, dtype=torch.long),
                "aux_targets": torch.tensor(targets, dtype=torch.long), "aux_hist": aux_hist,
                "item_rows": torch.tensor(item_rows, dtype=torch.long),
                "item_pos": torch.tensor([p for r in batch for p in r.item_pos], dtype=torch.long),
                "item_ids": torch.tensor([i for r in batch for i in r.item_ids], dtype=torch.long)}


class RenderedExamples(torch.utils.data.Dataset):
    """Examples tokenised on first access (then cached): a run bounded by ``max_steps`` tokenises
    only the examples it draws instead of the whole corpus up front.

    Construction checks every distinct response against ``max_length`` (the one way
    :func:`render` can fail), so a too-small budget is reported before training starts.
    """

    def __init__(self, examples: Sequence[Example], tokenizer: Any, summary_id: int, max_length: int = 512,
                 use_chat_template: bool = True, index: Sequence[str] | None = None) -> None:
        self.examples = list(examples)
        self.args = (tokenizer, summary_id, max_length, use_chat_template)
        self._cache: dict[int, Rendered] = {}
        self.index = index  # index strings per item, for ``sequence`` examples
        self._index_ids: dict[int, list[int]] = {}
        if index is None and any(ex.task == "sequence" for ex in self.examples):
            raise ValueError("sequence examples need the item index strings (index=...)")
        # Every distinct response (a few per item); beyond 50k of them, the longest one per task
        # (token counts follow character counts closely but not exactly).
        distinct = {ex.response: ex.task for ex in self.examples}
        if len(distinct) > 50_000:
            longest: dict[str, str] = {}
            for response, task in distinct.items():
                if len(response) > len(longest.get(task, "")):
                    longest[task] = response
            distinct = {r: t for t, r in longest.items()}
        for response, task in distinct.items():
            _check_response(len(tokenizer(response, add_special_tokens=False)["input_ids"]) + 1, task, max_length)

    def __len__(self) -> int:
        return len(self.examples)

    def lengths(self) -> list[int]:
        """A cheap length estimate per example, for length-grouped batching: the number of items
        of a ``sequence`` example times 4 plus the prompt, otherwise the characters of prompt and response / 4."""
        return [len(ex.items) * 4 + 16 if ex.task == "sequence" else (len(ex.prompt) + len(ex.response)) // 4
                for ex in self.examples]

    def __getitem__(self, i: int) -> Rendered:
        got = self._cache.get(i)
        if got is None:
            ex = self.examples[i]
            if ex.task == "sequence":
                got = render_sequence(ex, *self.args, index_ids=self._ids)
            else:
                got = render(ex, *self.args)
            self._cache[i] = got
        return got

    def _ids(self, item: int) -> list[int]:
        got = self._index_ids.get(item)
        if got is None:
            assert self.index is not None
            got = self._index_ids[item] = self.args[0](self.index[item], add_special_tokens=False)["input_ids"]
        return got


def serving_prompt(tokenizer: Any, summary_id: int, text: str, history_ids: Sequence[Sequence[int]] | None,
                   max_prompt_tokens: int, use_chat_template: bool = True) -> tuple[list[int], list[int]]:
    """The prompt a history is served with, and where its items are.

    ``text`` (the rendered instruction) is templated and closed by the summary token; for a
    ``sequence``-format run (``history_ids`` given: each history item's index token ids, oldest
    first) the items follow, each closed by EOS, as training renders them. Oldest items are
    dropped to fit ``max_prompt_tokens``. Returns ``(ids, last)`` where ``last[j]`` is the
    position of the last index token of the ``j``-th of the last ``len(last)`` history items
    (empty for the window format).
    """
    head = prompt_ids(tokenizer, text, summary_id, max_prompt_tokens, use_chat_template)
    if history_ids is None:
        return head, []
    items = _recent_that_fit([list(h) for h in history_ids], max_prompt_tokens - len(head), keep=1)
    return sequence_prompt_ids(head, items, tokenizer.eos_token_id), item_last_positions(len(head), items)


def item_last_positions(start: int, items: Sequence[Sequence[int]]) -> list[int]:
    """Positions of each item's last index token when the items, each closed by EOS, follow
    ``start`` prompt tokens."""
    out, at = [], start
    for ids in items:
        at += len(ids)
        out.append(at - 1)
        at += 1
    return out


def history_prompt(tokenizer: Any, summary_id: int, history: Sequence[int], index: Sequence[str],
                   titles: Sequence[str] | None, item_ids: Sequence[Sequence[int]], max_history: int,
                   max_prompt_tokens: int, use_chat_template: bool = True, sequence: bool = False,
                   instruction: str | None = None) -> tuple[list[int], tuple[list[int], list[int]]]:
    """THE serving prompt of a history (item indices, most recent last), for ``genrec evaluate``,
    ``recommend``, ``serve`` and validation ranking during training alike.

    The text comes from :func:`~genrec.tasks.prompts.render_history` with
    :func:`~genrec.tasks.prompts.serving_template`; ``sequence`` runs get the history items
    after it (:func:`serving_prompt`). ``index`` / ``titles`` / ``item_ids``: per item, its index
    string, display title and index token ids. Returns ``(ids, (positions, items))``: the prompt
    and, for ``sequence`` runs, each kept history item with the position of its last index token.
    """
    history = [int(i) for i in history][-max_history:]
    text = render_history(serving_template(instruction, sequence), history, index,
                          index if titles is None else titles, max_history)
    ids, last = serving_prompt(tokenizer, summary_id, text, [item_ids[i] for i in history] if sequence else None,
                               max_prompt_tokens, use_chat_template)
    return ids, (last, history[len(history) - len(last):])
