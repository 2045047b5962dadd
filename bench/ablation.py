"""Ablation of the auxiliary losses and of the new-row initialisation, on validation NDCG@10.

    .venv/bin/python bench/ablation.py --dataset ml100k --out /tmp/bench_ablation \\
        --json bench/results/ablation_ml100k.json [--variants dual dual_contrastive ...]
        [--train-recipe recipes/train_ml100k.yaml] [--max-steps N] [--eval-users N] [train.KEY=VALUE ...]

Same machinery and caching as ``bench/quality.py`` (one tokenizer, one split, baselines
re-scored on the same users), metrics on the **validation** split by default. Variants:

| variant | LM | contrastive (semantic + behavior) | reconstruction | new-row init |
|---|---|---|---|---|
| ``dual`` | ✓ | | | recipe's |
| ``dual_contrastive`` | ✓ | 0.1 + 0.1 | | recipe's |
| ``dual_reconstruction`` | ✓ | | 0.1 | recipe's |
| ``dual_aux`` | ✓ | 0.1 + 0.1 | 0.1 | recipe's |
| ``dual_aux_init_mean`` | ✓ | 0.1 + 0.1 | 0.1 | mean of the existing rows |
| ``dual_aux_init_text`` | ✓ | 0.1 + 0.1 | 0.1 | mean embedding of the items' titles |

The initialisation pair only means something for a pretrained base model (use
``--train-recipe recipes/train_ml100k.yaml`` for SmolLM2); a scratch model's rows are random.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import main

if __name__ == "__main__":
    raise SystemExit(main(description=__doc__, default_split="valid",
                          default_variants=["dual", "dual_contrastive", "dual_reconstruction", "dual_aux"]))
