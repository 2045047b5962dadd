"""Instruction templates and example generation for the recommendation tasks.

Tasks (names used in recipes' ``tasks.mix``):

- ``seqrec``: history as item indices → next item index;
- ``item2index``: item title (and description) → its index;
- ``index2item``: index → item title;
- ``fusion_titles``: history as titles → next item index;
- ``fusion_next_title``: history as indices → next item's title;
- ``sequence``: one example per stretch of a user's training sequence (at most
  ``max_history + 1`` items): the items' indices follow a fixed instruction one after another,
  each closed by the end-of-item token (EOS), and the LM loss covers every item after the first.
  Every position is a next-item example, so an epoch costs one forward pass per stretch instead
  of one per window. A run whose mix holds ``sequence`` is served in the same format: the
  history's items follow the instruction and the next item is generated after them
  (:func:`genrec.tasks.collate.serving_prompt`).

Each task has several phrasings; one is drawn per example with a seeded generator. Only the
response is trained with the LM loss. History prompts are rendered by :func:`render_history`
only, for training (:class:`TaskBuilder`) and for serving (:func:`serving_template` picks the
text, :class:`genrec.inference.recommender.GenRecommender` renders it), so a served prompt is
the prompt the model was trained on. Examples whose response is an item index carry the
target item so the auxiliary losses can use the summary state.
"""

from __future__ import annotations

import re
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
    "sequence": (
        "Predict each next item of this user's history, oldest first.",
    ),
    "fusion_next_title": (
        "A user interacted with these items in order: {history}. What is the title of the next item?",
        "Based on the history {history}, name the item the user will want next.",
    ),
}

SERVING_TEMPLATE = TEMPLATES["seqrec"][0]  # the phrasing requests are served with
TITLE_CHARS = 80  # titles are cut to this many characters in prompts
HISTORY_TASKS = ("seqrec", "fusion_titles", "fusion_next_title")
_PLACEHOLDER = re.compile(r"\{(history|titles)\}")


def cut_title(title: str, title_chars: int = TITLE_CHARS) -> str:
    """``title`` cut to ``title_chars`` characters (the last one an ellipsis when cut)."""
    return title if len(title) <= title_chars else title[: title_chars - 1] + "…"


def render_history(template: str, history: Sequence[int], index: Sequence[str], titles: Sequence[str],
                   max_history: int, title_chars: int = TITLE_CHARS) -> str:
    """THE history prompt: ``template`` with ``{history}`` (item indices) and ``{titles}`` (quoted,
    cut titles) of the last ``max_history`` items of ``history`` (item indices, most recent last).

    ``index[i]`` / ``titles[i]`` are item ``i``'s index string and display title. Placeholders
    are substituted in one pass; any other text (braces included) is kept as written.
    """
    history = list(history)[-max_history:]
    values = {"history": ", ".join(index[i] for i in history),
              "titles": "; ".join(f'"{cut_title(titles[i], title_chars)}"' for i in history)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def serving_template(instruction: str | None = None, sequence: bool = False) -> str:
    """The template a served request is rendered with: :data:`SERVING_TEMPLATE` (the ``sequence``
    task's instruction for a run trained in that format); an instruction with ``{history}`` or
    ``{titles}`` replaces it, one without either is put in front of it."""
    base = TEMPLATES["sequence"][0] if sequence else SERVING_TEMPLATE
    if not instruction:
        return base
    if _PLACEHOLDER.search(instruction):
        return instruction
    return f"{instruction.strip()} {base}"


@dataclass
class Example:
    """One instruction example. ``target`` is the item the response names (``-1`` if none)."""

    task: str
    prompt: str
    response: str
    target: int = -1
    items: tuple[int, ...] = ()  # ``sequence`` examples: the items, oldest first (the response is empty)


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
                 title_chars: int = TITLE_CHARS, seed: int = 0) -> None:
        if len(items) != len(codes):
            raise ValueError(f"{len(items)} items but {len(codes)} code lists")
        self.items = items
        self.index = [index_string(c) for c in codes]
        self.titles = [it.display for it in items]
        self.max_history = max_history
        self.title_chars = title_chars
        self.rng = np.random.default_rng(seed)

    def _title(self, i: int) -> str:
        return cut_title(self.titles[i], self.title_chars)

    def _pick(self, task: str) -> str:
        options = TEMPLATES[task]
        return options[int(self.rng.integers(len(options)))]

    def history_prompt(self, task: str, history: Sequence[int]) -> str:
        """The prompt for a history-based task (``seqrec``, ``fusion_titles``, ``fusion_next_title``)."""
        return render_history(self._pick(task), history, self.index, self.titles, self.max_history,
                              self.title_chars)

    def make(self, task: str, history: Sequence[int] | None = None, target: int = -1) -> Example:
        """One example of ``task``: history tasks need ``history`` and ``target``; item tasks ``target``."""
        if task in ("seqrec", "fusion_titles"):
            return Example(task, self.history_prompt(task, [] if history is None else history), self.index[target], target)
        if task == "sequence":
            return Example(task, TEMPLATES[task][0], "", -1, tuple(int(i) for i in ([] if history is None else history)))
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

    def iter_examples(self, split: Split, mix: dict[str, float],
                      catalog: Sequence[int] | None = None) -> Iterator[Example]:
        """Training examples: each history task over the training windows, each item task over the catalog.

        ``mix[task]`` scales how many examples a task contributes relative to its natural size
        (1.0 = every window / every item once; 0.5 = a random half; 2.0 = twice). ``catalog``:
        the item indices the item tasks cover (default all; the cold-start protocol leaves the
        held-out items out).
        """
        unknown = set(mix) - set(TEMPLATES)
        if unknown:
            raise ValueError(f"tasks.mix names unknown tasks {sorted(unknown)}; valid: {sorted(TEMPLATES)}")
        windows = [(h, t) for _, h, t in split.train_windows()]
        sources: dict[str, Callable[[], list[Example]]] = {}
        for task, share in mix.items():
            if task == "sequence":
                pool = [(s, -1) for s in sequence_stretches(split.train, self.max_history + 1)]
                sources[task] = lambda task=task, share=share, pool=pool: [
                    self.make(task, s, -1) for s, _ in self._sample(pool, share)]
            elif task in HISTORY_TASKS:
                sources[task] = lambda task=task, share=share: [self.make(task, h, t) for h, t in self._sample(windows, share)]
            else:
                cat = [(None, int(i)) for i in (range(len(self.items)) if catalog is None else catalog)]
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


def sequence_stretches(sequences: Sequence[np.ndarray], length: int) -> list[np.ndarray]:
    """Each training sequence cut into stretches of at most ``length`` items, from its end
    backwards, consecutive stretches sharing one item, so every transition ``s[t-1] -> s[t]`` is
    a target exactly once (the first item of a stretch is context only); a sequence of fewer
    than 2 items gives none."""
    out = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - length)
            out.append(np.asarray(seq[start:end]))
            end = start + 1 if start > 0 else 0
    return out
