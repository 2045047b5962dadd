"""Human-facing outputs of a training run: the loss-curve PNG and the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from genrec.config import to_dict
from genrec.data.dataset import Dataset
from genrec.io import library_versions


def loss_curve(log_path: str | Path, out_png: str | Path) -> None:
    """Plot every ``loss*`` series of a JSONL training log against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float]]] = {}
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            for key, value in rec.items():
                if key.startswith(("loss", "eval_loss")) and isinstance(value, (int, float)):
                    xs, ys = series.setdefault(key, ([], []))
                    xs.append(rec["step"])
                    ys.append(value)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=key, marker="o" if key == "eval_loss" else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def model_card(cfg: Any, state: Any, trainable: int, total: int, ds: Dataset) -> str:
    """Markdown model card: data, method, hyper-parameters, final losses and how to load it."""
    last = {}
    for rec in state.log_history:
        last.update({k: v for k, v in rec.items() if k.startswith(("loss", "eval_loss"))})
    mode = cfg.model.mode
    load = (f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

tok = AutoTokenizer.from_pretrained("{cfg.run_dir}")
base = AutoModelForCausalLM.from_pretrained(BASE)  # the base model named below
base.resize_token_embeddings(len(tok))
model = PeftModel.from_pretrained(base, "{cfg.run_dir}")
```""" if mode != "full" else f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{cfg.run_dir}")
model = AutoModelForCausalLM.from_pretrained("{cfg.run_dir}")
```""")
    return f"""# genrec recommender: {cfg.name}

A causal LM fine-tuned to generate item indices (dual semantic + behavior tokens) for next-item
recommendation.

- **Base model**: `{cfg.model.base}` ({mode}; {trainable:,} of {total:,} parameters trainable)
- **Data**: `{cfg.data}` — {ds.stats.get('users', 0):,} users, {ds.stats.get('items', 0):,} items,
  {ds.stats.get('interactions', 0):,} interactions; leave-one-out split, history ≤ {cfg.tasks.max_history}
- **Item tokenizer**: `{cfg.tokenizer}` (copied to `item_tokenizer/`)
- **Tasks**: {', '.join(f'{k} × {v}' for k, v in cfg.tasks.mix.items())}
- **Loss**: LM on responses + {', '.join(f'{w} · {k}' for k, w in cfg.losses.weights.items() if w) or 'nothing else'}
- **Steps**: {state.global_step} (epoch {state.epoch or 0:.2f}); best checkpoint by validation loss
  `{state.best_model_checkpoint}`
- **Final logged losses**: {', '.join(f'{k}={v:.4f}' for k, v in sorted(last.items())) or 'n/a'}
- **Seed**: {cfg.seed}; versions: {', '.join(f'{k} {v}' for k, v in library_versions().items())}

## Load it

With genrec: `genrec recommend --model {cfg.run_dir} --history ITEM_ID ...`. With plain
transformers + peft ({"BASE = the base model's directory or hub name; for the embedded default it is the local copy genrec caches" if mode != "full" else "full weights"}):

{load}

## Resolved config

```yaml
{yaml.safe_dump(to_dict(cfg), sort_keys=False).strip()}
```
"""
