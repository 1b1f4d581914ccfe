"""Trainer pipeline for PeterRec: pretraining a backbone, fine-tuning a task patch, evaluation, and the demo.

The command line (`peterrec pretrain|finetune|evaluate|demo`) and the scripts in `examples/` call the functions of
this module, so both run the same code, on one process or under `accelerate launch`.

- `pretrain` (Section 3.2): builds the item vocabulary from the training split and a backbone (the paper's size by
  default: hidden 256, dilations [1, 2, 4, 8] x 4), trains it by causal next-item prediction (NextItNet) or by
  masked-item prediction (GRec encoder) on every window of each user's history, selects the best checkpoint by
  MRR@5 of the held-out last item ranked over the whole item pool (Section 4.1), and saves the backbone folder
  (weights, tokenizer, model card).
- `finetune` (Section 3.3): loads a backbone folder, prepares it for one task with one method
  (`patching.prepare_for_transfer`), trains on the task's training split with validation after every epoch,
  evaluates the test split once at the end and saves the patch folder (`patching.save_patch`).
- `evaluate`: the test metrics of a backbone, or of a backbone with a patch.

Each run writes `metrics.json` and a learning-curve PNG next to its checkpoints.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.utils import logging

from hub_cards.cards import render_backbone_card

from ._io import atomic_folder, write_json
from .configuration_peterrec import PeterRecConfig
from .data import (
    ItemRankingCollator,
    MaskedItemCollator,
    NextItemCollator,
    SequenceClassificationCollator,
    expand_windows,
    load_task,
    one_row_per_target,
    prepare_movielens,
    tokenize_dataset,
)
from .metrics import (
    build_ranking_candidates,
    exclusion_mask,
    full_rank_of_positive,
    full_ranking_metrics,
    make_compute_metrics,
    ranking_metrics,
)
from .modeling_peterrec import (
    PeterRecForItemRanking,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecPreTrainedModel,
)
from .patching import METHODS, PATCH_WEIGHTS_NAME, load_patch, prepare_for_transfer, save_patch
from .tokenization_peterrec import ItemTokenizer

logger = logging.get_logger(__name__)

PAPER_DILATIONS = [1, 2, 4, 8] * 4
"""Dilations of the paper's 16-layer backbone (Section 4.1, following NextItNet)."""

RANKING_CUTOFFS = (5, 10)
AUTO_METRIC = "auto"
METRICS_FILE = "metrics.json"
CURVE_FILE = "learning_curve.png"


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------


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
        default=None, metadata={"help": "A DatasetDict saved with save_to_disk; replaces --dataset/--task."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Data cache (default $PETERREC_CACHE or ~/.cache/peterrec)."}
    )
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the 70/3/27 user split of MovieLens tasks."}
    )
    max_length: int = field(
        default=100,
        metadata={"help": "Longest input: the pretraining window, the most recent items when fine-tuning."},
    )


@dataclass
class PretrainArguments(DataArguments):
    """Backbone and objective of `pretrain` (defaults: the paper's causal backbone, Section 4.1)."""

    objective: Literal["causal", "masked"] = field(
        default="causal", metadata={"help": "causal next-item prediction (NextItNet) or masked items (GRec)."}
    )
    hidden_size: int = field(default=256, metadata={"help": "Embedding and channel size k."})
    dilations: list[int] = field(
        default_factory=lambda: list(PAPER_DILATIONS), metadata={"help": "One dilation per conv layer."}
    )
    kernel_size: int = field(default=3, metadata={"help": "Width of every dilated convolution."})
    min_count: int = field(default=1, metadata={"help": "Keep items seen at least this often in training."})
    window_stride: int | None = field(
        default=None,
        metadata={"help": "Stride of the pretraining windows over long histories (default half)."},
    )
    mask_probability: float = field(
        default=0.3, metadata={"help": "Share of masked items (masked objective)."}
    )
    pretraining_loss: Literal["full_softmax", "sampled_softmax"] = field(
        default="full_softmax",
        metadata={"help": "Softmax over all items, or the original code's sampled one."},
    )
    num_sampled: int = field(default=8192, metadata={"help": "Negatives per step of the sampled softmax."})
    save_dir: str | None = field(
        default=None, metadata={"help": "Backbone folder to write (default <output_dir>/backbone)."}
    )


