"""Embedding preprocessing before clustering: centring, whitening, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from itok_synthetic import blobs

from genrec.config import load_config
from genrec.errors import DataError
from genrec.item_tokenizer.artifact import load_item_tokenizer
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.cold_start import assign_new_items
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.item_tokenizer.preprocess import Preprocess, mean_pair_cosine
from genrec.item_tokenizer.tree import CodeTree, fit_tree


def _shared_offset(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6 direction clusters (rays) around a large shared offset, with log-normal norms inside
    each cluster: like pooled LLM states, every pair of items is nearly parallel (cosine ~0.98)."""
    rng = np.random.default_rng(seed)
    dim, k = 16, 6
    angle = 2 * np.pi * np.arange(k) / k
    dirs = np.zeros((k, dim), dtype=np.float32)
    dirs[:, 1], dirs[:, 2] = np.cos(angle), np.sin(angle)
    label = np.arange(n) % k
    scale = rng.lognormal(0.0, 1.0, n).astype(np.float32)[:, None]
    x = 20.0 * np.eye(dim, dtype=np.float32)[0] + scale * dirs[label]
    x += 0.02 * rng.standard_normal((n, dim)).astype(np.float32)
    return x.astype(np.float32), label


def _purity(codes: np.ndarray, label: np.ndarray) -> float:
    return sum(np.bincount(label[codes == c]).max() for c in np.unique(codes)) / len(codes)


def test_centring_whitening_and_normalisation():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 6)) * [10, 5, 1, 1, 0.1, 0.01] + 7).astype(np.float32)
    c = Preprocess.fit(x, center=True).apply(x)
    assert np.abs(c.mean(axis=0)).max() < 1e-4
    np.testing.assert_allclose(c + Preprocess.fit(x).mean, x, atol=1e-4)  # x itself untouched
    w = Preprocess.fit(x, whiten=True).apply(x)
    np.testing.assert_allclose(np.cov(w.T), np.eye(6), atol=1e-3)
    nrm = Preprocess.fit(x, normalize=True).apply(x)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)
    assert Preprocess.fit(x, center=False).is_identity
    y = x.copy()
    assert Preprocess.fit(y).apply(y, inplace=True) is y and np.abs(y.mean(axis=0)).max() < 1e-4
    with pytest.raises(TypeError, match="float32"):
        Preprocess.fit(x).apply(x.astype(np.float64), inplace=True)


def test_centred_directions_recover_clusters_that_raw_distances_miss():
    x, label = _shared_offset()
    assert mean_pair_cosine(x) > 0.9
    raw = fit_tree(x, [6], "balanced", progress=False).codes[:, 0]
    pre = Preprocess.fit(x, center=True, normalize=True)
    assert abs(mean_pair_cosine(pre.apply(x))) < 0.2
    good = fit_tree(pre.apply(x), [6], "balanced", progress=False).codes[:, 0]
    # raw Euclidean cells also follow the items' norms; centred directions separate the rays
    assert _purity(good, label) > 0.9 and _purity(raw, label) < _purity(good, label) - 0.2


def test_the_tree_stores_its_transform_and_routes_raw_vectors(tmp_path):
    x, _ = _shared_offset(120)
    pre = Preprocess.fit(x, whiten=True, normalize=True)
    tree = fit_tree(pre.apply(x), [4, 4], "plain", progress=False)
    tree.preprocess = pre
    tree.save(tmp_path / "t.npz")
    back = CodeTree.load(tmp_path / "t.npz")
    assert back.preprocess.describe() == {"center": True, "whiten": True, "normalize": True}
    np.testing.assert_array_equal(back.preprocess.whiten, pre.whiten)
    routed = [back.route(x[i], x)[0] for i in range(0, 120, 7)]
    assert routed == tree.codes[::7].tolist()
    # files written before preprocessing existed load as the identity
    plain = fit_tree(x, [4], "plain", progress=False)
    plain.save(tmp_path / "old.npz")
    assert CodeTree.load(tmp_path / "old.npz").preprocess.is_identity


def _build(tmp_path, *overrides: str):
    x, _ = _shared_offset(60)
    np.save(tmp_path / "sem.npy", x)
    np.save(tmp_path / "beh.npy", blobs(60, 6, 4, seed=2)[0])
    cfg = load_config(TokenizerConfig, None, [
        "name=tok", f"out_dir={tmp_path / 'out'}", "progress=false", "plots=false",
        "semantic.encoder=precomputed", f"semantic.embeddings={tmp_path / 'sem.npy'}",
        "semantic.kmeans.k=8", "semantic.kmeans.depth=auto",
        "behavior.encoder=precomputed", f"behavior.embeddings={tmp_path / 'beh.npy'}", "behavior.kmeans.k=8",
        *overrides])
    return build_tokenizer(cfg), x


def test_build_centres_and_normalises_by_default_and_records_it(tmp_path):
    out, x = _build(tmp_path)
    tok = load_item_tokenizer(out)
    sem = tok.stats["streams"]["semantic"]
    assert sem["preprocess"] == {"center": True, "whiten": False, "normalize": True}
    assert sem["mean_cosine"]["raw"] > 0.9 and abs(sem["mean_cosine"]["clustered"]) < 0.2
    np.testing.assert_array_equal(tok.embeddings("semantic"), x)  # the raw encoder output is kept
    tree = tok.tree("semantic")
    assert np.abs(tree.levels[0].centroids).max() <= 1.0 + 1e-5  # centroids of unit vectors
    # cold start goes through the stored transform: a copy of an item lands on its codes
    codes = assign_new_items(out, [_item("copy9")], semantic_embeddings=x[9:10], progress=False)
    assert codes["copy9"][:2] == tok.item_tokens["9"][:2]
    after = load_item_tokenizer(out)
    assert after.stats["streams"]["semantic"]["preprocess"] == sem["preprocess"]  # kept across versions


def test_preprocessing_can_be_switched_off_or_whiten(tmp_path):
    out, _ = _build(tmp_path, "semantic.kmeans.center=false", "semantic.kmeans.normalize=false")
    tok = load_item_tokenizer(out)
    assert tok.stats["streams"]["semantic"]["preprocess"] == {"center": False, "whiten": False, "normalize": False}
    assert tok.tree("semantic").preprocess.is_identity and tok.stats["unique_rate"] == 1.0
    out, _ = _build(tmp_path, "name=w", "semantic.kmeans.whiten=true")
    assert load_item_tokenizer(out).tree("semantic").preprocess.whiten.shape == (16, 16)


def test_cold_start_rejects_non_finite_or_misshaped_embeddings(tmp_path):
    out, x = _build(tmp_path)
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(DataError, match=r"1 new item embedding\(s\) contain NaN or inf.*'n2'"):
        assign_new_items(out, [_item("n1"), _item("n2")], semantic_embeddings=bad, progress=False)
    with pytest.raises(DataError, match=r"shape \[1, 5\], expected \[1, 16\]"):
        assign_new_items(out, [_item("n1")], semantic_embeddings=np.zeros((1, 5), np.float32), progress=False)
    assert load_item_tokenizer(out).version == 1  # nothing was written


def _item(item_id: str):
    from genrec.data.dataset import Item

    return Item(item_id, title=item_id)
