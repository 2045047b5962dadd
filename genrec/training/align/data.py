"""What the preference trainers learn from: prompts, mined hard negatives, item rewards, rollouts.

- **Prompts** come from the training split (the validation and test items are never seen) and
  are rendered by :func:`genrec.tasks.collate.history_prompt`, the prompt the run is served
  with. ``prompts: last`` takes each user's last training item as the target and the items
  before it as the history; ``all`` takes every training position.
- **Hard negatives** (DPO): the starting model's own constrained beam search over the catalog
  trie for each prompt; the best-ranked items that are not the true item (after skipping
  ``dpo.skip_top``) become rejected completions, one preference pair each. They are mined once
  and cached in the run directory (``negatives.jsonl``), keyed by the starting run's model
  files and the mining settings, so ``--resume`` trains on the same pairs.
- **Item reward** (GRPO): 1 for the true item; for another catalog item ``prefix_credit ×
  (leading index tokens shared with the true item) / (index tokens of the true item)`` — item
  indices are hierarchical cluster codes, so a shared prefix means the same coarse cluster; 0
  for output that is not a catalog item (constrained sampling never produces one; it is counted).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genrec.io import atomic_file

log = logging.getLogger(__name__)


@dataclass
class Prompts:
    """``ids[j]``: served prompt token ids of prompt ``j``; ``targets [P]`` its true item;
    ``users [P]`` its user; ``seen[j]`` the items of that user's training prefix (known positives)."""

    ids: list[list[int]]
    targets: np.ndarray
    users: np.ndarray
    seen: list[frozenset[int]]

    def __len__(self) -> int:
        return len(self.ids)


def build_prompts(split: Any, policy: Any, tasks: dict[str, Any], which: str, max_prompts: int,
                  seed: int) -> Prompts:
    """Training-split prompts (see the module docstring), a seeded subset of ``max_prompts`` when > 0."""
    from genrec.tasks.collate import history_prompt
    from genrec.tasks.prompts import index_string

    max_history = int(tasks.get("max_history", 20))
    pairs: list[tuple[int, np.ndarray, int]] = []
    for u, prefix in enumerate(split.train):
        positions = [len(prefix) - 1] if which == "last" else range(1, len(prefix))
        pairs += [(u, prefix[max(0, t - max_history):t], int(prefix[t])) for t in positions if t >= 1]
    if max_prompts and len(pairs) > max_prompts:
        keep = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:max_prompts])
        pairs = [pairs[i] for i in keep]
    index = [index_string(c) for c in policy.codes]
    room = int(tasks.get("max_length", 512)) - policy.trie.depth
    ids = [history_prompt(policy.tokenizer, policy.summary_id, h, index, None, policy.item_ids, max_history, room,
                          bool(tasks.get("use_chat_template", True)), bool((tasks.get("mix") or {}).get("sequence")))[0]
           for _, h, _ in pairs]
    return Prompts(ids, np.asarray([t for _, _, t in pairs], dtype=np.int64),
                   np.asarray([u for u, _, _ in pairs], dtype=np.int64),
                   [frozenset(int(i) for i in split.train[u]) for u, _, _ in pairs])