@dataclass
class FinetuneArguments(DataArguments):
    """Task, method and patch of `finetune` (defaults: PeterRec with serial insertion (c), Section 4)."""

    backbone: str = field(default=None, metadata={"help": "Backbone folder written by `peterrec pretrain`."})
    task: str = field(default="genest", metadata={"help": "genest, ageest, lifeest, lifestatus or coldrec."})
    method: str = field(default="peterrec", metadata={"help": f"One of {', '.join(METHODS)}."})
    insertion: str = field(
        default="serial_two",
        metadata={"help": "serial_one, serial_two, parallel_before_ln or parallel_after_act (Figure 3)."},
    )
    bottleneck_size: int | None = field(
        default=None, metadata={"help": "Patch bottleneck (default hidden/8)."}
    )
    train_layer_norms: list[str] = field(
        default_factory=list,
        metadata={"help": "Block LayerNorms the PeterRec methods also train (norm1 norm2)."},
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
    save_dir: str | None = field(
        default=None, metadata={"help": "Patch folder to write (default <output_dir>/patch)."}
    )


@dataclass
class EvaluateArguments(DataArguments):
    """What `evaluate` scores: a backbone alone (pretraining metrics) or a backbone with a patch (task metrics)."""

    backbone: str = field(default=None, metadata={"help": "Backbone folder written by `peterrec pretrain`."})
    patch: str | None = field(default=None, metadata={"help": "Patch folder; omit to evaluate the backbone."})
    task: str | None = field(
        default=None, metadata={"help": "MovieLens task (default: the patch's task, or pretrain)."}
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    num_eval_negatives: int = field(
        default=99, metadata={"help": "Sampled negatives per true item (ranking)."}
    )


@dataclass
class PeterRecTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of this pipeline: evaluation and a checkpoint after every epoch, the
    best checkpoint kept (by the task's own metric with `metric_for_best_model="auto"`: MRR@5 for pretraining and
    ranking, accuracy for classification), Adam with the paper's learning rate 1e-3 (Section 4.1), no reporting
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
    metric_for_best_model: str | None = field(
        default=AUTO_METRIC,
        metadata={"help": "Metric of the best checkpoint; `auto`: mrr@5 (pretraining, ranking) or accuracy."},
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Collators read the raw columns."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Reporting integrations."})
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pin batches in memory (GPU only)."}
    )


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def load_splits(args: DataArguments, task: str | None = None):
    """The `DatasetDict` of `args.data_dir`, or of MovieLens task `task or args.task` (built on first use)."""
    from datasets import load_from_disk

    if args.data_dir is not None:
        if not Path(args.data_dir).is_dir():
            raise FileNotFoundError(
                f"--data_dir {args.data_dir} is not a folder; save a DatasetDict there with save_to_disk."
            )
        splits = load_from_disk(args.data_dir)
    else:
        splits = load_task(args.dataset, task or args.task, args.cache_dir, args.split_seed)
    missing = [split for split in ("train", "validation", "test") if split not in splits]
    if missing:
        raise ValueError(f"The data has no {missing} split(s); it needs train, validation and test splits.")
    return splits


def task_kind(dataset) -> Literal["pretraining", "classification", "ranking"]:
    """What a task's rows are for, read from their columns (`data` module row schemas)."""
    if "label" in dataset.column_names:
        return "classification"
    if "targets" in dataset.column_names:
        return "ranking"
    return "pretraining"


def _keep_columns(dataset, columns: list[str]):
    return dataset.remove_columns([name for name in dataset.column_names if name not in columns])


def held_out_datasets(splits, tokenizer: ItemTokenizer):
    """(validation, test) rows of item ids whose last item is the held-out target (leave-one-out splits)."""
    return tuple(
        _keep_columns(tokenize_dataset(splits[name], tokenizer), ["input_ids"])
        for name in ("validation", "test")
    )


