"""Argument dataclasses of `pretrain`, `finetune` and `evaluate`, read by `HfArgumentParser` (so the command line,
a `.json` file and Python code all fill the same fields), and the pipeline's `TrainingArguments` defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainingArguments

from ..configuration_item_text import ITEM_REPRESENTATIONS
from ..registry import (
    BLOCK_CHOICES,
    DEFAULT_PATCH_TARGET,
    DEFAULT_PATCH_TYPE,
    HEAD_TERMS,
    INSERTIONS,
    ITEM_PATCH_TYPES,
    METHODS,
    MODEL_TYPES,
    PATCH_TARGETS,
    PATCH_TYPES,
    READOUTS,
    TASK_KINDS,
    choose,
)

PAPER_DILATIONS = [1, 2, 4, 8] * 4
"""Dilations of the paper's 16-layer backbone (Section 4.1, following NextItNet)."""

DEFAULT_FINETUNING_TASK = "genest"
"""The MovieLens task `finetune` trains without `--task`; a `--data_dir` task has no default (its name is the
patch's name)."""

AUTO_METRIC = "auto"
"""`metric_for_best_model` value that picks the task kind's own selection metric (`TaskKind.selection_metric`)."""


def require_backbone(backbone: str | None) -> None:
    """`--backbone` has no default, but a dataclass field after defaulted ones needs one: checked here instead."""
    if backbone is None:
        raise ValueError("--backbone is required: the folder written by `peterrec pretrain`.")


DEFAULT_MAX_LENGTH = 100
"""The longest input (special tokens included) when nothing else says: no option, patch record or tokenizer length."""


@dataclass
class DataArguments:
    """Where a task's `DatasetDict` comes from: a MovieLens task from the cache, or a folder saved with
    `DatasetDict.save_to_disk` (e.g. the output of `data.load_interactions` or `data.load_labels`)."""

    task: str = field(
        default="pretrain",
        metadata={
            "help": "MovieLens task: pretrain, pretrain_source, genest, ageest, lifeest, lifestatus, coldrec."
        },
    )
    dataset: str = field(default="ml-1m", metadata={"help": "MovieLens release: ml-1m or ml-100k."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "A DatasetDict saved with save_to_disk, instead of --dataset (finetune: with --task)."
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Data cache (default $PETERREC_CACHE or ~/.cache/peterrec)."}
    )
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the 70/3/27 user split of MovieLens tasks."}
    )
    allow_unknown_items: bool = field(
        default=False,
        metadata={"help": "Go on when most items are outside the backbone's vocabulary (a warning only)."},
    )
    max_length: int = field(
        default=DEFAULT_MAX_LENGTH,
        metadata={
            "help": "Longest input: the most recent items a model reads (pretraining: also the windows' length, "
            "unless --window_length)."
        },
    )
    item_texts: str | None = field(
        default=None,
        metadata={
            "help": "Items from their text: a JSON object item id -> text, for the items (pretrain) or the target "
            "items (finetune, ColdRec); default for MovieLens tasks: title, year and genres."
        },
    )