# --------------------------------------------------------------------------------- negatives
def mining_key(identity: dict[str, str], settings: dict[str, Any]) -> str:
    """sha256 of the starting model's files and the mining settings: what a cache must match."""
    blob = json.dumps({"identity": identity, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def mine_negatives(model: Any, prompts: Prompts, trie: Any, beams: int, negatives: int, skip_top: int,
                   exclude_seen: bool = True, batch_size: int = 16) -> list[dict[str, Any]]:
    """Per prompt ``{"user", "target", "target_rank", "negatives", "scores", "target_score"}``: the items of a
    ``beams``-wide constrained beam search, best first, without the true item (and, with
    ``exclude_seen``, without the other items of the user's training prefix: known positives),
    ``skip_top`` skipped, ``negatives`` kept (``target_rank`` is 1-based, 0 when the true item is not
    among the beams)."""
    from genrec.generation import search

    out = []
    for start in range(0, len(prompts), batch_size):
        res = search(model, prompts.ids[start:start + batch_size], beams, beams, trie=trie)
        for row, (items, scores) in enumerate(zip(res.items.tolist(), res.scores.tolist())):
            target = int(prompts.targets[start + row])
            found = [(i, s) for i, s in zip(items, scores) if i >= 0 and s > float("-inf")]
            rank = next((r + 1 for r, (i, _) in enumerate(found) if i == target), 0)
            known = prompts.seen[start + row] if exclude_seen else frozenset()
            wrong = [(i, s) for i, s in found if i != target and i not in known][skip_top:skip_top + negatives]
            out.append({"user": int(prompts.users[start + row]), "target": target, "target_rank": rank, "negatives": [i for i, _ in wrong],
                        "scores": [round(s, 4) for _, s in wrong],
                        "target_score": round(found[rank - 1][1], 4) if rank else None})
        if (start // batch_size) % 50 == 0:
            log.info("mined negatives for %d / %d prompts", min(start + batch_size, len(prompts)), len(prompts))
    return out


def load_or_mine(path: Path, key: str, mine: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The cached negatives at ``path`` when their key is ``key``; else ``mine()``, written atomically."""
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            head = json.loads(f.readline())
            if head.get("key") == key:
                rows = [json.loads(line) for line in f]
                log.info("reusing %d cached negatives rows from %s", len(rows), path)
                return rows
        log.info("%s was mined with other settings or another model; mining again", path)
    rows = mine()
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"key": key}) + "\n")
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def preference_pairs(prompts: Prompts, mined: Sequence[dict[str, Any]], item_ids: Sequence[Sequence[int]],
                     eos_id: int) -> list[dict[str, list[int]]]:
    """trl's tokenized preference rows: ``prompt_ids``; ``chosen_ids`` = true item's index ids + EOS;
    ``rejected_ids`` = a mined negative's + EOS (one row per negative)."""
    rows = []
    for ids, row in zip(prompts.ids, mined):
        chosen = list(item_ids[row["target"]]) + [eos_id]
        rows += [{"prompt_ids": list(ids), "chosen_ids": chosen, "rejected_ids": list(item_ids[n]) + [eos_id]}
                 for n in row["negatives"]]
    return rows


def negative_stats(mined: Sequence[dict[str, Any]]) -> dict[str, float]:
    """How hard the negatives are: true-item hit rate in the beams, its mean rank when found, and
    the mean log-prob margin of the best negative over the true item (positive: the model prefers
    the negative)."""
    ranks = np.asarray([r["target_rank"] for r in mined])
    margins = [r["scores"][0] - r["target_score"] for r in mined if r["target_score"] is not None and r["scores"]]
    return {"prompts": len(mined), "pairs": int(sum(len(r["negatives"]) for r in mined)),
            "target_in_beams": round(float((ranks > 0).mean()), 4) if len(ranks) else 0.0,
            "target_mean_rank_when_found": round(float(ranks[ranks > 0].mean()), 2) if (ranks > 0).any() else 0.0,
            "best_negative_margin": round(float(np.mean(margins)), 4) if margins else 0.0}


# --------------------------------------------------------------------------------- rewards
class ItemReward:
    """GRPO reward of a completion (token ids) for its prompt's true item (module docstring).

    Called by trl as ``reward(prompts=..., completions=..., completion_ids=..., target=..., **kw)``;
    keeps running counts of invalid, exact and partial completions for the model card.
    """

    __name__ = "item_reward"

    def __init__(self, item_ids: Sequence[Sequence[int]], eos_id: int, prefix_credit: float) -> None:
        self.item_ids = [tuple(s) for s in item_ids]
        self.by_tokens = {s: i for i, s in enumerate(self.item_ids)}
        self.eos_id, self.prefix_credit = eos_id, prefix_credit
        self.counts = {"completions": 0, "invalid": 0, "exact": 0, "reward_sum": 0.0}

    def summary(self) -> dict[str, float]:
        """Completions scored by this process (a resumed run counts from the resume), how many were
        invalid, the share that was the true item, and the mean reward."""
        c, n = self.counts, max(self.counts["completions"], 1)
        return {"completions": c["completions"], "invalid": c["invalid"], "exact_share": round(c["exact"] / n, 4),
                "mean_reward": round(c["reward_sum"] / n, 4)}

    def item_of(self, completion: Sequence[int]) -> int | None:
        toks = [int(t) for t in completion]
        if not toks or toks[-1] != self.eos_id:
            return None
        return self.by_tokens.get(tuple(toks[:-1]))

    def score(self, completion: Sequence[int], target: int) -> float:
        item = self.item_of(completion)
        if item is None:
            self.counts["invalid"] += 1
            return 0.0
        if item == target:
            self.counts["exact"] += 1
            return 1.0
        want, got = self.item_ids[target], self.item_ids[item]
        shared = next((j for j, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        return self.prefix_credit * shared / len(want)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]],
                 target: Sequence[int], **kwargs: Any) -> list[float]:
        rewards = [self.score(c, int(t)) for c, t in zip(completion_ids, target)]
        self.counts["completions"] += len(rewards)
        self.counts["reward_sum"] += float(sum(rewards))
        if "log_metric" in kwargs:
            kwargs["log_metric"]("item/invalid", sum(self.item_of(c) is None for c in completion_ids) / len(rewards))
            kwargs["log_metric"]("item/exact", sum(r == 1.0 for r in rewards) / len(rewards))
        return rewards


class TrieRollout:
    """trl GRPO ``rollout_func``: each prompt's group is sampled within the catalog trie
    (:func:`genrec.generation.sample`), so every completion is a valid item.

    The dataset's ``prompt`` column holds keys into ``prompts`` (served prompt ids); the draws
    are seeded by ``seed`` and the trainer's step, so a resumed run draws what it would have.
    """

    def __init__(self, prompt_ids: Sequence[Sequence[int]], trie: Any, temperature: float, seed: int) -> None:
        self.prompt_ids, self.trie, self.temperature, self.seed = list(prompt_ids), trie, temperature, seed
        self._step, self._calls = -1, 0

    def __call__(self, prompts: Sequence[str], trainer: Any) -> dict[str, Any]:
        import torch

        from genrec.generation import sample

        keys = [int(p) for p in prompts]
        uniq = list(dict.fromkeys(keys))
        n = max(keys.count(k) for k in uniq)
        model = trainer.accelerator.unwrap_model(trainer.model)
        device = next(model.parameters()).device
        step = int(trainer.state.global_step)
        self._calls = self._calls + 1 if step == self._step else 0
        self._step = step
        gen = torch.Generator(device=device).manual_seed(self.seed + 100_003 * step + self._calls)
        out = sample(model, [self.prompt_ids[k] for k in uniq], n, self.trie, temperature=self.temperature,
                     generator=gen)
        seqs = out.seqs.tolist()
        used = {k: 0 for k in uniq}
        completions = []
        for k in keys:
            row = seqs[uniq.index(k)][used[k]]
            used[k] += 1
            completions.append([t for t in row if t >= 0])
        return {"prompt_ids": [list(self.prompt_ids[k]) for k in keys], "completion_ids": completions,
                "logprobs": None}