def pretraining_windows(train, tokenizer: ItemTokenizer, window: int, stride: int | None = None):
    """Every `window`-long window of each training history (`data.sliding_windows`), so that long histories are
    used whole, keeping windows of two items or more (one item has no next item to predict)."""
    encoded = _keep_columns(tokenize_dataset(train, tokenizer), ["input_ids"])
    windows = expand_windows(encoded, window, stride, column="input_ids")
    return windows.filter(lambda row: len(row["input_ids"]) >= 2)


def classification_datasets(splits, tokenizer: ItemTokenizer):
    """(train, validation, test) rows with `input_ids` and `label`."""
    return tuple(
        _keep_columns(tokenize_dataset(splits[name], tokenizer), ["input_ids", "label"])
        for name in ("train", "validation", "test")
    )


def ranking_datasets(splits, tokenizer: ItemTokenizer, num_eval_negatives: int, seed: int):
    """(train, validation, test) rows with one row per target item (`target`), as in the original code.

    Evaluation rows also get `positives` (all of the user's targets, which never serve as negatives) and
    `candidate_ids`: the true item in column 0 and `num_eval_negatives` uniformly sampled negatives after it, drawn
    once with a fixed seed (the paper's protocol, Section 4.1).
    """
    num_items = len(splits["train"].features["targets"].feature.names)
    rows = {}
    for name in ("train", "validation", "test"):
        dataset = tokenize_dataset(splits[name], tokenizer)
        dataset = dataset.add_column("positives", [list(targets) for targets in dataset["targets"]])
        dataset = _keep_columns(one_row_per_target(dataset), ["input_ids", "target", "positives"])
        if name != "train":
            candidates = build_ranking_candidates(
                dataset["target"],
                num_items,
                num_eval_negatives,
                exclude=[set(positives) for positives in dataset["positives"]],
                seed=seed,
            )
            dataset = dataset.add_column("candidate_ids", candidates.tolist())
        rows[name] = dataset
    return rows["train"], rows["validation"], rows["test"]


@dataclass
class RankingEvaluationCollator:
    """Evaluation batches of the ranking head: the training collator's inputs and `labels`, with the row's fixed
    `candidate_ids` scored as `logits` and its sampled negatives as `negative_ids` (so the evaluation loss is
    deterministic). With `with_candidates=False` the model scores every target item instead (full ranking)."""

    collator: ItemRankingCollator
    with_candidates: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        if self.with_candidates:
            candidates = torch.tensor([feature["candidate_ids"] for feature in features], dtype=torch.long)
            batch["candidate_ids"] = candidates
            batch["negative_ids"] = candidates[:, 1:]
        return batch


# ---------------------------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------------------------


class PeterRecTrainer(Trainer):
    """A `Trainer` whose evaluation batches may come from their own collator (`eval_data_collator`): masked
    pretraining is evaluated on unmasked histories, and the ranking head on fixed sampled candidates."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def _with_eval_collator(self, make_loader, *args):
        if self.eval_data_collator is None:
            return make_loader(*args)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return make_loader(*args)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)


def held_out_item_ranks(logits: torch.Tensor, targets: torch.Tensor, first_item_id: int) -> torch.Tensor:
    """0-based rank of each held-out item over the whole item pool (special tokens never compete; a target that
    is not in the vocabulary, i.e. `[UNK]`, ranks last)."""
    scores = logits.float().clone()
    scores[:, :first_item_id] = float("-inf")
    return full_rank_of_positive(scores, targets)


class PretrainingTrainer(PeterRecTrainer):
    """Evaluates a pretraining model as in Section 4.1: the last item of each evaluation history is held out and
    ranked over the whole item pool; the evaluation loss is its cross-entropy. The causal model predicts it from
    the position before it; the masked model from a `[MASK]` put in its place."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        targets = input_ids[:, -1]
        config = self.accelerator.unwrap_model(model).config
        with torch.no_grad():
            if config.is_causal:
                logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=2).logits[
                    :, 0
                ]
            else:
                masked = input_ids.clone()
                masked[:, -1] = config.mask_token_id
                logits = model(input_ids=masked, attention_mask=attention_mask, logits_to_keep=1).logits[:, 0]
            loss = F.cross_entropy(logits.float(), targets)
            if prediction_loss_only:
                return loss, None, None
            ranks = held_out_item_ranks(logits, targets, self.processing_class.first_item_id)
        return loss, ranks, targets


