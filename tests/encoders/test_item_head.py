"""The item head: fits a next-item map from states, gives unseen items the uniform log-prob,
round-trips through its file and refuses a file of another model or catalog."""

import pytest
import torch

from genrec.encoders.item_head import (
    ItemHead,
    Transitions,
    fit_item_head,
    head_metrics,
    load_item_head,
    run_item_head,
    save_item_head,
)
from genrec.errors import DataError
from genrec.generation.fusion import recent_items


def _task(n_items=12, hidden=16, n=600, seed=0):
    """States that identify their next item through a hidden linear map (item 11 never a target)."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.randn(n_items, hidden, generator=g)
    targets = torch.randint(0, n_items - 1, (n,), generator=g)
    states = proto[targets] + 0.3 * torch.randn(n, hidden, generator=g)
    return states, targets


def test_head_learns_the_next_item_and_is_uniform_on_unseen_items():
    states, targets = _task()
    known = torch.bincount(targets, minlength=12) > 0
    assert not known[11]
    head, history = fit_item_head(states[:500], targets[:500], known, (states[500:], targets[500:]), epochs=30,
                                  patience=30, lr=0.05, batch_size=64)
    assert history[-1]["loss"] < history[0]["loss"]
    recall, ndcg = head_metrics(head(states[500:]), targets[500:], k=1)
    assert recall > 0.9 and 0 < ndcg <= recall
    logp = head(states[:3])
    assert torch.allclose(logp[:, 11], torch.full((3,), -torch.log(torch.tensor(11.0)).item()))
    assert torch.logsumexp(logp[:, :11], 1).max() <= 1e-5  # a distribution over the known items
    torch.manual_seed(123)  # every draw of the fit, dropout included, comes from its seed, not the global RNG
    again, _ = fit_item_head(states[:500], targets[:500], known, (states[500:], targets[500:]), epochs=30,
                             patience=30, lr=0.05, batch_size=64)
    for name, tensor in head.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_items_without_a_target_borrow_the_rows_of_their_nearest_items(tmp_path):
    torch.manual_seed(0)
    states, targets = _task()
    known = torch.bincount(targets, minlength=12) > 0
    head, _ = fit_item_head(states[:500], targets[:500], known, (states[500:], targets[500:]), epochs=30,
                            patience=30, lr=0.05, batch_size=64)
    emb = torch.randn(12, 6, generator=torch.Generator().manual_seed(1))
    emb[11] = emb[3] + 0.01  # the untrained item 11 resembles item 3
    assert head.borrow(emb, k=0) == 0 and not head.borrowed.any()
    assert head.borrow(emb, k=1) == 1 and head.borrowed.tolist() == [False] * 11 + [True]
    logp = head(states[targets == 3][:5])
    assert torch.allclose(logp[:, 11], logp[:, 3]) and bool((logp[:, 11] > logp[:, 5]).all())
    assert torch.equal(head.linear.weight[11], head.linear.weight[3])
    unit = torch.nn.functional.normalize(emb - emb[:11].mean(0), dim=1)  # centred on the trained items
    near = (unit[:11] @ unit[11]).topk(2).indices
    assert head.borrow(emb, k=2) == 1  # a second call redoes the untrained items' rows only
    assert torch.allclose(head.linear.bias[11], head.linear.bias[near].mean())
    assert torch.allclose(head.linear.weight[11], head.linear.weight[near].mean(0))
    back = load_item_head(save_item_head(head, tmp_path / "h.safetensors"), 16, 12)
    assert back.borrowed.tolist() == head.borrowed.tolist() and torch.allclose(back(states[:3]), head(states[:3]))
    with pytest.raises(ValueError, match="embeddings have 5 rows"):
        head.borrow(emb[:5])


def test_head_file_round_trips_and_is_checked_against_the_model(tmp_path):
    head = ItemHead(8, torch.tensor([True, True, False, True]), weight=2.0, extra=7)
    path = save_item_head(head, tmp_path / "item_head.safetensors", {"seed": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["item_head.safetensors"]  # no temporary file left
    back = load_item_head(path, 8, 4)
    assert (back.weight, back.extra) == (2.0, 7) and back.known.tolist() == [True, True, False, True]
    x = torch.randn(2, 8)
    torch.testing.assert_close(back(x), head(x))
    with pytest.raises(DataError, match="width 16 and its catalog 4 items"):
        load_item_head(path, 16, 4)

    assert run_item_head(tmp_path / "missing.safetensors", 8, 4) is None
    assert run_item_head(path, 8, 4).weight == 2.0
    save_item_head(ItemHead(8, torch.ones(4, dtype=torch.bool), weight=0.0), path)
    assert run_item_head(path, 8, 4) is None  # weight 0: validation chose the codes alone


def test_transitions_count_consecutive_pairs_and_give_dense_rows():
    seqs = [[0, 1, 2, 1, 2], [3, 1, 2], [4]]
    table = Transitions.count(seqs, num_items=5)
    assert len(table) == 4  # (0,1) (1,2) (2,1) (3,1)
    rows = table.rows(torch.tensor([1, 4, -1, 3]))
    expect = torch.zeros(4, 5)
    expect[0, 2] = torch.log1p(torch.tensor(3.0))  # 1 -> 2 three times
    expect[3, 1] = torch.log1p(torch.tensor(1.0))
    torch.testing.assert_close(rows, expect)  # item 4 has no successor; -1 (no history) gives zeros
    skip = Transitions.count(seqs, num_items=5, gap=2)  # (0,2) (1,1) (2,2) (3,2)
    assert len(skip) == 4 and skip.gap == 2
    assert skip.rows(torch.tensor([3]))[0].tolist() == [0, 0, float(torch.log1p(torch.tensor(1.0))), 0, 0]
    assert recent_items([[5, 6, 7], [8], []], 2).tolist() == [[7, 6], [8, -1], [-1, -1]]


def test_head_with_transitions_learns_what_the_states_cannot_tell_and_round_trips(tmp_path):
    """Next item = successor of the item two back; the states are noise: only the gap-2 term can rank."""
    g = torch.Generator().manual_seed(0)
    n_items, succ = 10, torch.tensor([3, 5, 7, 9, 1, 0, 2, 4, 6, 8])
    seqs = []
    for _ in range(200):
        s = torch.randint(0, n_items, (2,), generator=g).tolist()
        for _ in range(5):
            s.append(int(succ[s[-2]]) if torch.rand(1, generator=g) < 0.8 else int(torch.randint(0, n_items, (1,),
                                                                                                 generator=g)))
        seqs.append(s)
    prefixes = [s[:t] for s in seqs for t in range(1, len(s))]
    targets = torch.tensor([x for s in seqs for x in s[1:]])
    states = torch.randn(len(targets), 8, generator=g)
    tables = [Transitions.count(seqs, n_items, gap) for gap in (1, 2)]
    known = torch.ones(n_items, dtype=torch.bool)
    v_hist = [[int(torch.randint(0, n_items, (1,), generator=g)), i, 0] for i in range(n_items) for _ in range(5)]
    valid = (torch.randn(len(v_hist), 8, generator=g), succ.repeat_interleave(5))  # five users per item two back
    recent = (recent_items(prefixes, 2), recent_items(v_hist, 2))
    plain, _ = fit_item_head(states, targets, known, valid, epochs=10, patience=10, lr=0.05, batch_size=64)
    head, history = fit_item_head(states, targets, known, valid, epochs=10, patience=10, lr=0.05, batch_size=64,
                                  transitions=tables, recent=recent)
    assert head_metrics(head(valid[0], recent[1]), valid[1], k=1)[0] == 1.0
    assert head_metrics(plain(valid[0]), valid[1], k=1)[0] < 0.5
    assert head.orders == 2 and history[-1]["beta"][1] > history[-1]["beta"][0]  # the gap that predicts weighs more
    path = save_item_head(head, tmp_path / "item_head.safetensors")
    back = load_item_head(path, 8, n_items)
    assert [t.gap for t in back.transitions] == [1, 2]
    torch.testing.assert_close(back(valid[0], recent[1]), head(valid[0], recent[1]))
    torch.testing.assert_close(back(valid[0]), head(valid[0]))  # no history given: the rows alone
    save_item_head(ItemHead(8, torch.ones(11, dtype=torch.bool), transitions=tables), path)
    with pytest.raises(DataError, match="transitions of 10 items"):
        load_item_head(path, 8, 11)


def test_neighbours_keep_each_items_nearest_others_scored_above_the_cut():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 8, generator=g)
    emb = torch.cat([base, base + 0.05 * torch.randn(4, 8, generator=g)])  # item i and i + 4 are twins
    table = Transitions.neighbours(emb.numpy(), k=1, gap=2)
    assert (table.kind, table.gap, len(table)) == ("similar", 2, 8)
    rows = table.rows(torch.tensor([0, 5, -1]))
    assert rows[0].argmax() == 4 and rows[1].argmax() == 1 and rows[2].abs().sum() == 0
    assert (rows[:2] > 0).sum(1).tolist() == [1, 1] and rows[:2].max() <= 2.0  # one neighbour each, none itself
    assert len(Transitions.neighbours(emb.numpy(), k=50)) == 8 * 6  # k capped below the catalog size
    with pytest.raises(ValueError, match="unknown transition table kind"):
        Transitions(table.indptr, table.indices, table.values, kind="other")


def test_similar_items_reach_transitions_no_training_sequence_holds(tmp_path):
    """Next item = the last item's twin by embedding; validation asks about twins never seen in
    training: the counts cannot answer, the similar-item table can."""
    g = torch.Generator().manual_seed(0)
    n = 20
    base = torch.randn(n // 2, 8, generator=g)
    emb = torch.cat([base, base + 0.05 * torch.randn(n // 2, 8, generator=g)]).numpy()
    twin = torch.tensor([(i + n // 2) % n for i in range(n)])
    seen = [i for i in range(n) if i % (n // 2) < 5]  # pairs (0..4, 10..14) occur in training
    pick = lambda pool: int(pool[int(torch.randint(0, len(pool), (1,), generator=g))])
    seqs = []
    for _ in range(400):  # seen item, its twin (80%), then any item: unseen ones end sequences only
        a = pick(seen)
        seqs.append([a, int(twin[a]) if torch.rand(1, generator=g) < 0.8 else pick(seen), pick(range(n))])
    targets = torch.tensor([x for s in seqs for x in s[1:]])
    prefixes = [s[:t] for s in seqs for t in range(1, len(s))]
    states = torch.randn(len(targets), 8, generator=g)
    unseen = torch.tensor([i for i in range(n) if i % (n // 2) >= 5])
    valid = (torch.randn(len(unseen), 8, generator=g), twin[unseen])
    known = torch.ones(n, dtype=torch.bool)
    counts = [Transitions.count(seqs, n, 1)]
    near = Transitions.neighbours(emb, k=2)
    kw = {"epochs": 20, "patience": 20, "lr": 0.1, "batch_size": 64, "dropout": 0.0}
    recent = (recent_items(prefixes, 1), unseen[:, None])
    plain, _ = fit_item_head(states, targets, known, valid, transitions=counts, recent=recent, **kw)
    head, history = fit_item_head(states, targets, known, valid, transitions=[*counts, near], recent=recent, **kw)
    assert head_metrics(head(valid[0], recent[1]), valid[1], k=1)[0] == 1.0
    assert head_metrics(plain(valid[0], recent[1]), valid[1], k=1)[0] < 0.5
    assert history[-1]["beta"][1] > 0 and head.orders == 1
    back = load_item_head(save_item_head(head, tmp_path / "item_head.safetensors"), 8, n)
    assert [(t.gap, t.kind) for t in back.transitions] == [(1, "next"), (1, "similar")]
    torch.testing.assert_close(back(valid[0], recent[1]), head(valid[0], recent[1]))


def _seen_task(repeat: bool, n=800, n_items=20, seed=0):
    """Histories of 5 of the 10 popular items (0-9); the next item is another popular item
    (``repeat=False``: never one of the history's) or one of the history's own (``repeat=True``).
    The states say nothing: only the history can tell the two halves of the popular items apart."""
    g = torch.Generator().manual_seed(seed)
    hist = torch.stack([torch.randperm(10, generator=g)[:5] for _ in range(n)])  # [n, 5] most recent first
    pick = torch.randint(0, 5, (n,), generator=g)
    if repeat:
        targets = hist[torch.arange(n), pick]
    else:
        rest = torch.stack([torch.tensor([i for i in range(10) if i not in set(h.tolist())]) for h in hist])
        targets = rest[torch.arange(n), pick]
    states = torch.randn(n, 8, generator=g)
    return states, targets, hist, torch.ones(n_items, dtype=torch.bool)


@pytest.mark.parametrize("repeat", [False, True])
def test_seen_item_weight_learns_whether_users_take_an_item_twice(repeat, tmp_path):
    torch.manual_seed(0)
    states, targets, hist, known = _seen_task(repeat)
    tr, va = slice(0, 600), slice(600, 800)
    fits = {}
    for seen in (0, 5):
        head, history = fit_item_head(states[tr], targets[tr], known, (states[va], targets[va]), epochs=20,
                                      patience=20, lr=0.05, batch_size=64, recent=(hist[tr], hist[va]), seen=seen)
        fits[seen] = head
        recall, _ = head_metrics(head(states[va], hist[va]), targets[va], k=5)
        if seen:
            assert head.orders == 5 and (history[-1]["alpha"] < -3 if not repeat else history[-1]["alpha"] > 3)
            assert recall == 1.0  # the five items the target is among, found from the history alone
        else:
            assert recall < 0.7 and head.orders == 0  # popularity alone: half of the ten
    # The term survives the file; a file without it loads as a head without it.
    path = save_item_head(fits[5], tmp_path / "h.safetensors")
    back = load_item_head(path, 8, 20)
    assert back.seen == 5 and float(back.alpha.detach()) == pytest.approx(float(fits[5].alpha.detach()))
    torch.testing.assert_close(back(states[va], hist[va]), fits[5](states[va], hist[va]))
    assert load_item_head(save_item_head(fits[0], tmp_path / "old.safetensors"), 8, 20).seen == 0


def test_seen_logits_mark_each_history_item_once():
    head = ItemHead(4, torch.ones(6, dtype=torch.bool), seen=3)
    head.alpha.data.fill_(-2.0)
    recent = torch.tensor([[1, 1, 4, 5], [-1, -1, -1, -1]])  # item 5 sits beyond the 3 read
    out = head.seen_logits(recent)
    assert out[0].tolist() == [0.0, -2.0, 0.0, 0.0, -2.0, 0.0] and out[1].abs().sum() == 0
