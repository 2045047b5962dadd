"""Instruction templates and example generation for the recommendation tasks.

Tasks (names used in recipes' ``tasks.mix``):

- ``seqrec``: history as item indices → next item index;
- ``item2index``: item title (and description) → its index;
- ``index2item``: index → item title;
- ``fusion_titles``: history as titles → next item index;
- ``fusion_next_title``: history as indices → next item's title.

Each task has several phrasings; one is drawn per example with a seeded generator. Only the
response is trained with the LM loss. Examples whose response is an item index carry the
target item so the auxiliary losses can use the summary state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from genrec.data.dataset import Item
from genrec.data.split import Split

TEMPLATES: dict[str, tuple[str, ...]] = {
    "seqrec": (
        "A user interacted with these items in order: {history}. Which item will the user interact with next?",
        "Here is a user's history, oldest first: {history}. Recommend the next item.",
        "Given the interaction sequence {history}, predict the item this user wants next.",
    ),
    "item2index": (
        "Which item index corresponds to this item? {text}",
        "Give the index of the item described here: {text}",
        "Item description: {text}\nWhat is its index?",
    ),
    "index2item": (
        "What is the title of item {index}?",
        "Name the item whose index is {index}.",
        "Tell me which item {index} is.",
    ),
    "fusion_titles": (
        "A user interacted with: {titles}. Which item index should be recommended next?",
        "The user's recent items, oldest first: {titles}. Give the index of the next item.",
    ),
    "fusion_next_title": (
        "A user interacted with these items in order: {history}. What is the title of the next item?",
        "Based on the history {history}, name the item the user will want next.",
    ),
}

INDEX_TASKS = ("seqrec", "item2index", "fusion_titles")


@dataclass
class Example:
    """One instruction example. ``target`` is the item the response names (``-1`` if none)."""

    task: str
    prompt: str
    response: str
    target: int = -1


def index_string(codes: Sequence[str]) -> str:
    """Concatenate an item's tokens without separators (a space would tokenise to a stray token)."""
    return "".join(codes)


class TaskBuilder:
    """Generate :class:`Example` s for a split, an item table and per-item index tokens.

    Args:
        items: catalog, item index order.
        codes: ``codes[i]`` is item ``i``'s list of index tokens.
        max_history: items shown in history prompts (most recent last).
        title_chars: titles are cut to this many characters in prompts.
        seed: phrasing / sampling seed.
    """

    def __init__(self, items: Sequence[Item], codes: Sequence[Sequence[str]], max_history: int = 20,
                 title_chars: int = 80, seed: int = 0) -> None:
        if len(items) != len(codes):
            raise ValueError(f"{len(items)} items but {len(codes)} code lists")
        self.items = items
        self.index = [index_string(c) for c in codes]
        self.max_history = max_history
        self.title_chars = title_chars
        self.rng = np.random.default_rng(seed)

    def _title(self, i: int) -> str:
        t = self.items[i].display
        return t if len(t) <= self.title_chars else t[: self.title_chars - 1] + "…"

    def _pick(self, task: str) -> str:
        options = TEMPLATES[task]
        return options[int(self.rng.integers(len(options)))]

    def history_prompt(self, task: str, history: Sequence[int]) -> str:
        """The prompt for a history-based task (``seqrec``, ``fusion_titles``, ``fusion_next_title``)."""
        history = list(history)[-self.max_history:]
        return self._pick(task).format(history=", ".join(self.index[i] for i in history),
                                       titles="; ".join(f'"{self._title(i)}"' for i in history))

    def make(self, task: str, history: Sequence[int] | None = None, target: int = -1) -> Example:
        """One example of ``task``: history tasks need ``history`` and ``target``; item tasks ``target``."""
        if task in ("seqrec", "fusion_titles"):
            return Example(task, self.history_prompt(task, [] if history is None else history), self.index[target], target)
        if task == "fusion_next_title":
            return Example(task, self.history_prompt(task, [] if history is None else history), self._title(target), -1)
        if task == "item2index":
            it = self.items[target]
            text = it.title or it.item_id
            if it.description:
                text += ". " + it.description[:200]
            return Example(task, self._pick(task).format(text=text), self.index[target], target)
        if task == "index2item":
            return Example(task, self._pick(task).format(index=self.index[target]), self._title(target), -1)
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TEMPLATES)}")

    def iter_examples(self, split: Split, mix: dict[str, float]) -> Iterator[Example]:
        """Training examples: each history task over the training windows, each item task over the catalog.

        ``mix[task]`` scales how many examples a task contributes relative to its natural size
        (1.0 = every window / every item once; 0.5 = a random half; 2.0 = twice).
        """
        unknown = set(mix) - set(TEMPLATES)
        if unknown:
            raise ValueError(f"tasks.mix names unknown tasks {sorted(unknown)}; valid: {sorted(TEMPLATES)}")
        windows = [(h, t) for _, h, t in split.train_windows()]
        sources: dict[str, Callable[[], list[Example]]] = {}
        for task, share in mix.items():
            if task in ("seqrec", "fusion_titles", "fusion_next_title"):
                sources[task] = lambda task=task, share=share: [self.make(task, h, t) for h, t in self._sample(windows, share)]
            else:
                cat = [(None, i) for i in range(len(self.items))]
                sources[task] = lambda task=task, share=share, cat=cat: [self.make(task, None, t)
                                                                   for _, t in self._sample(cat, share)]
        for task in mix:
            yield from sources[task]()

    def _sample(self, pool: list, scale: float) -> list:
        whole, frac = int(scale), scale - int(scale)
        out = pool * whole
        if frac > 0:
            idx = self.rng.choice(len(pool), size=round(frac * len(pool)), replace=False)
            out += [pool[i] for i in sorted(idx)]
        return out