def compute_pretraining_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`ranking_metrics` of the held-out-item ranks that `PretrainingTrainer` returns as predictions."""
    return ranking_metrics(prediction.predictions, RANKING_CUTOFFS)


# ---------------------------------------------------------------------------------------------------------------
# Outputs: metrics file, learning curve, folders
# ---------------------------------------------------------------------------------------------------------------


def plot_learning_curve(log_history: list[dict[str, Any]], metric: str, path: str | os.PathLike) -> None:
    """Training and validation loss per step, and the validation `metric` on a second axis, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    validation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    scores = [(entry["step"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "training loss", "-"), (validation, "validation loss", "o-")):
        if points:
            loss_axis.plot(*zip(*points, strict=True), style, label=label)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    handles, labels = loss_axis.get_legend_handles_labels()
    if scores:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(*zip(*scores, strict=True), "s--", color="tab:green", label=f"validation {metric}")
        metric_axis.set_ylabel(metric)
        more_handles, more_labels = metric_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _finish_run(
    trainer: Trainer, summary: dict[str, Any], metric: str, log_history: list[dict[str, Any]]
) -> dict[str, Any]:
    """Writes `metrics.json` (the summary and the training log) and the learning curve into the output folder.

    `log_history` is the log of the training run itself, taken before the final evaluations, whose entries at the
    last step (the best checkpoint's numbers) would otherwise look like one more point of the curve.
    """
    summary["log_history"] = log_history
    if trainer.is_world_process_zero():
        output_dir = Path(trainer.args.output_dir)
        write_json(output_dir / METRICS_FILE, summary)
        plot_learning_curve(log_history, metric, output_dir / CURVE_FILE)
        logger.info(f"Wrote {output_dir / METRICS_FILE} and {output_dir / CURVE_FILE}")
    return summary


def _strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """`{"test_mrr@5": x, "test_runtime": ...}` -> `{"mrr@5": x}`: the measures only, without the timings."""
    skipped = ("runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time")
    return {
        key[len(prefix) + 1 :]: value
        for key, value in metrics.items()
        if key.startswith(f"{prefix}_") and not key.endswith(skipped)
    }


def save_backbone(
    model: PeterRecPreTrainedModel,
    tokenizer: ItemTokenizer,
    folder: str | os.PathLike,
    metrics: dict[str, float],
    dataset: str,
    training_summary: str,
) -> Path:
    """Writes a backbone folder (SPEC §4): weights and config, tokenizer, and the model card with the pretraining
    metrics. The folder appears complete or not at all."""
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = model.config
        card = render_backbone_card(
            folder.name,
            is_causal=config.is_causal,
            hidden_size=config.hidden_size,
            dilations=config.dilations,
            vocab_size=config.vocab_size,
            num_parameters=model.num_parameters(),
            dataset=dataset,
            metrics=metrics,
            kernel_size=config.kernel_size,
            pretraining_loss=config.pretraining_loss,
            training_summary=training_summary,
        )
        card.save(staging / "README.md")
    return folder


def resume_target(training_args: TrainingArguments) -> str | bool | None:
    """`--resume_from_checkpoint`: a checkpoint folder, or `last` (also `true`) for the latest one in
    `output_dir`."""
    value = training_args.resume_from_checkpoint
    if value is None or value is False:
        return None
    if value is True or str(value).lower() in ("last", "true"):
        return True
    if not Path(value).is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value} is not a checkpoint folder; pass one of the checkpoint-* folders "
            "of a previous run, or `last` for the latest one in --output_dir."
        )
    return value


def _dataset_name(args: DataArguments, task: str) -> str:
    return args.data_dir if args.data_dir is not None else f"{args.dataset}/{task}"