@dataclass
class PretrainArguments(DataArguments):
    """Backbone and objective of `pretrain` (defaults: the paper's causal backbone, Section 4.1). The fields that
    configure the model are those its model type's record names (`ModelType.pretraining_fields`)."""

    model_type: str = field(
        default="peterrec",
        metadata={
            "help": "The user model: "
            + "; ".join(f"{record.name} ({record.title})" for record in MODEL_TYPES.values())
            + "."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Further fields of the model type's configuration, `name=value` separated by commas (as "
            "transformers' run_clm.py), e.g. `num_hidden_layers=2,num_attention_heads=2` for sasrec."
        },
    )
    objective: Literal["causal", "masked"] = field(
        default="causal", metadata={"help": "causal next-item prediction (NextItNet) or masked items (GRec)."}
    )
    hidden_size: int = field(default=256, metadata={"help": "Embedding and channel size k."})
    dilations: list[int] = field(
        default_factory=lambda: list(PAPER_DILATIONS), metadata={"help": "One dilation per conv layer."}
    )
    kernel_size: int = field(default=3, metadata={"help": "Width of every dilated convolution."})
    embedding_size: int | None = field(
        default=None, metadata={"help": "CmnRec: item embedding size (default hidden_size / 2)."}
    )
    controller: Literal["lstm", "gru"] = field(
        default="lstm", metadata={"help": "CmnRec: the RNN controller."}
    )
    controller_size: int | None = field(
        default=None, metadata={"help": "CmnRec: controller hidden size (default hidden_size)."}
    )
    memory_slots: int = field(
        default=4, metadata={"help": "CmnRec: memory slots m, also the number of chunks."}
    )
    memory_width: int | None = field(
        default=None, metadata={"help": "CmnRec: width of a memory slot (default hidden_size)."}
    )
    num_read_heads: int = field(default=3, metadata={"help": "CmnRec: read heads of the memory."})
    attention_size: int = field(default=64, metadata={"help": "CmnRec: size of the chunk attention."})
    chunking: str = field(
        default="tsc", metadata={"help": "CmnRec: chunk rule: none (every step, SRMN), pec, tsc or exc."}
    )
    min_count: int = field(default=1, metadata={"help": "Keep items seen at least this often in training."})
    max_items: int | None = field(
        default=None, metadata={"help": "Keep at most this many items, the most frequent (default: all)."}
    )
    window_length: int | None = field(
        default=None,
        metadata={
            "help": "Length of the pretraining windows over long histories (default --max_length). Shorter windows "
            "than --max_length suit the dilated convolutions, whose output at a position reads a fixed receptive "
            "field; a model with learned positions (sasrec) trains on windows of --max_length."
        },
    )
    window_stride: int | None = field(
        default=None,
        metadata={"help": "Stride of the pretraining windows over long histories (default half a window)."},
    )
    mask_probability: float = field(
        default=0.3, metadata={"help": "Share of masked items (masked objective)."}
    )
    last_item_rows: float = field(
        default=0.0,
        metadata={
            "help": "Share of the masked objective's windows whose last item alone is masked, the question that "
            "next-item evaluation asks (BERT4Rec, Section 3.6)."
        },
    )
    pretraining_loss: Literal["full_softmax", "sampled_softmax"] = field(
        default="full_softmax",
        metadata={"help": "Softmax over all items, or the original code's sampled one."},
    )
    num_sampled: int = field(default=8192, metadata={"help": "Negatives per step of the sampled softmax."})
    save_dir: str | None = field(
        default=None, metadata={"help": "Backbone folder to write (default <output_dir>/backbone)."}
    )
    train_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Pretrain from an interaction log streamed from these Parquet/CSV shard files, folders or globs "
            "(each sorted by user, each user in one file; docs/scale.md) instead of --task/--data_dir."
        },
    )
    user_column: str = field(default="user", metadata={"help": "User column of --train_files."})
    item_column: str = field(default="item", metadata={"help": "Item column of --train_files."})
    time_column: str | None = field(
        default="timestamp", metadata={"help": "Timestamp column of --train_files (none: file order)."}
    )
    shuffle_buffer_size: int = field(
        default=10_000,
        metadata={"help": "Windows of --train_files shuffled in a buffer of this size (0: none)."},
    )
    eval_users: int = field(
        default=10_000,
        metadata={
            "help": "With --train_files: validation and test on the held-out items of the first N users."
        },
    )
    item_representation: str = field(
        default="id",
        metadata={
            "help": "How items become vectors (model types whose record lists item_representation, e.g. sasrec): "
            + "; ".join(f"{record.name}: {record.description}" for record in ITEM_REPRESENTATIONS.values())
            + "."
        },
    )
    item_encoder: str | None = field(
        default=None,
        metadata={
            "help": "The item encoder's text model, a Hub id or a folder (AutoModel + its tokenizer). Default with "
            "a text representation: a small BERT built here over every item text of the catalogue (docs/text_items.md)."
        },
    )

    def __post_init__(self) -> None:
        if self.train_files and self.data_dir is not None:
            raise ValueError(
                "Give --train_files (a streamed log) or --data_dir (a saved DatasetDict), not both."
            )
        record = choose(MODEL_TYPES, self.model_type, "model type")
        choose(ITEM_REPRESENTATIONS, self.item_representation, "item representation")
        if self.item_representation != "id" and "item_representation" not in record.pretraining_fields:
            text_types = [
                name for name, r in MODEL_TYPES.items() if "item_representation" in r.pretraining_fields
            ]
            raise ValueError(
                f"--item_representation {self.item_representation} is not available for --model_type "
                f"{self.model_type}; items from their text work with --model_type {' or '.join(text_types)}."
            )
        if not self.is_causal and record.masked_pretraining_class is None:
            raise ValueError(
                f"--objective masked is not available for --model_type {self.model_type}: it pretrains by "
                "next-item prediction only (--objective causal)."
            )
        if self.window_length is not None and not 0 < self.window_length <= self.max_length:
            raise ValueError(
                f"--window_length must be between 1 and --max_length ({self.max_length}), got {self.window_length}."
            )
        if self.window_length not in (None, self.max_length) and record.learned_positions:
            raise ValueError(
                f"--model_type {self.model_type} learns one embedding per position: windows of {self.window_length} "
                f"items would leave positions {self.window_length}-{self.max_length - 1} untrained. Pretrain on "
                "windows of --max_length (leave out --window_length)."
            )
        self.embedding_size = self.embedding_size or max(1, self.hidden_size // 2)
        self.controller_size = self.controller_size or self.hidden_size
        self.memory_width = self.memory_width or self.hidden_size

    @property
    def is_causal(self) -> bool:
        return self.objective == "causal"

    @property
    def pretraining_window(self) -> int:
        """The length of the pretraining windows: `window_length`, or `max_length`."""
        return self.window_length or self.max_length

    @property
    def max_position_embeddings(self) -> int:
        """The positions a model with learned position embeddings (SASRec) needs: `max_length`."""
        return self.max_length


@dataclass
class FinetuneArguments(DataArguments):
    """Task, method and patch of `finetune` (defaults: PeterRec with serial insertion (c), Section 4)."""

    backbone: str = field(default=None, metadata={"help": "Backbone folder written by `peterrec pretrain`."})
    task: str | None = field(
        default=None,
        metadata={
            "help": f"MovieLens task: {DEFAULT_FINETUNING_TASK} (default), ageest, lifeest, lifestatus or coldrec. With --data_dir: "
            "required, the name the patch is saved and loaded under."
        },
    )
    method: str = field(default="peterrec", metadata={"help": f"One of {', '.join(METHODS)}."})
    insertion: str | None = field(
        default=None,
        metadata={
            "help": f"Where patches go (Figure 3): one of {', '.join(INSERTIONS)} (default: the backbone's model "
            "type's, serial_two for PeterRec, controller_read for CmnRec)."
        },
    )
    patch_type: str = field(
        default=DEFAULT_PATCH_TYPE,
        metadata={
            "help": "What the patching methods add: "
            + "; ".join(f"{record.name}: {record.title}" for record in PATCH_TYPES.values())
            + " (docs/adapters.md)."
        },
    )
    patch_target: str = field(
        default=DEFAULT_PATCH_TARGET,
        metadata={
            "help": f"Which encoder the patching methods patch: {', '.join(PATCH_TARGETS)}; item_encoder and both "
            "need a backbone whose items come from their text (a PEFT adapter in its text model; the `text` extra)."
        },
    )
    item_patch_type: str | None = field(
        default=None,
        metadata={
            "help": "The PEFT method in the item encoder: "
            + "; ".join(f"{record.name}: {record.title}" for record in ITEM_PATCH_TYPES.values())
            + " (default lora)."
        },
    )
    item_patch_settings: str | None = field(
        default=None,
        metadata={
            "help": "Arguments of the item encoder's PEFT configuration, as JSON, e.g. "
            '\'{"r": 16, "target_modules": ["query", "key", "value"]}\' (default: the type\'s, docs/adapters.md).'
        },
    )
    places: list[str] | None = field(
        default=None,
        metadata={
            "help": "Where in each block the patch goes, for the types with a choice (e.g. LoRA on SASRec: query key "
            "value dense_in dense_out; default: the type's)."
        },
    )
    blocks: str | None = field(
        default=None,
        metadata={"help": f"Which blocks get the patch: {', '.join(BLOCK_CHOICES)} (default all)."},
    )
    bottleneck_size: int | None = field(
        default=None, metadata={"help": "Patch bottleneck (default hidden/8)."}
    )
    lora_rank: int | None = field(default=None, metadata={"help": "LoRA's rank r (default 8)."})
    lora_alpha: float | None = field(
        default=None, metadata={"help": "LoRA's alpha; the update is scaled by alpha / r (default 8)."}
    )
    phm_dim: int | None = field(
        default=None, metadata={"help": "Compacter's number of Kronecker products n (default 4)."}
    )
    phm_rank: int | None = field(
        default=None, metadata={"help": "Rank of Compacter's per-layer factors B_i, 0 for full (default 1)."}
    )
    prompt_length: int | None = field(
        default=None, metadata={"help": "Number of soft-prompt vectors (default 4)."}
    )
    train_layer_norms: list[str] = field(
        default_factory=list,
        metadata={
            "help": "LayerNorms the patching methods also train as the task's own copies (PeterRec: norm1 norm2; "
            "SASRec: attention_norm feed_forward_norm final_norm; all: every one)."
        },
    )
    train_tcl_embedding: bool = field(
        default=False, metadata={"help": "Also train a task-owned [TCL] vector."}
    )
    ranking_loss: Literal["bpr", "binary", "full_softmax"] = field(
        default="bpr", metadata={"help": "Loss of the cold-start ranking head."}
    )
    num_negatives: int = field(default=1, metadata={"help": "Sampled negatives per positive in training."})
    num_eval_negatives: int = field(
        default=99, metadata={"help": "Sampled negatives per true item in evaluation (the paper: 99)."}
    )
    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "The backbone's Hub repo id, named by the patch pushed with --push_to_hub when --backbone is a "
            "local folder."
        },
    )
    readout: str | None = field(
        default=None,
        metadata={
            "help": f"How the task reads a user vector: {', '.join(READOUTS)} (default: the backbone's, the "
            "paper's [TCL])."
        },
    )
    head_terms: str = field(
        default="deep",
        metadata={
            "help": "What the task head adds up: "
            + "; ".join(f"{terms.name}: {terms.description}" for terms in HEAD_TERMS.values())
            + "."
        },
    )
    save_dir: str | None = field(
        default=None, metadata={"help": "Patch folder to write (default <output_dir>/patch)."}
    )

    def __post_init__(self) -> None:
        require_backbone(self.backbone)
        choose(METHODS, self.method, "method")
        if self.insertion is not None:
            choose(INSERTIONS, self.insertion, "insertion")
        choose(PATCH_TYPES, self.patch_type, "patch type")
        choose(PATCH_TARGETS, self.patch_target, "patch target")
        if self.item_patch_type is not None:
            choose(ITEM_PATCH_TYPES, self.item_patch_type, "item patch type")
        if self.item_patch_settings is not None and not isinstance(
            json.loads(self.item_patch_settings), dict
        ):
            raise ValueError(
                f"--item_patch_settings must be a JSON object, got {self.item_patch_settings!r}."
            )
        if self.blocks is not None and self.blocks not in BLOCK_CHOICES:
            raise ValueError(f"--blocks must be one of {list(BLOCK_CHOICES)}, got {self.blocks!r}.")
        if self.readout is not None:
            choose(READOUTS, self.readout, "readout")
        choose(HEAD_TERMS, self.head_terms, "head terms")
        if self.task is None:
            if self.data_dir is not None:
                raise ValueError(
                    f"--task is required with --data_dir: the name of your task, under which the patch is "
                    f"saved and loaded (e.g. --task {Path(self.data_dir).name})."
                )
            self.task = DEFAULT_FINETUNING_TASK


