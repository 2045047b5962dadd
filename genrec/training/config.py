"""Recipe schemas of ``genrec train`` (``TrainConfig`` and its sections); no torch import.

Every field is a recipe key (``model.mode``, ``tasks.mix`` ...); the comment after a field is
its documentation (docs/training.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genrec.tasks.prompts import TEMPLATES
from genrec.tracking import check_report_to

AUX_TERMS = ("contrastive_semantic", "contrastive_behavior", "reconstruction_embedding", "reconstruction_codes",
             "distill")

MODES = ("qlora", "lora", "full")
SCRATCH = "scratch"
SCRATCH_DEFAULTS: dict[str, int] = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
                                    "num_attention_heads": 4, "num_key_value_heads": 4,
                                    "max_position_embeddings": 1024}
INITS = ("text", "mean", "random")
COMPACT = "compact"
STREAMS = ("semantic", "behavior")
SELECT_BY = ("loss", "ndcg@10", "recall@10", "ndcg@20", "recall@20")
ITEM_HEAD_SELECT = ("head", "fused")  # the item head's epoch: its own NDCG@10, or the fused ranking's
ITEM_HEAD_WEIGHT_RULES = ("best", "one_se")  # the highest validation NDCG@10, or the lightest within a standard error


@dataclass
class ModelConfig:
    base: str = "smollm2-135m"  # embedded alias, local path or Hugging Face hub name
    mode: str = "qlora"  # qlora | lora | full
    dtype: str = "float32"  # compute dtype: float32 on CPU, bfloat16 on recent GPUs
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.05  # dropout on the LoRA branch
    lora_target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])  # linear layers with adapters
    new_token_init: str = "text"  # text: mean embedding of the titles of the items sharing the token; mean; random
    dropout: float = 0.0  # mode full only — dropout on token embeddings, attention probabilities and sub-layer
    # outputs (genrec.training.dropout); LoRA / QLoRA runs use lora_dropout
    gradient_checkpointing: bool = False  # trade compute for activation memory (large models)
    tokenizer: str = "smollm2-135m"  # base: scratch only — whose tokenizer to use; "compact": a word-level
    # vocabulary of the training examples' own words (far smaller and faster; genrec.training.compact_tokenizer)
    compact_words: int = 2000  # tokenizer: compact only — item-text words kept beyond the instructions' words
    scratch: dict[str, int] = field(default_factory=dict)  # base: scratch only — LlamaConfig sizes
    item_embeddings: list[str] = field(default_factory=list)  # item-tokenizer streams (behavior, semantic) whose
    # item embeddings join each history item through a learned adapter (genrec.encoders.item_adapter), and/or
    # "id": a learned row per item; needs the sequence task
    item_row_dropout: float = 0.0  # with "id": share of history items whose learned row is hidden at a training step
    item_row_min_count: int = 0  # with "id": items with fewer interactions in the training sequences keep a zero row

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"model.mode must be one of {MODES}, got {self.mode!r}")
        if self.base == SCRATCH and self.mode != "full":
            raise ValueError("model.base: scratch trains every weight; set model.mode: full")
        unknown = sorted(set(self.scratch) - set(SCRATCH_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown model.scratch key(s) {unknown}; allowed: {sorted(SCRATCH_DEFAULTS)}")
        if self.new_token_init not in INITS:
            raise ValueError(f"model.new_token_init must be one of {INITS}, got {self.new_token_init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.dropout and self.mode != "full":
            raise ValueError(f"model.dropout applies to mode: full; a {self.mode} run regularises its "
                             "adapters with model.lora_dropout")
        if self.lora_r < 1:
            raise ValueError(f"model.lora_r must be >= 1, got {self.lora_r}")
        if self.tokenizer == COMPACT and self.base != SCRATCH:
            raise ValueError("model.tokenizer: compact is for models trained from scratch (model.base: scratch); "
                             "a pretrained model keeps its own tokenizer")
        if self.compact_words < 0:
            raise ValueError(f"model.compact_words must be >= 0, got {self.compact_words}")
        if not 0.0 <= self.item_row_dropout < 1.0:
            raise ValueError(f"model.item_row_dropout must be in [0, 1), got {self.item_row_dropout}")
        if self.item_row_dropout and "id" not in self.item_embeddings:
            raise ValueError("model.item_row_dropout hides learned item rows; add id to model.item_embeddings")
        if self.item_row_min_count < 0:
            raise ValueError(f"model.item_row_min_count must be >= 0, got {self.item_row_min_count}")
        if self.item_row_min_count and "id" not in self.item_embeddings:
            raise ValueError("model.item_row_min_count limits learned item rows; add id to model.item_embeddings")
        bad = sorted(set(self.item_embeddings) - {*STREAMS, "id"})
        if bad:
            raise ValueError(f"model.item_embeddings names unknown stream(s) {bad}; use {[*STREAMS, 'id']}")


@dataclass
class TasksConfig:
    mix: dict[str, float] = field(default_factory=lambda: {
        "seqrec": 1.0, "item2index": 1.0, "index2item": 1.0, "fusion_titles": 0.2, "fusion_next_title": 0.2,
    })  # task → share of its natural size (windows for history tasks, catalog for item tasks)
    max_history: int = 20  # items shown in history prompts
    max_length: int = 512  # tokens per example (prompt left-truncated beyond)
    use_chat_template: bool = True  # render with the base model's chat template when it has one
    max_eval_examples: int = 512  # validation examples (next-item on the valid split) for eval loss
    # Cold-start evaluation: this share of the catalog never reaches training (no interaction, no
    # item task); the tokenizer must hold out the same items (cold_start.cold_items / cold_seed).
    cold_items: float = 0.0
    cold_seed: int = 0

    @property
    def sequence_format(self) -> bool:
        """Whether the run trains (and is served) in the ``sequence`` format."""
        return bool(self.mix.get("sequence"))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(TEMPLATES))
        if unknown:
            raise ValueError(f"tasks.mix names unknown tasks {unknown}; valid: {sorted(TEMPLATES)}")
        if any(not isinstance(v, (int, float)) or v < 0 for v in self.mix.values()) or not any(self.mix.values()):
            raise ValueError(f"tasks.mix shares must be numbers >= 0, at least one > 0; got {self.mix}")
        if not 0.0 <= self.cold_items < 1.0:
            raise ValueError(f"tasks.cold_items must be in [0, 1) (share of items held out), got {self.cold_items}")


DISTILL_HISTORY = ("keep", "deep", "mask")


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: {
        "contrastive_semantic": 0.1, "contrastive_behavior": 0.1, "reconstruction_embedding": 0.1,
    })  # aux term → weight (LM loss has weight 1); a term with weight 0 is not computed
    num_negatives: int = 2048  # sampled catalog negatives for the contrastive loss (whole catalog if smaller)
    temperature: float = 0.07  # InfoNCE temperature
    distill_teacher: str | None = None  # `genrec baseline --model sasrec` output dir (weights.distill > 0)
    distill_temperature: float = 1.0  # softmax temperature of the teacher's item distribution
    # the teacher's mass on the history's own items: keep, deep (moved to the other items below the first code
    # level; the first still says which clusters the user shops in) or mask (at every level); the target's own
    # mass is never masked
    distill_history: str = "keep"

    def __post_init__(self) -> None:
        unknown = sorted(k for k, w in self.weights.items() if w and k not in AUX_TERMS)
        if unknown:
            raise ValueError(f"losses.weights names unknown terms {unknown}; valid: {list(AUX_TERMS)} "
                             "(the LM loss always has weight 1)")
        if self.weights.get("distill") and not self.distill_teacher:
            raise ValueError("losses.weights.distill > 0 needs losses.distill_teacher: a `genrec baseline "
                             "--model sasrec` output directory trained on the same dataset")
        if self.distill_temperature <= 0:
            raise ValueError(f"losses.distill_temperature must be > 0, got {self.distill_temperature}")
        if self.distill_history not in DISTILL_HISTORY:
            raise ValueError(f"losses.distill_history must be one of {DISTILL_HISTORY}, got {self.distill_history!r}")
        if self.num_negatives < 1:
            raise ValueError(f"losses.num_negatives must be >= 1, got {self.num_negatives}")
        if self.temperature <= 0:
            raise ValueError(f"losses.temperature must be > 0, got {self.temperature}")


@dataclass
class TrainingConfig:
    learning_rate: float = 2e-4  # peak learning rate (cosine decay)
    epochs: float = 1.0  # passes over the example mix (ignored when max_steps > 0)
    max_steps: int = -1  # hard cap on optimizer steps (-1: use epochs)
    batch_size: int = 8  # per-device batch size
    grad_accum: int = 1  # gradient accumulation steps
    warmup_ratio: float = 0.03  # linear warm-up share of the schedule
    weight_decay: float = 0.0  # AdamW weight decay
    logging_steps: int = 10  # log every N steps
    eval_steps: int = 100  # evaluate (validation loss) and checkpoint every N steps
    save_total_limit: int = 2  # checkpoints kept
    early_stopping_patience: int = 3  # evaluations without validation improvement before stopping (0: off)
    bf16: bool = False  # bfloat16 autocast (GPUs with bf16 support)
    deepspeed: str | None = None  # path to a DeepSpeed JSON config (see recipes/accelerate/)
    dataloader_num_workers: int = 0  # DataLoader workers
    response_logits_only: bool = True  # LM head on response positions only (same loss, far less compute)
    group_by_length: bool = True  # batches of examples of similar length (little padding; order still random)
    select_by: str = "loss"  # best checkpoint and early stopping by: loss (validation loss), or ndcg@10 / recall@10
    # / ndcg@20 / recall@20 of constrained beam search on ranking_users seeded validation users
    ranking_users: int = 512  # select_by other than loss: validation users ranked at every evaluation
    ranking_beams: int = 20  # select_by other than loss: beam width of that ranking
    item_head: bool = False  # after training, fit the item head (per-item scores fused with the codes at
    # decoding; `genrec head` does the same for a finished run)
    item_head_users: int = 2048  # validation users that select the item head's epoch and fusion weight
    item_head_epoch_users: int | None = None  # validation users whose head-alone NDCG@10 picks the head's epoch
    # (a forward each, no beam search): None = the item_head_users ones, 0 = every validation user
    item_head_select: str = "head"  # the head's epoch: head (its own NDCG@10 on the epoch users) | fused (the
    # epoch and fusion weight chosen together by the served, fused ranking's NDCG@10 on item_head_users)
    item_head_weight_rule: str = "best"  # the fusion weight: best (highest validation NDCG@10) | one_se (the
    # smallest weight within one standard error of the best: a gap the validation users cannot tell from noise)
    item_head_transitions: int = 3  # the head adds item -> item transition counts from the history's last N items
    item_head_similar: int = 1  # ... and each of the history's last N items' nearest items by embedding (0: off)
    item_head_similar_stream: str = "auto"  # whose embeddings: a stream of the item tokenizer (auto: behavior
    # when it has one, else its first)
    item_head_seen: bool = True  # ... and a learned weight on the history's own items (negative where users
    # never take an item twice: no slots spent on what they already have)
    item_head_cold_neighbours: int = 10  # items never a training target borrow the mean row of this many nearest
    # trained items by the same stream's embeddings (0: the uniform log-probability, their codes alone rank them)
    report_to: str = "none"  # experiment tracker: none | tensorboard (event files in RUN/tensorboard) | wandb |
    # mlflow; passed to TrainingArguments(report_to=...); train_log.jsonl is written either way

    def __post_init__(self) -> None:
        if self.select_by not in SELECT_BY:
            raise ValueError(f"training.select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if self.ranking_users < 1 or self.ranking_beams < 20:
            raise ValueError("training.ranking_users must be >= 1 and training.ranking_beams >= 20 (the ranking "
                             f"reads the top 20); got {self.ranking_users} and {self.ranking_beams}")
        if self.item_head_transitions < 0 or self.item_head_similar < 0 or self.item_head_cold_neighbours < 0:
            raise ValueError("training.item_head_transitions, item_head_similar and item_head_cold_neighbours must "
                             f"be >= 0, got {self.item_head_transitions}, {self.item_head_similar} and "
                             f"{self.item_head_cold_neighbours}")
        if self.item_head_users < 1:
            raise ValueError(f"training.item_head_users must be >= 1, got {self.item_head_users}")
        if self.item_head_epoch_users is not None and self.item_head_epoch_users < 0:
            raise ValueError("training.item_head_epoch_users must be >= 0 (0: every validation user) or null (the "
                             f"item_head_users ones), got {self.item_head_epoch_users}")
        if self.item_head_select not in ITEM_HEAD_SELECT:
            raise ValueError(f"training.item_head_select must be {' or '.join(ITEM_HEAD_SELECT)}, got "
                             f"{self.item_head_select!r}")
        if self.item_head_weight_rule not in ITEM_HEAD_WEIGHT_RULES:
            raise ValueError(f"training.item_head_weight_rule must be {' or '.join(ITEM_HEAD_WEIGHT_RULES)}, got "
                             f"{self.item_head_weight_rule!r}")
        check_report_to(self.report_to, "training.report_to")


@dataclass
class TrainConfig:
    name: str = "genrec"  # run name; the run directory is output_dir/name
    data: str = ""  # canonical dataset directory
    tokenizer: str = ""  # tokenizers_out/NAME built from the same dataset
    output_dir: str = "runs"  # parent of the run directory
    seed: int = 42  # seeds example sampling, init and training
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data: set the dataset directory (e.g. data=runs/demo/data/ml-100k)")
        if not self.tokenizer:
            raise ValueError("tokenizer: set the item tokenizer directory (e.g. tokenizer=tokenizers_out/ml-100k)")
        if self.model.item_embeddings and not self.tasks.sequence_format:
            raise ValueError("model.item_embeddings needs the sequence task in tasks.mix (e.g. tasks.mix={sequence: "
                             "1.0}): the adapter adds each history item's vector where that format places the item")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