def _with_metric_for_best(training_args: TrainingArguments, metric: str) -> TrainingArguments:
    """`training_args` with the task's own best-checkpoint metric in place of `auto` (all of them: higher is
    better)."""
    if training_args.metric_for_best_model != AUTO_METRIC:
        return training_args
    return replace(training_args, metric_for_best_model=metric, greater_is_better=True)


# ---------------------------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------------------------


def _train_and_test(
    trainer: Trainer, test, training_args: TrainingArguments
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Trains (resuming if asked), then evaluates the kept checkpoint on validation and, once, on test.

    Returns the training output, the training log (before the final evaluations) and the run's summary fields.
    """
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resume_target(training_args))
    log_history = list(trainer.state.log_history)
    results = {
        "processes": training_args.world_size,
        "train_runtime_s": train_output.metrics["train_runtime"],
        "validation": _strip_prefix(trainer.evaluate(), "eval"),
        "test": _strip_prefix(trainer.evaluate(test, metric_key_prefix="test"), "test"),
    }
    results["wall_time_s"] = time.perf_counter() - started
    return train_output, log_history, results


def pretrain(
    args: PretrainArguments,
    training_args: TrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, Any]:
    """Pretrains a backbone (Section 3.2) and saves the backbone folder; returns the summary in `metrics.json`.

    Resumes from `training_args.resume_from_checkpoint` (a checkpoint folder, or `True` for the latest one in
    `output_dir`).
    """
    splits = load_splits(args)
    if task_kind(splits["train"]) != "pretraining":
        raise ValueError(
            f"Task {args.task!r} holds labelled rows; pretrain on a pretraining task (pretrain, pretrain_source) "
            "or on the output of data.load_interactions."
        )
    is_causal = args.objective == "causal"
    tokenizer = ItemTokenizer.from_sequences(
        splits["train"]["items"], min_count=args.min_count, tcl_position="end" if is_causal else "both"
    )
    train = pretraining_windows(splits["train"], tokenizer, args.max_length, args.window_stride)
    validation, test = held_out_datasets(splits, tokenizer)
    config = PeterRecConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        kernel_size=args.kernel_size,
        dilations=args.dilations,
        is_causal=is_causal,
        pretraining_loss=args.pretraining_loss,
        num_sampled=min(args.num_sampled, len(tokenizer)),
    )
    set_seed(training_args.seed)
    model_class = PeterRecForNextItemPrediction if is_causal else PeterRecForMaskedItemPrediction
    model = model_class(config)
    logger.info(
        f"Pretraining a {args.objective} backbone ({model.num_parameters():,} parameters, {len(tokenizer):,} "
        f"tokens) on {len(train):,} windows of at most {args.max_length} items"
    )
    eval_collator = NextItemCollator(tokenizer, args.max_length)
    train_collator = (
        eval_collator
        if is_causal
        else MaskedItemCollator(tokenizer, args.max_length, mask_probability=args.mask_probability)
    )
    trainer = PretrainingTrainer(
        model=model,
        args=_with_metric_for_best(training_args, "mrr@5"),
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        compute_metrics=compute_pretraining_metrics,
        callbacks=callbacks,
    )
    train_output, log_history, results = _train_and_test(trainer, test, training_args)
    test_metrics = results["test"]
    summary = {
        "objective": args.objective,
        "dataset": _dataset_name(args, args.task),
        "num_parameters": model.num_parameters(),
        "vocab_size": len(tokenizer),
        "train_windows": len(train),
        **results,
        "config": {
            "hidden_size": config.hidden_size,
            "dilations": config.dilations,
            "max_length": args.max_length,
        },
    }
    save_dir = Path(args.save_dir or Path(training_args.output_dir) / "backbone")
    if trainer.is_world_process_zero():
        save_backbone(
            trainer.model,
            tokenizer,
            save_dir,
            metrics={key: value for key, value in test_metrics.items() if key != "loss"},
            dataset=summary["dataset"],
            training_summary=(
                f"{args.objective} objective, {train_output.global_step} steps of "
                f"{training_args.per_device_train_batch_size * training_args.world_size} windows of at most "
                f"{args.max_length} items, learning rate {training_args.learning_rate}."
            ),
        )
    summary["backbone"] = str(save_dir)
    return _finish_run(trainer, summary, "mrr@5", log_history)


def load_backbone(folder: str | os.PathLike) -> tuple[PeterRecPreTrainedModel, ItemTokenizer]:
    """The pretraining model and tokenizer of a backbone folder written by `pretrain`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a backbone folder (no config.json); pass the folder written by `peterrec pretrain`."
        )
    config = PeterRecConfig.from_pretrained(folder)
    model_class = PeterRecForNextItemPrediction if config.is_causal else PeterRecForMaskedItemPrediction
    return model_class.from_pretrained(folder), ItemTokenizer.from_pretrained(folder)


