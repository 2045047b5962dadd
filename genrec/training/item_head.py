"""Fitting the item head (:mod:`genrec.encoders.item_head`) of a trained model.

The model is frozen. Each training sequence is rendered once as the served prompt of its
longest prefix; because a ``sequence``-format prompt of a shorter prefix is a prefix of it, one
forward gives the final state of every prefix (other formats fall back to one forward per
prefix). The head is fitted on those states -> next items and early-stopped on validation users
by its own NDCG@10. Its fusion weight is then chosen on validation users from a small grid by the
NDCG@10 of the fused ranking (weight 0 = the codes alone, so a head that does not help is not
used; ties go to the smaller weight): for the head-alone best epoch (``select="head"``), or for
every epoch the fit ran, the epoch and weight chosen together (``select="fused"``: the ranking
that is served decides, from one beam search per user).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.encoders.item_adapter import find_item_adapter, prompt_extras
from genrec.encoders.item_head import ItemHead, Transitions, fit_item_head
from genrec.errors import DataError
from genrec.generation import ItemTrie, search
from genrec.generation.fusion import candidates_for_heads, fuse, recent_items
from genrec.metrics import ranking_metrics, user_ndcg
from genrec.training.config import ITEM_HEAD_SELECT as SELECT
from genrec.training.config import ITEM_HEAD_WEIGHT_RULES as WEIGHT_RULES

log = logging.getLogger(__name__)

Render = Callable[[Sequence[int]], tuple[list[int], tuple[Sequence[int], Sequence[int]]]]
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def _forward_states(model: Any, prompt: list[int], items: tuple[Sequence[int], Sequence[int]]) -> torch.Tensor:
    """``[P, H]`` final hidden states of one prompt (history-item vectors added when the model has them)."""
    ids = torch.tensor([prompt], device=next(model.parameters()).device)
    emb = model.get_input_embeddings()(ids)
    adapter = find_item_adapter(model)
    if adapter is not None:
        emb = emb + prompt_extras(adapter, [len(prompt)], [items])[0][None].to(emb.dtype)
    return model(inputs_embeds=emb, output_hidden_states=True).hidden_states[-1][0].float()


def prefix_states(model: Any, render: Render, sequences: Sequence[Sequence[int]], max_history: int,
                  progress: bool = True, recent: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(states [T, H], targets [T], recent items [T, recent])``: for every item after the first
    of each training sequence (its last ``max_history + 1`` items), the served prompt's final state
    for the items before it, and the last ``recent`` of those items (most recent first, ``-1``
    padded)."""
    xs, ys, ls = [], [], []
    with torch.inference_mode():
        for seq in tqdm(sequences, desc="item head: states", disable=not progress, mininterval=5):
            seq = [int(i) for i in seq][-(max_history + 1):]
            if len(seq) < 2:
                continue
            full, items = render(seq[:-1])
            prompts = [render(seq[:t])[0] for t in range(1, len(seq))]
            if all(full[:len(p)] == p for p in prompts):
                xs.append(_forward_states(model, full, items)[[len(p) - 1 for p in prompts]])
            else:
                xs.append(torch.stack([_forward_states(model, *render(seq[:t]))[-1] for t in range(1, len(seq))]))
            ys.append(torch.tensor(seq[1:]))
            ls.append(recent_items([seq[:t] for t in range(1, len(seq))], recent))
    if not xs:
        raise DataError("no training sequence has two items: nothing to fit an item head on; train on a dataset "
                        "whose users have at least 4 interactions, or set training.item_head: false")
    return torch.cat(xs).cpu(), torch.cat(ys), torch.cat(ls)


def similar_stream(itok: Any, stream: str) -> str:
    """The stream ``stream`` names (``"auto"``: ``behavior`` when the tokenizer has it, else its first)."""
    if stream != "auto":
        return stream
    return "behavior" if "behavior" in itok.order else itok.order[0]


