"""Tokenise instruction examples: prompt (masked) + summary token + response (trained).

Layout of one rendered example::

    [chat-templated prompt ...][<|rec_summary|>][response tokens ...][eos]
     labels = -100 ..........    -100            response ids ...     eos

The summary token closes the prompt, so its hidden state depends on the prompt only and is
available at inference time too; the auxiliary losses read the state at ``summary_pos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genrec.tasks.prompts import Example

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


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    summary_pos: int
    target: int
    task: str


def _check_response(n_tokens: int, task: str, max_length: int) -> None:
    """A response (with EOS) must leave room for a prompt within ``max_length``."""
    if n_tokens >= max_length - 8:
        raise ValueError(f"response of a {task} example has {n_tokens} tokens, "
                         f"more than max_length={max_length} allows")


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
    padding), ``summary_pos [B]`` and ``targets [B]`` (``-1`` where the response is not an item index).
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
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "summary_pos": torch.tensor([r.summary_pos for r in batch]),
                "targets": torch.tensor([r.target for r in batch])}


class RenderedExamples(torch.utils.data.Dataset):
    """Examples tokenised on first access (then cached): a run bounded by ``max_steps`` tokenises
    only the examples it draws instead of the whole corpus up front.

    Construction checks every distinct response against ``max_length`` (the one way
    :func:`render` can fail), so a too-small budget is reported before training starts.
    """

    def __init__(self, examples: Sequence[Example], tokenizer: Any, summary_id: int, max_length: int = 512,
                 use_chat_template: bool = True) -> None:
        self.examples = list(examples)
        self.args = (tokenizer, summary_id, max_length, use_chat_template)
        self._cache: dict[int, Rendered] = {}
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

    def __getitem__(self, i: int) -> Rendered:
        got = self._cache.get(i)
        if got is None:
            got = self._cache[i] = render(self.examples[i], *self.args)
        return got
