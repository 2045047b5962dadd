"""`genrec tokens build / inspect`: artifact contents, determinism, failures, dataset checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from itok_synthetic import blobs

from genrec.cli import main as cli
from genrec.config import load_config
from genrec.data.dataset import Dataset
from genrec.errors import ConfigError, DataError
from genrec.item_tokenizer.artifact import load_item_tokenizer
from genrec.item_tokenizer.build import build_tokenizer, inspect_report
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.item_tokenizer.vocab import parse_index


def _recipe(tmp: Path, data: Path | None, n: int, *, name: str = "tok", sem_k: str = "8", beh: str = "",
            sem: np.ndarray | None = None, plots: bool = False) -> Path:
    """Write precomputed embeddings and a recipe using them."""
    x_sem = blobs(n, 12, 6, seed=1)[0] if sem is None else sem
    np.save(tmp / "sem.npy", x_sem)
    np.save(tmp / "beh.npy", blobs(n, 6, 4, seed=2)[0])
    text = f"""
name: {name}
{'data: ' + str(data) if data else ''}
out_dir: {tmp / 'out'}
seed: 3
semantic:
  encoder: precomputed
  embeddings: {tmp / 'sem.npy'}
  kmeans: {{k: {sem_k}, depth: auto}}
behavior:
  encoder: precomputed
  embeddings: {tmp / 'beh.npy'}
  kmeans: {{k: 8, depth: 2{beh}}}