@dataclass
class EvaluateArguments(DataArguments):
    """What `evaluate` scores: a backbone alone (pretraining metrics) or a backbone with a patch (task metrics)."""

    backbone: str = field(default=None, metadata={"help": "Backbone folder written by `peterrec pretrain`."})
    patch: str | None = field(default=None, metadata={"help": "Patch folder; omit to evaluate the backbone."})
    task: str | None = field(
        default=None, metadata={"help": "MovieLens task (default: the patch's task, or pretrain)."}
    )
    split: Literal["validation", "test"] = field(default="test", metadata={"help": "Split to evaluate."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest input (default: the length the patch was fine-tuned with, else the backbone "
            f"tokenizer's model_max_length, else {DEFAULT_MAX_LENGTH})."
        },
    )
    num_eval_negatives: int = field(
        default=99, metadata={"help": "Sampled negatives per true item (ranking)."}
    )
    evaluation_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the sampled evaluation candidates (default: the one the patch folder records, so "
            "that the run's metrics are reproduced)."
        },
    )

    def __post_init__(self) -> None:
        require_backbone(self.backbone)


def _auto_metric_help() -> str:
    chosen = ", ".join(f"{kind.selection_metric} ({kind.name})" for kind in TASK_KINDS.values())
    return f"Metric of the best checkpoint; `{AUTO_METRIC}`: the task kind's own, {chosen}."