def _task_collators(tokenizer: ItemTokenizer, model: PeterRecPreTrainedModel, max_length: int, kind: str):
    """(training collator, evaluation collator) of a fine-tuning task: [TCL] appended for the causal backbone
    (Figure 2a) or at both ends for the non-causal one (Figure 2c)."""
    tcl_position = "end" if model.config.is_causal else "both"
    if kind == "classification":
        collator = SequenceClassificationCollator(tokenizer, max_length, tcl_position=tcl_position)
        return collator, collator
    collator = ItemRankingCollator(
        tokenizer,
        max_length,
        tcl_position=tcl_position,
        num_target_items=model.config.num_target_items,
        num_negatives=model.config.num_negatives,
    )
    return collator, RankingEvaluationCollator(collator)


def task_datasets(splits, tokenizer: ItemTokenizer, num_eval_negatives: int, seed: int):
    """(kind, train, validation, test) of a fine-tuning task."""
    kind = task_kind(splits["train"])
    if kind == "classification":
        return (kind, *classification_datasets(splits, tokenizer))
    if kind == "ranking":
        return (kind, *ranking_datasets(splits, tokenizer, num_eval_negatives, seed))
    raise ValueError(
        "This task has no `label` or `targets` column; fine-tune on a classification or ColdRec task."
    )


def full_ranking_test_metrics(trainer: PeterRecTrainer, test) -> dict[str, float]:
    """HR@k, MRR@k and NDCG@k of each true target item ranked over all target items, the user's other targets
    excluded (they are not wrong answers)."""
    full = replace(trainer.eval_data_collator, with_candidates=False)
    trainer.eval_data_collator, sampled = full, trainer.eval_data_collator
    try:
        scores = trainer.predict(test, metric_key_prefix="full").predictions
    finally:
        trainer.eval_data_collator = sampled
    scores = torch.as_tensor(scores[0] if isinstance(scores, tuple) else scores)
    mask = exclusion_mask(test["positives"], scores.shape[1])
    return full_ranking_metrics(scores, test["target"], mask, RANKING_CUTOFFS)


