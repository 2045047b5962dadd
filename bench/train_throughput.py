"""Training throughput of the tiny scratch recommender: item targets per second, side by side.

    .venv/bin/python bench/train_throughput.py --data data/scientific --tokenizer tokenizers_out/scientific \\
        [--steps 20] [--batch-size 32] [--threads 2] [--json bench/results/train_throughput.json]

Same 4-layer, 128-wide LLaMA (``recipes/train_scientific_tiny.yaml`` sizes), same optimizer
(AdamW) and loss path as ``genrec train`` (response-only LM head), four configurations:

| name | vocabulary | examples |
|---|---|---|
| ``llm_vocab+windows`` | SmolLM2's 49k tokens | ``seqrec`` windows (one target each; the old recipe) |
| ``llm_vocab+sequence`` | SmolLM2's 49k tokens | ``sequence`` stretches (every item a target) |
| ``compact+windows`` | compact word-level | ``seqrec`` windows |
| ``compact+sequence`` | compact word-level | ``sequence`` stretches, length-grouped batches (the new recipe) |

Each runs ``--steps`` timed steps (after 2 warm-up steps) on batches drawn from a seeded shuffle
of its examples; "item targets" counts the items whose index carries the LM loss. Prints one table
with ms/step, item targets/s and each row's speed-up over the first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

SIZES = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 4}


def _targets(r) -> int:
    return len(r.aux_targets) if r.task == "sequence" else 1


def measure(data: str, tokenizer: str, vocab: str, task: str, steps: int, batch_size: int, seed: int = 0
            ) -> dict[str, float]:
    from genrec.data.dataset import Dataset
    from genrec.data.split import leave_one_out
    from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer
    from genrec.tasks.collate import SUMMARY_TOKEN, Collator, RenderedExamples
    from genrec.tasks.prompts import TaskBuilder
    from genrec.training.config import ModelConfig
    from genrec.training.model import build_model
    from genrec.training.recipe import _vocabulary_texts
    from genrec.training.trainer import response_lm_loss

    ds = Dataset.load(data)
    itok = load_item_tokenizer(tokenizer, dataset=data)
    codes = item_codes(itok, ds)
    split = leave_one_out(ds, 20)
    builder = TaskBuilder(ds.items, codes, 20, seed=seed)
    examples = list(builder.iter_examples(split, {task: 1.0}))
    cfg = ModelConfig(base="scratch", mode="full", tokenizer=vocab, new_token_init="random", scratch=dict(SIZES))
    texts = _vocabulary_texts(examples) if vocab == "compact" else None
    model, tok, _ = build_model(cfg, itok.tokens, None, seed, None, texts)
    sid = tok.convert_tokens_to_ids(SUMMARY_TOKEN)
    data_set = RenderedExamples(examples, tok, sid, 320, False, builder.index)
    if task == "sequence":  # length-grouped batches: the sampler genrec train uses (GenRecTrainer)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        order = np.fromiter(LengthGroupedSampler(batch_size, lengths=data_set.lengths(),
                                                 generator=torch.Generator().manual_seed(seed)), dtype=np.int64)
    else:
        order = np.random.default_rng(seed).permutation(len(data_set))
    batches = [order[i:i + batch_size] for i in range(0, batch_size * (steps + 2), batch_size)]
    collate = Collator(tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    done = 0
    elapsed = 0.0
    tokens = 0
    for n, idx in enumerate(batches[: steps + 2]):
        rendered = [data_set[int(i)] for i in idx]
        batch = collate(rendered)
        t0 = time.perf_counter()
        labels = batch.pop("labels")
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                    logits_to_keep=1)
        loss = response_lm_loss(model, out.hidden_states[-1], labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if n >= 2:  # warm-up steps are not timed
            elapsed += time.perf_counter() - t0
            done += sum(_targets(r) for r in rendered)
            tokens += int(batch["input_ids"].numel())
    params = sum(p.numel() for p in model.parameters())
    return {"parameters": params, "vocabulary": len(tok), "ms_per_step": 1000 * elapsed / steps,
            "item_targets_per_s": done / elapsed, "padded_tokens_per_step": tokens / steps,
            "examples_per_epoch": len(data_set), "item_targets_per_epoch": sum(
                (len(ex.items) - 1) if ex.task == "sequence" else 1 for ex in examples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for vocab, task in (("smollm2-135m", "seqrec"), ("smollm2-135m", "sequence"), ("compact", "seqrec"),
                        ("compact", "sequence")):
        name = f"{'llm_vocab' if vocab != 'compact' else 'compact'}+{'windows' if task == 'seqrec' else 'sequence'}"
        rows[name] = measure(args.data, args.tokenizer, vocab, task, args.steps, args.batch_size)
        print(f"{name}: {rows[name]}", flush=True)
    first = next(iter(rows.values()))["item_targets_per_s"]
    print("\n| configuration | parameters | vocabulary | ms/step | item targets/s | speed-up | epoch (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        epoch = r["item_targets_per_epoch"] / r["item_targets_per_s"]
        print(f"| {name} | {r['parameters']:,} | {r['vocabulary']:,} | {r['ms_per_step']:.0f} | "
              f"{r['item_targets_per_s']:.0f} | {r['item_targets_per_s'] / first:.1f}x | {epoch:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