progress: false
plots: {str(plots).lower()}
"""
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


def _build(recipe: Path, *overrides: str) -> Path:
    return build_tokenizer(load_config(TokenizerConfig, recipe, list(overrides)))


def test_artifact_files_stats_and_provenance(tmp_path, dataset_dir):
    out = _build(_recipe(tmp_path, dataset_dir, 60, plots=True))
    names = {p.name for p in out.iterdir()}
    assert {"item_codes.json", "tokens.json", "centroids_semantic.npz", "centroids_behavior.npz",
            "embeddings_semantic.npy", "embeddings_behavior.npy", "config.json", "stats.json",
            "cluster_sizes_semantic.png", "cluster_sizes_behavior.png"} <= names
    tok = load_item_tokenizer(out, dataset=dataset_dir)
    ds = Dataset.load(dataset_dir)
    assert tok.item_ids == [it.item_id for it in ds.items]
    assert tok.stats["version"] == 1 and tok.stats["unique_rate"] == 1.0
    assert tok.stats["collision_rate"] == 0.0  # balanced semantic tree with auto depth is unique
    sem = tok.stats["streams"]["semantic"]
    assert sem["K"] == [8, 8] and sem["collision_rate"] == 0.0
    for lv in sem["levels"] + tok.stats["streams"]["behavior"]["levels"]:
        assert {"K", "clusters_used", "largest_cluster", "entropy_bits"} <= set(lv)
    assert sem["levels"][0]["clusters_used"] == 8 and sem["levels"][0]["largest_cluster"] == 8  # 60 = 4*7 + 4*8
    # every token of every item is in the vocabulary, which lists every level's K codes
    vocab = set(tok.tokens)
    assert len(tok.tokens) == 8 + 8 + 8 + 8
    assert all(t in vocab for toks in tok.item_tokens.values() for t in toks)
    assert len({tok.index(i) for i in tok.item_ids}) == 60
    assert tok.item_for(tok.index("it7")) == "it7"
    assert parse_index(tok.index("it7")) == tok.item_tokens["it7"]
    cfg = tok.config
    assert cfg["seed"] == 3 and cfg["config"]["semantic"]["kmeans"]["k"] == 8
    assert "numpy" in cfg["versions"] and cfg["index"]["layout"] == ["s0", "s1", "b0", "b1"]
    assert len(cfg["dataset"]["items_sha256"]) == 64 and any(k.endswith("sem.npy") for k in cfg["inputs"])
    emb = tok.embeddings("semantic")
    assert emb.shape == (60, 12) and np.allclose(emb, np.load(tmp_path / "sem.npy"))


def test_builds_are_deterministic_given_the_seed(tmp_path, dataset_dir):
    recipe = _recipe(tmp_path, dataset_dir, 60, beh=", method: plain")
    a = (_build(recipe, "name=a") / "item_codes.json").read_text()
    b = (_build(recipe, "name=b") / "item_codes.json").read_text()
    assert a == b
    assert (tmp_path / "out" / "a" / "tokens.json").read_text() == (tmp_path / "out" / "b" / "tokens.json").read_text()


def test_nan_embeddings_fail_clearly_and_leave_no_partial_artifact(tmp_path, dataset_dir):
    recipe = _recipe(tmp_path, dataset_dir, 60)
    good = _build(recipe)
    before = (good / "item_codes.json").read_text()
    x = blobs(60, 12, 6, seed=1)[0]
    x[3, 0] = np.nan
    x[7, 5] = np.inf
    np.save(tmp_path / "sem.npy", x)
    with pytest.raises(DataError, match=r"2 semantic embedding row\(s\).*NaN or inf.*'it3', 'it7'"):
        _build(recipe)
    assert (good / "item_codes.json").read_text() == before  # the old artifact is untouched
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tok"]  # no temp dirs left
    with pytest.raises(DataError, match="NaN"):
        _build(recipe, "name=fresh")
    assert not (tmp_path / "out" / "fresh").exists()


def test_collisions_are_disambiguated_and_reported(tmp_path):
    # residual codes with 2 x 2 codes for 40 items must collide
    recipe = _recipe(tmp_path, None, 40, sem_k="2", beh=", method: residual")
    out = _build(recipe, "order=[behavior]", "behavior.kmeans.k=2")
    tok = load_item_tokenizer(out)
    assert tok.item_ids[:3] == ["0", "1", "2"]  # no dataset: row numbers are the ids
    assert tok.stats["collision_rate"] > 0.5 and tok.stats["unique_rate"] == 1.0
    assert tok.stats["disambiguated_items"] > 0
    assert any(t.startswith("<d_") for t in tok.tokens)
    assert len({tok.index(i) for i in tok.item_ids}) == 40
    with pytest.raises(DataError, match="built without a dataset"):
        load_item_tokenizer(out, dataset=tmp_path)


def test_dataset_change_is_detected(tmp_path, dataset_dir):
    out = _build(_recipe(tmp_path, dataset_dir, 60))
    load_item_tokenizer(out, dataset=dataset_dir)
    load_item_tokenizer(out, dataset=Dataset.load(dataset_dir))
    items = dataset_dir / "items.jsonl"
    items.write_text(items.read_text().replace("volume 5", "volume five"))
    with pytest.raises(DataError, match=r"items.jsonl changed since tokenizer .* was built \(sha256 mismatch\)"):
        load_item_tokenizer(out, dataset=dataset_dir)
    report = inspect_report(load_item_tokenizer(out))  # inspecting still works, and says so
    assert "warning:" in report and "items.jsonl changed since tokenizer" in report
    (dataset_dir / "sequences.jsonl").write_text((dataset_dir / "sequences.jsonl").read_text() + "\n")
    items.write_text(items.read_text().replace("volume five", "volume 5"))
    with pytest.raises(DataError, match=r"sequences.jsonl changed .*interaction sequences are not the ones"):
        load_item_tokenizer(out, dataset=dataset_dir)
    ds = Dataset.load(dataset_dir)
    ds.items = ds.items[:-1]
    with pytest.raises(DataError, match="differ from the 60 items"):
        load_item_tokenizer(out, dataset=ds)


def test_bad_inputs_give_one_clear_error(tmp_path, dataset_dir):
    recipe = _recipe(tmp_path, dataset_dir, 50)  # 50 rows for a 60-item dataset
    with pytest.raises(DataError, match=r"shape \[50, 12\].*\[60, D\]"):
        _build(recipe)
    with pytest.raises(ConfigError, match="kmeans.method"):
        load_config(TokenizerConfig, recipe, ["semantic.kmeans.method=spectral"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(TokenizerConfig, recipe, ["semantic.kmeans.branching=4"])
    with pytest.raises(ConfigError, match="depth"):
        load_config(TokenizerConfig, recipe, ["semantic.kmeans.k=[4,4]", "semantic.kmeans.depth=3"])
    with pytest.raises(DataError, match="is not an item tokenizer directory"):
        load_item_tokenizer(tmp_path)


def test_k_larger_than_the_catalog_falls_back_to_one_code_per_item(tmp_path, dataset_dir):
    # K = 256 for 60 items: the root node is not clustered, every item is its own child
    out = _build(_recipe(tmp_path, dataset_dir, 60, sem_k="256"), "semantic.kmeans.depth=2",
                 "behavior.kmeans.k=[256, 4]")
    tok = load_item_tokenizer(out)
    sem = tok.stats["streams"]["semantic"]["levels"]
    assert sem[0]["clusters_used"] == 60 and sem[0]["largest_cluster"] == 1 and sem[1]["codes_used"] == 1
    assert [tok.item_tokens[i][0] for i in tok.item_ids[:3]] == ["<s0_0>", "<s0_1>", "<s0_2>"]  # item order
    assert tok.stats["collision_rate"] == 0.0 and tok.stats["unique_rate"] == 1.0
    assert len(tok.tokens) == 256 + 256 + 256 + 4  # every level keeps its K codes for cold start


def test_cli_build_and_inspect(tmp_path, dataset_dir, capsys):
    recipe = _recipe(tmp_path, dataset_dir, 60)
    assert cli(["tokens", "build", "--config", str(recipe), "name=cli"]) == 0
    out = capsys.readouterr().out
    assert "unique rate 1.0000" in out and "semantic (balanced)" in out
    assert cli(["tokens", "inspect", str(tmp_path / "out" / "cli"), "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert "sample items (4 of 60)" in out and "items sharing a first-level code" in out
    assert "volume" in out  # titles come from the recorded dataset
    assert cli(["tokens", "build", "--config", str(recipe), "semantic.kmeans.k=1"]) == 2
    assert "error:" in capsys.readouterr().err
    stats = json.loads((tmp_path / "out" / "cli" / "stats.json").read_text())
    assert stats["version"] == 1 and set(stats["timings_s"]) >= {"total"}