def finetune(
    args: FinetuneArguments,
    training_args: TrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, Any]:
    """Fine-tunes a backbone for one task with one method (Section 3.3) and saves the patch folder; returns the
    summary in `metrics.json` (validation and test metrics, trainable and total parameters, patch size)."""
    if args.backbone is None:
        raise ValueError("--backbone is required: the folder written by `peterrec pretrain`.")
    if args.method not in METHODS:
        raise ValueError(f"Unknown method {args.method!r}; choose one of {list(METHODS)}.")
    splits = load_splits(args)
    backbone, tokenizer = load_backbone(args.backbone)
    kind, train, validation, test = task_datasets(
        splits, tokenizer, args.num_eval_negatives, training_args.seed
    )
    features = splits["train"].features
    head_kwargs = (
        {"label_names": features["label"].names}
        if kind == "classification"
        else {
            "num_target_items": len(features["targets"].feature.names),
            "target_names": features["targets"].feature.names,
            "ranking_loss": args.ranking_loss,
            "num_negatives": args.num_negatives,
        }
    )
    model, report = prepare_for_transfer(
        backbone,
        method=args.method,
        task=args.task,
        head=kind,
        insertion=args.insertion,
        bottleneck_size=args.bottleneck_size,
        train_layer_norms=args.train_layer_norms,
        train_tcl_embedding=args.train_tcl_embedding,
        seed=training_args.seed,
        **head_kwargs,
    )
    logger.info(str(report))
    train_collator, eval_collator = _task_collators(tokenizer, model, args.max_length, kind)
    metric = "accuracy" if kind == "classification" else "mrr@5"
    trainer = PeterRecTrainer(
        model=model,
        args=_with_metric_for_best(training_args, metric),
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(kind, RANKING_CUTOFFS),
        callbacks=callbacks,
    )
    train_output, log_history, results = _train_and_test(trainer, test, training_args)
    test_metrics = results["test"]
    full_metrics = full_ranking_test_metrics(trainer, test) if kind == "ranking" else None
    summary = {
        "task": args.task,
        "task_kind": kind,
        "method": args.method,
        "dataset": _dataset_name(args, args.task),
        "backbone": args.backbone,
        "trainable_parameters": report.trainable_parameters,
        "total_parameters": report.total_parameters,
        "train_examples": len(train),
        **results,
    }
    if full_metrics is not None:
        summary["test_full_ranking"] = full_metrics
    save_dir = Path(args.save_dir or Path(training_args.output_dir) / "patch")
    if trainer.is_world_process_zero():
        save_patch(
            trainer.model,
            save_dir,
            metrics={key: value for key, value in test_metrics.items() if key != "loss"},
            full_ranking_metrics=full_metrics,
            dataset=summary["dataset"],
        )
        summary["patch_size_bytes"] = (save_dir / PATCH_WEIGHTS_NAME).stat().st_size
    summary["patch"] = str(save_dir)
    return _finish_run(trainer, summary, metric, log_history)


def evaluate(args: EvaluateArguments, training_args: TrainingArguments) -> dict[str, Any]:
    """Test metrics of a backbone (held-out last item over the whole item pool) or of a backbone with a patch
    (the task's metrics; for ranking also the full ranking). Writes `metrics.json` into `output_dir`."""
    if args.backbone is None:
        raise ValueError("--backbone is required: the folder written by `peterrec pretrain`.")
    backbone, tokenizer = load_backbone(args.backbone)
    training_args = replace(training_args, load_best_model_at_end=False, eval_strategy="no")
    if args.patch is None:
        splits = load_splits(args, args.task or "pretrain")
        validation, test = held_out_datasets(splits, tokenizer)
        evaluated = {"validation": validation, "test": test}[args.split]
        trainer = PretrainingTrainer(
            model=backbone,
            args=training_args,
            data_collator=NextItemCollator(tokenizer, args.max_length),
            processing_class=tokenizer,
            compute_metrics=compute_pretraining_metrics,
        )
        metrics = _strip_prefix(trainer.evaluate(evaluated, metric_key_prefix=args.split), args.split)
        summary = {"backbone": args.backbone, "split": args.split, "metrics": metrics}
    else:
        model = load_patch(args.patch, backbone)
        spec = model.patch_config
        splits = load_splits(args, args.task or spec.task)
        kind, _, validation, test = task_datasets(
            splits, tokenizer, args.num_eval_negatives, training_args.seed
        )
        evaluated = {"validation": validation, "test": test}[args.split]
        _, eval_collator = _task_collators(tokenizer, model, args.max_length, kind)
        trainer = PeterRecTrainer(
            model=model,
            args=training_args,
            data_collator=eval_collator,
            eval_data_collator=eval_collator,
            processing_class=tokenizer,
            compute_metrics=make_compute_metrics(kind, RANKING_CUTOFFS),
        )
        metrics = _strip_prefix(trainer.evaluate(evaluated, metric_key_prefix=args.split), args.split)
        summary = {"backbone": args.backbone, "patch": args.patch, "task": spec.task, "method": spec.method}
        summary.update(split=args.split, metrics=metrics)
        if isinstance(model, PeterRecForItemRanking):
            summary["full_ranking"] = full_ranking_test_metrics(trainer, evaluated)
    if trainer.is_world_process_zero():
        write_json(Path(training_args.output_dir) / METRICS_FILE, summary)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------------------------

