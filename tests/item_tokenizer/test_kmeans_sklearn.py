"""``kmeans.method: sklearn``: scikit-learn's KMeans as the reference plain k-means of a code tree."""

from __future__ import annotations

import numpy as np
import pytest
from itok_synthetic import blobs

from genrec.config import load_config
from genrec.errors import ConfigError
from genrec.item_tokenizer.config import KMeansConfig
from genrec.item_tokenizer.kmeans import cluster_means, sklearn_centroids
from genrec.item_tokenizer.tree import CodeTree, fit_tree


def _distortion(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    means, _ = cluster_means(x, labels, k)
    return float(((x - means[labels]) ** 2).sum(axis=1).mean())


def test_sklearn_recovers_blobs_and_matches_genrec_plain():
    x, label = blobs(400, 16, 8, seed=1)
    c = sklearn_centroids(x, 8, np.random.default_rng(0), iters=20)
    assert c.shape == (8, 16) and c.dtype == np.float32
    sk = fit_tree(x, [8], "sklearn", seed=0, progress=False).codes[:, 0]
    plain = fit_tree(x, [8], "plain", seed=0, progress=False).codes[:, 0]
    # every true blob lands in one cluster
    assert all(len(set(sk[label == b].tolist())) == 1 for b in range(8))
    assert _distortion(x, sk, 8) == pytest.approx(_distortion(x, plain, 8), rel=0.05)


def test_sklearn_tree_is_deterministic_and_routes_its_items(tmp_path):
    x, _ = blobs(300, 8, 6, seed=7)
    tree = fit_tree(x, [6, 8], "sklearn", seed=3, progress=False)
    assert np.array_equal(tree.codes, fit_tree(x, [6, 8], "sklearn", seed=3, progress=False).codes)
    tree.save(tmp_path / "t.npz")
    loaded = CodeTree.load(tmp_path / "t.npz")
    assert loaded.method == "sklearn"
    agree = np.mean([loaded.route(x[i], x)[0] == tree.codes[i].tolist() for i in range(0, 300, 7)])
    assert agree >= 0.8


def test_config_accepts_sklearn_and_names_the_choices():
    assert load_config(KMeansConfig, None, ["method=sklearn"]).method == "sklearn"
    with pytest.raises(ConfigError, match="balanced, plain, residual or sklearn"):
        load_config(KMeansConfig, None, ["method=faiss"])