@dataclass
class PeterRecTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of this pipeline: evaluation and a checkpoint after every epoch, the
    best checkpoint kept (by the task kind's own metric with `metric_for_best_model="auto"`:
    `TaskKind.selection_metric`), Adam with the paper's learning rate 1e-3 (Section 4.1), no reporting
    integrations, and every dataset column passed to the collators."""

    output_dir: str | None = field(
        default="peterrec-output", metadata={"help": "Checkpoints, metrics, curve."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (the paper: 1e-3)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(
        default=128, metadata={"help": "Evaluation batch size per process."}
    )
    eval_strategy: str = field(
        default="epoch", metadata={"help": "When to evaluate on the validation split."}
    )
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Keep the best validation checkpoint."}
    )
    metric_for_best_model: str | None = field(default=AUTO_METRIC, metadata={"help": _auto_metric_help()})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Collators read the raw columns."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Reporting integrations."})
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pin batches in memory (GPU only)."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Batches of similar lengths, so short histories do not pay for long ones' padding."
        },
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={"help": "Stop after this many evaluations without a better validation metric (0: never)."},
    )
    wide_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the wide term of a wide & deep head (--head_terms wide or wide_deep), in a "
            "parameter group of its own (default --learning_rate)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.wide_learning_rate is not None and not self.wide_learning_rate > 0:
            raise ValueError(f"--wide_learning_rate must be positive, got {self.wide_learning_rate}.")


__all__ = [
    "AUTO_METRIC",
    "DEFAULT_FINETUNING_TASK",
    "PAPER_DILATIONS",
    "DataArguments",
    "EvaluateArguments",
    "FinetuneArguments",
    "PeterRecTrainingArguments",
    "PretrainArguments",
]