DEMO_BACKBONE = {"hidden_size": 64, "dilations": [1, 2, 4, 8] * 2, "max_length": 50}
"""The demo's small backbone: 8 layers of width 64 over the 50 most recent items (the paper: 16 layers of 256)."""
DEMO_PRETRAINING = {"pretraining_loss": "sampled_softmax", "num_sampled": 512}
"""The demo pretrains with the original code's sampled softmax, three times faster than the full softmax on CPU."""
DEMO_TASKS = ("genest", "coldrec")
DEMO_METHODS = ("peterrec", "fine_all")


def _demo_training_arguments(
    output_dir: Path, epochs: float, batch_size: int, seed: int
) -> TrainingArguments:
    return PeterRecTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=256,
        logging_steps=10,
        save_total_limit=1,
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
    )


def run_demo(
    output_dir: str | os.PathLike = "peterrec-demo",
    cache_dir: str | os.PathLike | None = None,
    pretrain_epochs: float = 2.0,
    finetune_epochs: float = 3.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The README's `make demo`: ML-1M from the pinned wheel, a small causal backbone pretrained on the ColdRec
    source-domain sequences (`pretrain_source`), then PeterRec and FineAll for GenEst and ColdRec on that one
    backbone. Returns one row per (task, method) for `format_results_table`."""
    output_dir = Path(output_dir)
    cache = None if cache_dir is None else str(cache_dir)
    started = time.perf_counter()
    prepare_movielens("ml-1m", cache, seed)
    logger.info(f"ML-1M tasks ready after {time.perf_counter() - started:.0f}s")
    data = {
        "dataset": "ml-1m",
        "cache_dir": cache,
        "split_seed": seed,
        "max_length": DEMO_BACKBONE["max_length"],
    }
    pretrained = pretrain(
        PretrainArguments(
            task="pretrain_source",
            hidden_size=DEMO_BACKBONE["hidden_size"],
            dilations=DEMO_BACKBONE["dilations"],
            window_stride=DEMO_BACKBONE["max_length"],
            **DEMO_PRETRAINING,
            **data,
        ),
        _demo_training_arguments(output_dir / "pretrain", pretrain_epochs, 64, seed),
    )
    rows = [
        {
            "task": "pretraining",
            "method": "causal",
            "metric": "MRR@5 (whole pool)",
            "value": pretrained["test"]["mrr@5"],
            "trainable_parameters": pretrained["num_parameters"],
            "patch_size_bytes": None,
        }
    ]
    for task in DEMO_TASKS:
        for method in DEMO_METHODS:
            result = finetune(
                FinetuneArguments(backbone=pretrained["backbone"], task=task, method=method, **data),
                _demo_training_arguments(output_dir / f"{task}-{method}", finetune_epochs, 64, seed),
            )
            metric = "accuracy" if result["task_kind"] == "classification" else "mrr@5"
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "metric": metric if metric == "accuracy" else "MRR@5 (99 negatives)",
                    "value": result["test"][metric],
                    "trainable_parameters": result["trainable_parameters"],
                    "patch_size_bytes": result.get("patch_size_bytes"),
                }
            )
    total = time.perf_counter() - started
    write_json(output_dir / "demo_results.json", {"rows": rows, "wall_time_s": total})
    logger.info(f"Demo finished in {total:.0f}s")
    return rows


def format_results_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the demo's rows: task, method, metric, trainable parameters, patch size."""
    header = ("task", "method", "metric", "value", "trainable params", "patch size")
    lines = [
        (
            row["task"],
            row["method"],
            row["metric"],
            f"{row['value']:.4f}",
            f"{row['trainable_parameters']:,}",
            "-" if row["patch_size_bytes"] is None else f"{row['patch_size_bytes'] / 1024:,.0f} KiB",
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([render(header), render(["-" * width for width in widths]), *map(render, lines)])


__all__ = [
    "DataArguments",
    "EvaluateArguments",
    "FinetuneArguments",
    "PeterRecTrainer",
    "PeterRecTrainingArguments",
    "PretrainArguments",
    "PretrainingTrainer",
    "RankingEvaluationCollator",
    "evaluate",
    "finetune",
    "format_results_table",
    "load_backbone",
    "plot_learning_curve",
    "pretrain",
    "run_demo",
    "save_backbone",
]
