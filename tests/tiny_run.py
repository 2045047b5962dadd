"""A tiny trained genrec run (dataset + item tokenizer + LoRA adapter on a tiny LLaMA), built in seconds.

Used by the recommend / evaluate / serving tests and by ``bench/serve_load.py`` when no real run
is given. Nothing is downloaded: the base model is a random tiny LLaMA (:mod:`tests.tiny_llm`) and
the item codes come from precomputed random embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

GENRES = ("Comedy", "Drama", "Action")


def tiny_dataset(num_items: int = 24, num_users: int = 30):
    """Items ``m0..m{N-1}`` titled ``"film i <genre>"`` with one genre each; users walk the catalog."""
    from genrec.data.dataset import Dataset, Item

    items = [Item(item_id=f"m{i}", title=f"film {i} {GENRES[i % 3].lower()}", categories=[GENRES[i % 3]],
                  extra={"year": 1990 + i}) for i in range(num_items)]
    seqs = [np.asarray([(u + 2 * t) % num_items for t in range(6)], dtype=np.int64) for u in range(num_users)]
    return Dataset(items=items, users=[f"u{u}" for u in range(num_users)], sequences=seqs,
                   stats={"users": num_users, "items": num_items, "interactions": 6 * num_users})


def make_tiny_run(root: str | Path, name: str = "tiny", steps: int = 4, mode: str = "lora") -> Path:
    """Build data, item tokenizer and a ``steps``-step training run under ``root``; return the run dir."""
    from genrec.config import load_config
    from genrec.item_tokenizer.build import build_tokenizer
    from genrec.item_tokenizer.config import TokenizerConfig
    from genrec.train import TrainConfig, run
    from tests.tiny_llm import make_tiny_llm

    root = Path(root)
    ds = tiny_dataset()
    data = root / "data"
    ds.save(data)
    rng = np.random.default_rng(0)
    np.save(root / "sem.npy", rng.normal(size=(ds.num_items, 8)).astype(np.float32))
    np.save(root / "beh.npy", rng.normal(size=(ds.num_items, 6)).astype(np.float32))
    quiet = logging.getLogger("genrec").level
    logging.getLogger("genrec").setLevel(logging.WARNING)
    try:
        build_tokenizer(load_config(TokenizerConfig, None, [
            "name=tiny", f"data={data}", f"out_dir={root / 'tok'}", "plots=false", "progress=false",
            "semantic.encoder=precomputed", f"semantic.embeddings={root / 'sem.npy'}", "semantic.kmeans.k=4",
            "behavior.encoder=precomputed", f"behavior.embeddings={root / 'beh.npy'}", "behavior.kmeans.k=4"]))
        base = make_tiny_llm(root / "base", hidden=32, layers=2)
        cfg = load_config(TrainConfig, None, [
            f"name={name}", f"output_dir={root / 'runs'}", f"data={data}", f"tokenizer={root / 'tok' / 'tiny'}",
            f"model.base={base}", f"model.mode={mode}", "model.lora_r=4",
            "tasks.mix={seqrec: 2.0, item2index: 1.0}", "tasks.max_eval_examples=4", "tasks.max_history=8",
            "losses.weights={contrastive_semantic: 0.1}", "losses.num_negatives=8",
            f"training.max_steps={steps}", "training.batch_size=8", f"training.eval_steps={steps}",
            "training.logging_steps=1", "training.learning_rate=0.01", "training.early_stopping_patience=0"])
        return run(cfg)
    finally:
        logging.getLogger("genrec").setLevel(quiet)