def catalog_embeddings(itok: Any, stream: str, item_ids: Sequence[str]) -> np.ndarray:
    """``[N, D]`` the item tokenizer's ``stream`` embeddings (``itok``: a loaded
    :class:`~genrec.item_tokenizer.artifact.ItemTokenizer`; ``"auto"``: ``behavior`` when it has
    that stream, else its first) in the catalog order of ``item_ids``."""
    stream = similar_stream(itok, stream)
    if stream not in itok.order:
        raise DataError(f"the item head's similar-item term reads the {stream!r} stream's embeddings, but tokenizer "
                        f"{itok.path} has streams {itok.order}; name one of them")
    rows = {item: i for i, item in enumerate(itok.item_ids)}
    missing = [i for i in item_ids if i not in rows]
    if missing:
        raise DataError(f"{len(missing)} catalog items (e.g. {missing[0]!r}) have no embedding in tokenizer {itok.path}; "
                        "use the run's own item tokenizer")
    return np.asarray(itok.embeddings(stream, mmap=False)[[rows[i] for i in item_ids]], dtype=np.float32)


def head_users(valid: Any, users: int, epoch_users: int | None, seed: int) -> tuple[Any, tuple | None]:
    """The seeded validation users of a head fit from the ``valid`` split: ``(the weight's users,
    (histories, targets) of the epoch's users or None)``; ``users`` / ``epoch_users`` 0 = all,
    ``epoch_users`` None = the weight's users (:func:`fit_for_model`'s ``epoch_users``)."""
    from genrec.data.split import sample_users, subset

    weight = subset(valid, sample_users(len(valid), users or None, seed))
    if epoch_users is None:
        return weight, None
    picks = subset(valid, sample_users(len(valid), epoch_users or None, seed))
    return weight, (picks.histories, picks.targets)


def choose_fusion(model: Any, heads: Sequence[ItemHead], render: Render, trie: ItemTrie,
                  histories: Sequence[Sequence[int]], targets: np.ndarray, num_beams: int,
                  weights: Sequence[float] = WEIGHTS, batch_size: int = 32, progress: bool = False
                  ) -> tuple[list[dict[float, dict[str, float]]], dict[tuple[int, float], np.ndarray]]:
    """The fused ranking on validation users for each head and weight: ``(per head {weight:
    ranking metrics}, {(head index, weight): per-user NDCG@10 [U]})``. One beam search and one
    prefill per batch serve every head (:func:`candidates_for_heads`); each head ranks exactly what
    it would alone. The heads share their tables (the same ``orders``)."""
    adapter = find_item_adapter(model)
    ranked: list[dict[float, list[np.ndarray]]] = [{w: [] for w in weights} for _ in heads]
    for start in tqdm(range(0, len(histories), batch_size), desc="item head: fused ranking", disable=not progress,
                      mininterval=5):
        rendered = [render(h) for h in histories[start:start + batch_size]]
        prompts = [p for p, _ in rendered]
        extras = None if adapter is None else prompt_extras(adapter, [len(p) for p in prompts], [i for _, i in rendered])
        beam = search(model, prompts, num_beams, num_beams, trie=trie, prompt_embeds=extras)
        recent = recent_items(histories[start:start + batch_size], heads[0].orders)
        cand, codes, head_lp = candidates_for_heads(
            model, prompts, trie, beam.items, [lambda x, r=recent, h=h: h(x, r) for h in heads], heads[0].extra,
            prompt_embeds=extras, beam_scores=beam.scores, top=[(w, 20) for w in weights])
        for e in range(len(heads)):
            for w in weights:
                ranked[e][w].append(fuse(cand, codes[e], head_lp[e], w, 20)[1].cpu().numpy())
    targets = np.asarray(targets)
    lists = {(e, w): np.concatenate(r) for e, per in enumerate(ranked) for w, r in per.items()}
    metrics = [{w: ranking_metrics(lists[e, w], targets, (10, 20)) for w in weights} for e in range(len(heads))]
    return metrics, {key: user_ndcg(r, targets, 10) for key, r in lists.items()}


