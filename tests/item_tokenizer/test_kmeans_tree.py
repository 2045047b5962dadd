"""Flat k-means, balanced assignment and code trees on synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from itok_synthetic import blobs

from genrec.item_tokenizer.balanced import balanced_assign, balanced_kmeans, capacities
from genrec.item_tokenizer.codebook import prefix_ids
from genrec.item_tokenizer.kmeans import fit_centroids, kmeans_pp, nearest, top_candidates
from genrec.item_tokenizer.tree import CodeTree, fit_tree, resolve_branching


def _node_sizes_differ_by_at_most_one(codes: np.ndarray) -> None:
    """At every level, the children of each node differ in size by at most one item."""
    ids = prefix_ids(codes)
    parent = np.zeros(len(codes), dtype=np.int64)
    for lvl in range(codes.shape[1]):
        child = ids[lvl]
        for p in np.unique(parent):
            sizes = np.bincount(child[parent == p])
            sizes = sizes[sizes > 0]
            assert sizes.max() - sizes.min() <= 1, f"level {lvl} node {p}: sizes {sorted(set(sizes))}"
        parent = child


def test_lloyd_recovers_well_separated_blobs():
    x, label = blobs(400, 16, 8, seed=1)
    recovered = 0
    for seed in range(10):  # k-means is a local search: require it on (nearly) every seed
        pred, _ = nearest(x, fit_centroids(x, 8, np.random.default_rng(seed), iters=20))
        # each true blob maps to exactly one cluster and vice versa
        recovered += len({(a, b) for a, b in zip(label.tolist(), pred.tolist())}) == 8
    assert recovered >= 9


def test_kmeans_pp_handles_duplicate_points():
    x = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)  # 3 distinct points, 15 rows
    c = kmeans_pp(x, 5, np.random.default_rng(0))
    assert len({tuple(r) for r in c}) == 3 and c.shape == (5, 3)


def test_top_candidates_are_sorted_and_respect_the_allowed_mask():
    x, _ = blobs(50, 8, 5)
    c = x[:12].copy()
    idx, dist = top_candidates(x, c, 4)
    assert (np.diff(dist, axis=1) >= 0).all()
    assert (idx[:12, 0] == np.arange(12)).all()  # a centroid's own point is nearest to it
    allowed = np.zeros(12, dtype=bool)
    allowed[[3, 7]] = True
    idx, _ = top_candidates(x, c, 4, allowed=allowed)
    assert idx.shape == (50, 2) and set(np.unique(idx)) <= {3, 7}


@pytest.mark.parametrize("n,k", [(100, 7), (64, 8), (9, 9), (1000, 16)])
def test_balanced_assignment_sizes_differ_by_at_most_one(n, k):
    x, _ = blobs(n, 8, 3, seed=n)  # very unbalanced natural clusters
    c = fit_centroids(x, k, np.random.default_rng(0))
    labels = balanced_assign(x, c)
    sizes = np.bincount(labels, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1


def test_candidate_path_matches_dense_path_constraints(monkeypatch):
    import genrec.item_tokenizer.balanced as bal

    x, _ = blobs(3000, 8, 4, seed=2)
    c = fit_centroids(x, 32, np.random.default_rng(0))
    monkeypatch.setattr(bal, "DENSE_LIMIT", 0)  # force the O(N * m) candidate path with refills
    labels = bal.balanced_assign(x, c, m=2)
    sizes = np.bincount(labels, minlength=32)
    assert sizes.max() - sizes.min() <= 1
    # the constraint costs little when natural clusters are balanced: most points keep a top-2 choice
    top2, _ = top_candidates(x, c, 2)
    assert (top2 == labels[:, None]).any(axis=1).mean() > 0.5


def test_balanced_kmeans_keeps_equal_blobs_intact():
    x, label = blobs(240, 16, 4, seed=3)
    labels, means = balanced_kmeans(x, fit_centroids(x, 4, np.random.default_rng(0)))
    assert len({(a, b) for a, b in zip(label.tolist(), labels.tolist())}) == 4
    assert means.shape == (4, 16)


def test_capacities_give_the_extra_slots_to_the_most_demanded():
    cap = capacities(10, 4, np.array([0, 5, 1, 4]))
    assert cap.sum() == 10 and cap.tolist() == [2, 3, 2, 3]


def test_resolve_branching():
    assert resolve_branching(256, 2, 10) == [256, 256]
    assert resolve_branching(16, "auto", 16) == [16]
    assert resolve_branching(16, "auto", 17) == [16, 16]
    assert resolve_branching(256, "auto", 1_000_000) == [256, 256, 256]
    assert resolve_branching([8, 32], "auto", 100) == [8, 32]
    assert resolve_branching([8, 32], "auto", 1000) == [8, 32, 32, 32][:3]
    with pytest.raises(ValueError):
        resolve_branching([8, 32], 3, 10)


def test_balanced_tree_is_unique_by_construction_and_balanced_at_every_node():
    x, _ = blobs(1000, 16, 5, seed=4)
    tree = fit_tree(x, resolve_branching(8, "auto", 1000), "balanced", seed=0, progress=False)
    assert tree.codes.shape == (1000, 4)
    assert len(np.unique(tree.codes, axis=0)) == 1000
    _node_sizes_differ_by_at_most_one(tree.codes)


def test_trees_are_deterministic_given_the_seed():
    x, _ = blobs(600, 8, 6, seed=5)
    for method in ("balanced", "plain", "residual"):
        a = fit_tree(x, [8, 8], method, seed=3, progress=False).codes
        b = fit_tree(x, [8, 8], method, seed=3, progress=False).codes
        assert np.array_equal(a, b), method


def test_k_larger_than_node_falls_back_to_one_child_per_item():
    x, _ = blobs(5, 4, 2)
    for method in ("balanced", "plain"):
        tree = fit_tree(x, [16, 16], method, progress=False)
        assert tree.codes[:, 0].tolist() == [0, 1, 2, 3, 4]  # K_eff = 5, item order
        assert tree.codes[:, 1].tolist() == [0] * 5
    tree = fit_tree(x, [16], "residual", progress=False)
    assert len(set(tree.codes[:, 0].tolist())) == 5  # codebook capped at the 5 items


def test_plain_and_residual_trees_can_collide():
    x, _ = blobs(500, 8, 2, seed=6)
    for method in ("plain", "residual"):
        codes = fit_tree(x, [4, 4], method, progress=False).codes
        assert len(np.unique(codes, axis=0)) < 500


def test_saved_tree_routes_build_items_back_to_their_own_codes(tmp_path):
    x, _ = blobs(300, 8, 6, seed=7)
    for method in ("balanced", "plain", "residual"):
        tree = fit_tree(x, [6, 64], method, progress=False)
        tree.save(tmp_path / f"{method}.npz")
        loaded = CodeTree.load(tmp_path / f"{method}.npz")
        agree = np.mean([loaded.route(x[i], x)[0] == tree.codes[i].tolist() for i in range(0, 300, 7)])
        # residual codes are nearest-centroid by construction; tree paths can differ where the
        # balance constraint (or the final re-centring) moved an item off its nearest centroid
        assert agree >= (1.0 if method == "residual" else 0.8), method
