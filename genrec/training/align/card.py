"""The model card (README.md) of an aligned run: where it started, how it was aligned, how to load it."""

from __future__ import annotations

from typing import Any

import yaml

from genrec.config import to_dict
from genrec.io import library_versions
from genrec.training.align.config import AlignConfig


def _method_text(cfg: AlignConfig, summary: dict[str, Any]) -> str:
    if cfg.method == "dpo":
        d = cfg.dpo
        return (f"**DPO** (trl `DPOTrainer`, loss `{d.loss_type}`{f' + {d.sft_weight} · sft' if d.sft_weight else ''}, "
                f"β = {d.beta}). Chosen = the true next item's index tokens + EOS; rejected = the starting model's "
                f"own best-ranked wrong items from a {d.beams}-beam constrained search (ranks {d.skip_top + 1}–"
                f"{d.skip_top + d.negatives} among the wrong items{' outside the user' + chr(39) + 's training sequence' if d.exclude_seen else ''}), one pair each. Negatives: "
                f"{summary.get('pairs', 0):,} pairs over {summary.get('prompts', 0):,} prompts; the true item was "
                f"among the beams for {100 * summary.get('target_in_beams', 0):.1f}% of the prompts (mean rank "
                f"{summary.get('target_mean_rank_when_found', 0)} when found); the best negative out-scored the true "
                f"item by {summary.get('best_negative_margin', 0)} nats on average where both were found.")
    g = cfg.grpo
    return (f"**GRPO** (trl `GRPOTrainer`, loss `{g.loss_type}`, KL β = {g.beta}, ε = {g.epsilon}). Groups of "
            f"{g.num_generations} items per prompt sampled within the catalog trie (temperature {g.temperature}); "
            f"reward 1 for the true item, {g.prefix_credit} × shared leading index tokens / index length for "
            f"another item, 0 for invalid output. Over training: {summary.get('completions', 0):,} completions, "
            f"{summary.get('invalid', 0)} invalid, {100 * summary.get('exact_share', 0):.2f}% the true item, mean "
            f"reward {summary.get('mean_reward', 0)}.")


def model_card(cfg: AlignConfig, start: Any, state: Any, summary: dict[str, Any], seconds: float,
               num_prompts: int) -> str:
    """Markdown model card of an aligned run."""
    last: dict[str, float] = {}
    for rec in state.log_history:
        last.update({k: v for k, v in rec.items() if isinstance(v, (int, float)) and k.startswith(
            ("loss", "rewards/", "reward", "item/"))})
    mcfg = start.config.get("model") or {}
    return f"""# genrec recommender: {cfg.name} (aligned with {cfg.method.upper()})

A genrec run aligned with preference optimisation after supervised fine-tuning.

- **Started from**: `{start.path}` (the SFT run; its model, vocabulary and item tokenizer are kept)
- **Base model**: `{mcfg.get('base')}` ({start.mode})
- **Data**: `{start.data}`; {num_prompts:,} prompts from the training split ({cfg.prompts}), served prompt format
- **Method**: {_method_text(cfg, summary)}
- **Steps**: {state.global_step} (epoch {state.epoch or 0:.2f}), {seconds:.0f} s; learning rate {cfg.training.learning_rate}
- **Final logged values**: {', '.join(f'{k}={v:.4f}' for k, v in sorted(last.items())) or 'n/a'}
- **Seed**: {cfg.seed}; versions: {', '.join(f'{k} {v}' for k, v in library_versions().items())}

## Load it

Like any genrec run: `genrec recommend --model {cfg.run_dir} --history ITEM_ID ...`,
`genrec evaluate --model {cfg.run_dir} --data {start.data} --out DIR`, or
`GenRecommender.from_pretrained("{cfg.run_dir}")`.

## Alignment config

```yaml
{yaml.safe_dump(to_dict(cfg), sort_keys=False).strip()}
```
"""
