"""Human-facing outputs of a training run: the loss-curve PNG and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from genrec.config import to_dict
from genrec.data.dataset import Dataset
from genrec.io import library_versions
from genrec.plots import line_chart, log_series, read_log
from genrec.run_dir import card_metadata, join_card, split_card

FRAMEWORK = "### Framework versions"  # the section of PEFT's card that is kept


def loss_curve(log_path: str | Path, out_png: str | Path) -> None:
    """Plot every ``loss*`` / ``eval_loss`` series of a JSONL training log against the step."""
    series = log_series(read_log(log_path), "step", lambda k: k.startswith(("loss", "eval_loss")))
    line_chart({"": series}, out_png, xlabel="step", ylabel="loss", logy=True, markers=["eval_loss"])


def model_card(cfg: Any, state: Any, trainable: int, total: int, ds: Dataset, base: dict[str, Any] | None = None,
               peft_card: str = "") -> str:
    """Markdown model card: data, method, hyper-parameters, final losses and how to load it.

    ``base``: the run's base-model record (:func:`genrec.hub.base_record`). ``peft_card``: the
    card PEFT's ``save_pretrained`` wrote; its metadata (front matter) is kept with genrec's
    fields set (:func:`genrec.run_dir.card_metadata`), and its framework-versions section is kept
    at the end (the rest of it is an empty template).
    """
    last = {}
    for rec in state.log_history:
        last.update({k: v for k, v in rec.items() if k.startswith(("loss", "eval_loss"))})
    mode = cfg.model.mode
    canonical = (base or {}).get("canonical")
    meta, peft_body = split_card(peft_card)
    meta = card_metadata(meta, canonical, "peft" if mode != "full" else "transformers",
                         "adapter" if mode != "full" else "finetune")
    versions = peft_body[peft_body.find(FRAMEWORK):] if FRAMEWORK in peft_body else ""
    load = (f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

tok = AutoTokenizer.from_pretrained("{cfg.run_dir}")
base = AutoModelForCausalLM.from_pretrained("{canonical or cfg.model.base}")
base.resize_token_embeddings(len(tok))
model = PeftModel.from_pretrained(base, "{cfg.run_dir}")
```""" if mode != "full" else f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{cfg.run_dir}")
model = AutoModelForCausalLM.from_pretrained("{cfg.run_dir}")
```""")
    return join_card(meta, f"""# genrec recommender: {cfg.name}

A causal LM fine-tuned to generate item indices (dual semantic + behavior tokens) for next-item
recommendation.

- **Base model**: `{cfg.model.base}`{f" (`{canonical}`)" if canonical and canonical != cfg.model.base else ""} ({mode}; {trainable:,} of {total:,} parameters trainable)
- **Data**: `{cfg.data}` — {ds.stats.get('users', 0):,} users, {ds.stats.get('items', 0):,} items,
  {ds.stats.get('interactions', 0):,} interactions; leave-one-out split, history ≤ {cfg.tasks.max_history}
- **Item tokenizer**: `{cfg.tokenizer}` (copied to `item_tokenizer/`)
- **Tasks**: {', '.join(f'{k} × {v}' for k, v in cfg.tasks.mix.items())}
- **Loss**: LM on responses + {', '.join(f'{w} · {k}' for k, w in cfg.losses.weights.items() if w) or 'nothing else'}
- **Steps**: {state.global_step} (epoch {state.epoch or 0:.2f}); best checkpoint by {_selection(cfg)}
  `{state.best_model_checkpoint}`
- **Final logged losses**: {', '.join(f'{k}={v:.4f}' for k, v in sorted(last.items())) or 'n/a'}
- **Seed**: {cfg.seed}; versions: {', '.join(f'{k} {v}' for k, v in library_versions().items())}

## Load it

With genrec: `genrec recommend --model {cfg.run_dir} --history ITEM_ID ...` (the catalog is
`catalog.jsonl`, the base model is found through `base_model.json`: its local path, else the
embedded default or the hub id; `genrec export` writes a self-contained copy). With plain
transformers{" + peft (`base_model.json` names the exact base weights: for the embedded default genrec trains on a Q4_1 copy of the hub model, so hub weights score slightly differently)" if mode != "full" else ""}:

{load}

## Resolved config

```yaml
{yaml.safe_dump(to_dict(cfg), sort_keys=False).strip()}
```

{versions}""")


def _selection(cfg: Any) -> str:
    """How the best checkpoint was chosen, in words (``training.select_by``)."""
    by = str(getattr(cfg.training, "select_by", "loss") or "loss")
    if by == "loss":
        return "validation loss"
    return f"validation {by.replace('ndcg', 'NDCG').replace('recall', 'Recall')} of constrained beam search " \
        f"on {cfg.training.ranking_users} validation users"
