"""Item text embeddings under `accelerate launch` with two CPU processes equal the one-process run."""

from __future__ import annotations

import textwrap

import numpy as np

from genrec.encoders.text import EmbeddingCache, TextEncoderConfig, embed_items, item_texts
from tests.encoders.test_text import ITEMS, tiny_llama  # noqa: F401  (fixture)
from tests.launch import accelerate_2proc

SCRIPT = """
import sys
import numpy as np
from genrec.encoders.text import TextEncoderConfig, embed_items
from genrec.runtime import Ranks
from tests.encoders.test_text import ITEMS

model, cache, out = sys.argv[1:4]
cfg = TextEncoderConfig(model=model, batch_size=2, cache=cache != "-")
x = embed_items(ITEMS * 3, cfg, cache_dir=cache if cache != "-" else None, progress=False)
np.save(f"{out}/rank{Ranks().rank}.npy", x)
"""


def test_two_processes_embed_the_same_vectors_as_one(tiny_llama, tmp_path):  # noqa: F811
    script = tmp_path / "embed.py"
    script.write_text(textwrap.dedent(SCRIPT))
    cache = tmp_path / "cache"
    proc = accelerate_2proc([str(script), str(tiny_llama), str(cache), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = embed_items(ITEMS * 3, TextEncoderConfig(model=str(tiny_llama), batch_size=2, cache=False, num_threads=1),
                      progress=False)
    for rank in (0, 1):  # every process receives every vector: those of one process, up to float rounding
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), one, rtol=1e-5, atol=1e-6)
    # Each process stored the texts it embedded: together, every text once.
    texts = list(dict.fromkeys(t for it in ITEMS for t in item_texts(it, TextEncoderConfig())))
    shards = [s for s in cache.rglob("shard-*.npz")]
    assert len(shards) == 2
    stored = EmbeddingCache(shards[0].parent).get(texts)
    assert set(stored) == set(texts)