def choose_option(gains: dict[tuple[int, float], np.ndarray], rule: str = "best") -> tuple[int, float]:
    """The ``(head index, weight)`` to serve from ``gains[(head index, weight)] = per-user
    validation NDCG@10 [U]`` (the same users for every option). ``best``: the highest mean (ties:
    the smaller weight, then the earlier head). ``one_se``: the smallest weight (then the earliest
    head) whose mean is below the best's by no more than one standard error of their paired
    per-user difference — a difference the validation users cannot tell from noise does not buy
    a heavier head."""
    if rule not in WEIGHT_RULES:
        raise DataError(f"the item head's weight rule must be one of {WEIGHT_RULES}, got {rule!r}")
    order = sorted(gains, key=lambda ew: (ew[1], ew[0]))  # the lightest option first
    best = max(order, key=lambda ew: float(gains[ew].mean()))  # the first of equal means
    if rule == "best":
        return best
    for option in order:
        diff = gains[best] - gains[option]
        se = float(diff.std(ddof=1)) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if float(diff.mean()) <= se:
            return option
    return best


def fit_for_model(model: Any, render: Render, trie: ItemTrie, train_sequences: Sequence[Sequence[int]],
                  valid_histories: Sequence[Sequence[int]], valid_targets: np.ndarray, num_items: int, *,
                  max_history: int = 20, num_beams: int = 20, extra: int = 50, seed: int = 0, progress: bool = True,
                  transitions: int = 3, similar: int = 0, embeddings: np.ndarray | None = None,
                  neighbours: int = 50, seen: bool = True, cold_neighbours: int = 0,
                  epoch_users: tuple[Sequence[Sequence[int]], np.ndarray] | None = None, select: str = "head",
                  weight_rule: str = "best") -> tuple[ItemHead, dict[str, Any]]:
    """Fit the head of a trained ``model`` and choose its fusion weight; returns the head and a
    report (per-epoch history, validation metrics per weight, the chosen weight). ``transitions``:
    add the transition counts of ``train_sequences`` from the history's last that many items
    (:class:`Transitions`, gaps 1..``transitions``; 0: the rows alone). ``similar``: add, from the
    last that many items, their ``neighbours`` nearest items by ``embeddings [N, D]`` (catalog
    order; :meth:`Transitions.neighbours`). ``seen``: add a learned weight on the history's own
    items (its last ``max_history``, as many as a prompt holds). ``cold_neighbours``: items that
    were never a training target borrow the mean row of that many nearest trained items by
    ``embeddings`` (:meth:`ItemHead.borrow`; 0: they get the uniform log-probability).
    ``epoch_users = (histories, targets)``: the validation users whose head-alone NDCG@10 picks the
    head's epoch (one forward each, so they can be many more than the beam-searched users of the
    weight choice); ``None``: ``valid_histories`` / ``valid_targets``. ``select``: ``"head"`` keeps
    the epoch with the best head-alone NDCG@10 (on ``epoch_users``), then picks the weight;
    ``"fused"`` picks the epoch and the weight together by the fused ranking's NDCG@10 on
    ``valid_histories`` (every epoch the fit ran). ``weight_rule``: how the fused NDCG@10 decides
    (:func:`choose_option`: ``best`` or ``one_se``)."""
    if weight_rule not in WEIGHT_RULES:
        raise DataError(f"the item head's weight rule must be one of {WEIGHT_RULES}, got {weight_rule!r}")
    if select not in SELECT:
        raise DataError(f"the item head's epoch selection must be one of {SELECT}, got {select!r}")
    if (similar or cold_neighbours) and embeddings is None:
        raise DataError("the item head's similar-item term and borrowed rows need item embeddings; pass the run's "
                        "item tokenizer embeddings, or set both to 0")
    if embeddings is not None and len(embeddings) != num_items:
        raise DataError(f"item embeddings have {len(embeddings)} rows but the catalog has {num_items} items; "
                        "use the embeddings of the run's item tokenizer")
    model.eval()
    orders = max(transitions, similar, max_history if seen else 0)
    states, targets, recent = prefix_states(model, render, train_sequences, max_history, progress, orders)
    known = torch.bincount(targets, minlength=num_items) > 0
    pick_histories, pick_targets = epoch_users if epoch_users is not None else (valid_histories, valid_targets)
    with torch.inference_mode():
        v_states = torch.stack([_forward_states(model, *render(h))[-1]
                                for h in tqdm(pick_histories, desc="item head: validation states",
                                              disable=not progress, mininterval=5)]).cpu()
    tables = [Transitions.count(train_sequences, num_items, gap) for gap in range(1, transitions + 1)]
    if similar:
        near = Transitions.neighbours(embeddings, neighbours)
        tables += [Transitions(near.indptr, near.indices, near.values, gap, "similar") for gap in range(1, similar + 1)]
    snapshots: list[dict[str, torch.Tensor]] | None = [] if select == "fused" else None
    head, history = fit_item_head(states, targets, known, (v_states, torch.as_tensor(np.asarray(pick_targets))),
                                  seed=seed, transitions=tables, recent=(recent, recent_items(pick_histories, orders)),
                                  seen=max_history if seen else 0, log=log.info, snapshots=snapshots)
    heads = [head]
    if snapshots:  # one head per epoch, sharing the tables
        heads = []
        for state in snapshots:
            h = ItemHead(head.linear.in_features, head.known, transitions=head.transitions, seen=head.seen)
            h.load_state_dict(state)
            heads.append(h.eval())
    borrowed = 0
    for h in heads:
        h.extra = extra
        borrowed = h.borrow(embeddings, cold_neighbours) if cold_neighbours else 0
    if borrowed:
        log.info("item head: %d items without a training target borrow the mean row of their %d nearest items",
                 borrowed, cold_neighbours)
    per_head, gains = choose_fusion(model, heads, render, trie, valid_histories, valid_targets, num_beams,
                                    progress=progress and len(heads) > 1)
    top_e, top_w = choose_option(gains, "best")
    e_best, best = choose_option(gains, weight_rule)
    head, by_weight = heads[e_best], per_head[e_best]
    head.weight = float(best)
    epoch = e_best + 1 if snapshots else max(history, key=lambda r: r["ndcg@10"])["epoch"]
    if snapshots:
        for e, per in enumerate(per_head):
            log.info("item head epoch %d, fused: validation ndcg@10 %s", e + 1,
                     " ".join(f"{w:g}:{m['ndcg@10']:.4f}" for w, m in per.items()))
    for w, m in by_weight.items():
        log.info("item head weight %s: validation recall@10 %.4f ndcg@10 %.4f%s", w, m["recall@10"], m["ndcg@10"],
                 f" (chosen, epoch {epoch})" if w == best else "")
    if (top_e, top_w) != (e_best, best):
        log.info("item head: weight %s%s is within one standard error of the best (%s%s), and lighter",
                 best, f", epoch {e_best + 1}" if snapshots else "", top_w, f", epoch {top_e + 1}" if snapshots else "")
    report = {"states": len(states), "known_items": int(known.sum()), "epochs": history, "weight": float(best),
              "select": select, "epoch": epoch, "weight_rule": weight_rule,
              "best": {"epoch": top_e + 1 if snapshots else epoch, "weight": float(top_w)},
              **({"by_epoch_weight": {str(e + 1): {str(w): m for w, m in per.items()} for e, per in enumerate(per_head)}}
                 if snapshots else {}),
              "transitions": [len(t) for t in tables if t.kind == "next"],
              "similar": [len(t) for t in tables if t.kind == "similar"],
              "transition_weights": head.beta.detach().tolist(),
              "seen": head.seen, "seen_weight": float(head.alpha.detach().sum()) if head.seen else None,
              "borrowed": borrowed, "cold_neighbours": cold_neighbours,
              "extra": extra, "validation_users": len(valid_targets), "epoch_users": len(pick_targets),
              "by_weight": {str(w): m for w, m in by_weight.items()}}
    return head, report
