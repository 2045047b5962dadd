"""`genrec tokens build` under `accelerate launch` with two CPU processes: the texts are embedded
data-parallel and the main process writes the artifact, equal to a one-process build."""

from __future__ import annotations

import numpy as np
from itok_synthetic import tiny_word_llama

from genrec.cli import main as cli
from genrec.data.dataset import Dataset
from tests.launch import accelerate_2proc


def test_two_process_build_equals_one_process_build(tmp_path, dataset_dir):
    items = Dataset.load(dataset_dir).items
    model = tiny_word_llama(tmp_path / "llama", [it.text() for it in items])
    np.save(tmp_path / "beh.npy", np.random.default_rng(0).normal(size=(len(items), 6)).astype(np.float32))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {dataset_dir}
out_dir: {tmp_path / 'out'}
seed: 3
semantic:
  encoder: text
  text: {{model: {model}, batch_size: 4, cache: false}}
  kmeans: {{k: 4, depth: 2}}
behavior:
  encoder: precomputed
  embeddings: {tmp_path / 'beh.npy'}
  kmeans: {{k: 4, depth: 2}}
progress: false
""")
    proc = accelerate_2proc(["-m", "genrec.cli", "tokens", "build", "--config", str(recipe), "name=two"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # one writer
    assert cli(["tokens", "build", "--config", str(recipe), "name=one"]) == 0
    one, two = tmp_path / "out" / "one", tmp_path / "out" / "two"
    np.testing.assert_array_equal(np.load(two / "embeddings_semantic.npy"), np.load(one / "embeddings_semantic.npy"))
    assert (two / "item_codes.json").read_text() == (one / "item_codes.json").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one", "two"]
