"""Recipe schema of ``genrec align`` (``AlignConfig`` and its sections); no torch import.

Every field is a recipe key (``method``, ``dpo.beta``, ``training.max_steps`` ...); the comment
after a field is its documentation (docs/training.md, "Alignment", lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("dpo", "grpo")
PROMPTS = ("last", "all")
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust")


@dataclass
class DPOSection:
    beta: float = 0.1  # DPO temperature β: how far the policy may move from the reference (the SFT run)
    loss_type: str = "sigmoid"  # trl DPO loss: sigmoid (DPO), ipo, hinge, robust
    negatives: int = 4  # rejected items per prompt: the SFT model's best-ranked wrong items, one pair each
    skip_top: int = 0  # wrong items ranked above this many are skipped (0: the hardest negatives are used)
    beams: int = 20  # beam width of the negative-mining search (>= skip_top + negatives + 1)
    exclude_seen: bool = True  # never use an item of the user's training sequence as a negative (known positive)
    sft_weight: float = 1.0  # weight of an NLL term on the chosen item (trl's "sft" loss) added to DPO; 0: pure DPO
    # (which collapsed the ranking in docs/RESULTS.md: the chosen item's probability falls with the negatives')

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"dpo.beta must be > 0, got {self.beta}")
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"dpo.loss_type must be one of {DPO_LOSSES}, got {self.loss_type!r}")
        if self.negatives < 1 or self.skip_top < 0:
            raise ValueError(f"dpo.negatives must be >= 1 and dpo.skip_top >= 0, got {self.negatives} and "
                             f"{self.skip_top}")
        if self.beams < self.skip_top + self.negatives + 1:
            raise ValueError(f"dpo.beams={self.beams} must be >= dpo.skip_top + dpo.negatives + 1 = "
                             f"{self.skip_top + self.negatives + 1} (the true item may be among the beams)")
        if self.sft_weight < 0:
            raise ValueError(f"dpo.sft_weight must be >= 0, got {self.sft_weight}")


@dataclass
class GRPOSection:
    num_generations: int = 8  # items sampled per prompt (one group), always within the catalog trie
    temperature: float = 1.0  # sampling temperature over the trie children
    prefix_credit: float = 0.5  # reward of a wrong item = prefix_credit × (leading index tokens shared with the
    # true item) / (index tokens of the true item); the true item gets 1, an invalid output 0
    beta: float = 0.0  # KL weight against the reference (the SFT run); 0: no reference model is kept
    epsilon: float = 0.2  # PPO-style clipping range of the importance ratio
    loss_type: str = "dapo"  # trl GRPO loss aggregation: dapo, grpo, dr_grpo, bnpo
    scale_rewards: str = "group"  # advantage scaling: group (std within the group), batch, none

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"grpo.num_generations must be >= 2 (advantages are relative within a group), "
                             f"got {self.num_generations}")
        if self.temperature <= 0:
            raise ValueError(f"grpo.temperature must be > 0, got {self.temperature}")
        if not 0 <= self.prefix_credit < 1:
            raise ValueError(f"grpo.prefix_credit must be in [0, 1) (the true item earns 1), got {self.prefix_credit}")
        if self.beta < 0 or self.epsilon <= 0:
            raise ValueError(f"grpo.beta must be >= 0 and grpo.epsilon > 0, got {self.beta} and {self.epsilon}")
        if self.loss_type not in ("dapo", "grpo", "dr_grpo", "bnpo"):
            raise ValueError(f"grpo.loss_type must be one of dapo, grpo, dr_grpo, bnpo, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"grpo.scale_rewards must be one of group, batch, none, got {self.scale_rewards!r}")


@dataclass
class AlignTraining:
    learning_rate: float = 1e-5  # peak learning rate (cosine decay after warm-up)
    epochs: float = 1.0  # passes over the prompts (ignored when max_steps > 0)
    max_steps: int = -1  # hard cap on optimizer steps (-1: use epochs)
    batch_size: int = 8  # per device step: preference pairs (dpo) or sampled completions (grpo; a multiple of
    # grpo.num_generations)
    grad_accum: int = 1  # gradient accumulation steps
    warmup_ratio: float = 0.05  # linear warm-up share of the schedule
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    logging_steps: int = 10  # log every N steps
    save_steps: int = 100  # checkpoint every N steps (for --resume)
    save_total_limit: int = 2  # checkpoints kept
    bf16: bool = False  # bfloat16 autocast (GPUs with bf16 support)

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("training.learning_rate must be > 0 and training.batch_size, training.grad_accum >= 1; "
                             f"got {self.learning_rate}, {self.batch_size}, {self.grad_accum}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"training.max_steps must be -1 (use epochs) or >= 1, got {self.max_steps}")


@dataclass
class AlignConfig:
    run: str = ""  # the finished `genrec train` (or `genrec align`) run directory to start from
    data: str = ""  # dataset directory; empty: the one the run was trained on (it must be that dataset)
    name: str = "aligned"  # output run name; the run directory is output_dir/name
    output_dir: str = "runs"  # parent of the run directory
    method: str = "dpo"  # dpo (hard negatives from the SFT model's beams) or grpo (sampled items, item rewards)
    seed: int = 42  # seeds the prompt subset, sampling and training
    prompts: str = "last"  # training-split prompts: last (each user's last training item as the target) or all
    # (every training position)
    max_prompts: int = 0  # a seeded subset of this many prompts (0: all of them)
    dtype: str = ""  # compute dtype; empty: the run's model.dtype
    dpo: DPOSection = field(default_factory=DPOSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    training: AlignTraining = field(default_factory=AlignTraining)

    def __post_init__(self) -> None:
        if not self.run:
            raise ValueError("run: set the finished genrec train run to align (e.g. run=runs/scientific-tiny)")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.prompts not in PROMPTS:
            raise ValueError(f"prompts must be one of {PROMPTS}, got {self.prompts!r}")
        if self.max_prompts < 0:
            raise ValueError(f"max_prompts must be >= 0, got {self.max_prompts}")
        if self.method == "grpo" and self.training.batch_size % self.grpo.num_generations:
            raise ValueError(f"training.batch_size={self.training.batch_size} must be a multiple of "
                             f"grpo.num_generations={self.grpo.num_generations} (whole groups per step)")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
