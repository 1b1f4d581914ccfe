"""The three pipelines of the command line and of `examples/`: `pretrain`, `finetune` and `evaluate`.

- `pretrain` (Section 3.2): builds the item vocabulary from the training split and a backbone of `--model_type`
  (PeterRec at the paper's size by default: hidden 256, dilations [1, 2, 4, 8] x 4; or SASRec), trains it by causal next-item prediction (NextItNet) or by
  masked-item prediction (GRec encoder) on every window of each user's history, selects the best checkpoint by
  MRR@5 of the held-out last item ranked over the whole item pool (Section 4.1), and saves the backbone folder.
- `finetune` (Section 3.3): loads a backbone folder, prepares it for one task with one method
  (`prepare_for_transfer`), trains on the task's training split with validation after every epoch, evaluates the
  test split once at the end and saves the patch folder (`save_patch`).
- `evaluate`: the test metrics of a backbone, or of a backbone with a patch.

Each run writes `metrics.json` and a learning-curve PNG next to its checkpoints; all of them run unchanged on one
process or under `accelerate launch`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import (
    EarlyStoppingCallback,
    PreTrainedConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging

from .._io import write_json
from ..configuration_item_text import ITEM_REPRESENTATIONS
from ..data import (
    MaskedItemCollator,
    NextItemCollator,
    align_labels,
    movielens_item_texts,
    read_item_texts,
)
from ..inference import task_max_length
from ..item_text import item_encoder_fields, uses_item_text
from ..metrics import make_compute_metrics
from ..model_types import config_class, pretraining_model_class
from ..modeling_peterrec import ItemRankingHead
from ..patch_config import PATCH_WEIGHTS_NAME
from ..registry import METHODS, MODEL_TYPES, TASK_KINDS, choose
from ..saving import load_backbone, load_patch, save_backbone, save_patch
from ..small_text_encoder import build_small_text_encoder
from ..tokenization_peterrec import ItemTokenizer, UnknownItems
from ..transfer import prepare_for_transfer
from .arguments import (
    DEFAULT_MAX_LENGTH,
    DataArguments,
    EvaluateArguments,
    FinetuneArguments,
    PretrainArguments,
)
from .checkpoints import resume_target
from .datasets import (
    dataset_name,
    head_arguments,
    held_out_datasets,
    in_memory_pretraining_data,
    load_splits,
    task_collators,
    task_datasets,
)
from .outputs import METRICS_FILE, finish_run, strip_prefix
from .streaming import streamed_pretraining_data
from .trainers import (
    RANKING_CUTOFFS,
    PeterRecTrainer,
    PretrainingTrainer,
    cold_target_test_metrics,
    compute_pretraining_metrics,
    full_ranking_test_metrics,
    pipeline_trainer,
)

logger = logging.get_logger(__name__)


def train_and_test(
    trainer: Trainer, test, training_args: TrainingArguments
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Trains (resuming if asked), then evaluates the kept checkpoint on validation and, once, on test.

    Returns the training output, the training log (before the final evaluations) and the run's summary fields.
    """
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resume_target(training_args))
    log_history = list(trainer.state.log_history)
    # Early stopping watches training's evaluations only: on the final ones it would find no `eval_` metric in the
    # test results and warn that it is disabled.
    trainer.remove_callback(EarlyStoppingCallback)
    results = {
        "processes": training_args.world_size,
        "train_runtime_s": train_output.metrics["train_runtime"],
        "validation": strip_prefix(trainer.evaluate(), "eval"),
        "test": strip_prefix(trainer.evaluate(test, metric_key_prefix="test"), "test"),
    }
    results["wall_time_s"] = time.perf_counter() - started
    return train_output, log_history, results


def check_unknown_items(tokenizer: ItemTokenizer, splits, args) -> UnknownItems:
    """The share of the task's items outside the backbone's vocabulary (`ItemTokenizer.check_unknown_items`): a
    warning past 5%, an error past half (the data and the backbone do not match) unless `--allow_unknown_items`."""
    items = [row for split in ("train", "validation", "test") for row in splits[split]["items"]]
    return tokenizer.check_unknown_items(items, allow_unknown_items=args.allow_unknown_items)


def push_finished_folder(
    training_args: TrainingArguments, folder: Path, base_model_id: str | None = None
) -> str | None:
    """With `--push_to_hub`, uploads the backbone or patch folder a pipeline wrote to `--hub_model_id` (default: the
    folder's name), with its card (`sharing.push_folder_to_hub`); returns the repo id."""
    if not training_args.push_to_hub:
        return None
    from ..sharing import push_folder_to_hub

    repo_id = training_args.hub_model_id or folder.name
    push_folder_to_hub(
        folder,
        repo_id,
        base_model_id=base_model_id,
        private=bool(training_args.hub_private_repo),
        token=training_args.hub_token,
    )
    logger.info(f"Pushed {folder} to {repo_id}")
    return repo_id


def pretraining_config(
    args: PretrainArguments, vocab_size: int, item_encoder: str | None = None
) -> PreTrainedConfig:
    """The configuration of the `--model_type` model that `pretrain` builds: the vocabulary and the loss, the options
    its record names (`ModelType.pretraining_fields`), the text model `item_encoder` of a text item representation,
    then `--config_overrides`, checked once more after them."""
    record = choose(MODEL_TYPES, args.model_type, "model type")
    config = config_class(record)(
        vocab_size=vocab_size,
        pretraining_loss=args.pretraining_loss,
        num_sampled=min(args.num_sampled, vocab_size),
        **{name: getattr(args, name) for name in record.pretraining_fields},
        **(item_encoder_fields(item_encoder) if item_encoder is not None else {}),
    )
    if args.config_overrides:
        config.update_from_string(args.config_overrides)
        config.check_fields()
    return config


def run_item_texts(args: DataArguments) -> dict[str, str]:
    """The item texts of a run with items from their text: `--item_texts`, else the MovieLens release's (title,
    year and genres)."""
    if args.item_texts is not None:
        return read_item_texts(args.item_texts)
    if args.data_dir is not None or getattr(args, "train_files", None):
        raise ValueError(
            "Items from their text need the items' texts: pass --item_texts, a JSON object item id -> text."
        )
    return movielens_item_texts(args.dataset, args.cache_dir)


def target_item_texts(args: FinetuneArguments, target_names: list[str]) -> list[str]:
    """The text of each ColdRec target item, in target order, for a ranking head over items from their text."""
    texts = run_item_texts(args)
    missing = [name for name in target_names if name not in texts]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(target_names)} target items have no text, e.g. {missing[:5]}; every target "
            "item needs one."
        )
    return [texts[name] for name in target_names]


def pretraining_item_encoder(
    args: PretrainArguments, training_args: TrainingArguments, item_texts: dict[str, str]
) -> str:
    """`--item_encoder`, or the folder of a small text encoder (no pretrained text model can be downloaded offline;
    `small_text_encoder`) whose vocabulary covers every item text of the catalogue, the target domain's included,
    written once by the main process. Item texts are item metadata, not interactions or labels
    (`small_text_encoder` says why this leaks nothing)."""
    if args.item_encoder is not None:
        return args.item_encoder
    folder = Path(training_args.output_dir) / "small_text_encoder"
    with training_args.main_process_first(desc="small text encoder"):
        if not (folder / "config.json").is_file():
            build_small_text_encoder(item_texts.values(), folder, seed=training_args.seed)
            logger.info(f"Built a small text encoder over {len(item_texts):,} item texts in {folder}")
    return str(folder)


def _without_loss(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if key != "loss"}


def pretrain(
    args: PretrainArguments,
    training_args: TrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, Any]:
    """Pretrains a backbone (Section 3.2) and saves the backbone folder; returns the summary in `metrics.json`.

    Resumes from `training_args.resume_from_checkpoint` (a checkpoint folder, or `last` for the newest complete
    one in `output_dir`).
    """
    is_causal = args.is_causal
    if args.train_files:
        streamed = streamed_pretraining_data(args, training_args)
        tokenizer, train, validation, test = (
            streamed.tokenizer,
            streamed.train,
            streamed.validation,
            streamed.test,
        )
        training_args, num_windows = streamed.training_args, sum(streamed.counts.windows)
        dataset = " ".join(args.train_files)
    else:
        tokenizer, train, validation, test = in_memory_pretraining_data(args)
        num_windows, dataset = len(train), dataset_name(args, args.task)
    item_encoder = item_texts = None
    if ITEM_REPRESENTATIONS[args.item_representation].text:
        item_texts = run_item_texts(args)
        item_encoder = pretraining_item_encoder(args, training_args, item_texts)
    config = pretraining_config(args, len(tokenizer), item_encoder)
    set_seed(training_args.seed)
    model = pretraining_model_class(config)(config)
    if item_encoder is not None:
        model.load_item_encoder(item_encoder, tokenizer, item_texts)
    logger.info(
        f"Pretraining a {args.objective} {args.model_type} backbone ({model.num_parameters():,} parameters, "
        f"{len(tokenizer):,} tokens) on {num_windows:,} windows of at most {args.pretraining_window} items"
    )
    eval_collator = NextItemCollator(tokenizer, args.max_length)
    train_collator = (
        eval_collator
        if is_causal
        else MaskedItemCollator(
            tokenizer,
            args.max_length,
            mask_probability=args.mask_probability,
            last_item_rows=args.last_item_rows,
        )
    )
    metric = TASK_KINDS["pretraining"].selection_metric
    trainer = pipeline_trainer(
        PretrainingTrainer,
        training_args,
        metric,
        callbacks,
        model=model,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        compute_metrics=compute_pretraining_metrics,
    )
    train_output, log_history, results = train_and_test(trainer, test, training_args)
    summary = {
        "model_type": args.model_type,
        "objective": args.objective,
        "dataset": dataset,
        "num_parameters": model.num_parameters(),
        "vocab_size": len(tokenizer),
        "train_windows": num_windows,
        **results,
        "config": {
            "model_type": config.model_type,
            **{name: getattr(args, name) for name in MODEL_TYPES[args.model_type].pretraining_fields},
            **({"item_encoder": item_encoder} if item_encoder is not None else {}),
            "max_length": args.max_length,
            "window_length": args.pretraining_window,
            "overrides": args.config_overrides,
        },
    }
    save_dir = Path(args.save_dir or Path(training_args.output_dir) / "backbone")
    if trainer.is_world_process_zero():
        save_backbone(
            trainer.model,
            tokenizer,
            save_dir,
            metrics=_without_loss(results["test"]),
            dataset=summary["dataset"],
            training_summary=(
                f"{args.objective} objective, {train_output.global_step} steps of "
                f"{training_args.per_device_train_batch_size * training_args.world_size} windows of at most "
                f"{args.pretraining_window} items, learning rate {training_args.learning_rate}."
            ),
        )
    summary["backbone"] = str(save_dir)
    if trainer.is_world_process_zero():
        summary["hub_repo_id"] = push_finished_folder(training_args, save_dir)
    return finish_run(trainer, summary, metric, log_history)


def finetune(
    args: FinetuneArguments,
    training_args: TrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, Any]:
    """Fine-tunes a backbone for one task with one method (Section 3.3) and saves the patch folder; returns the
    summary in `metrics.json` (validation and test metrics, trainable and total parameters, patch size)."""
    splits = load_splits(args)
    backbone, tokenizer = load_backbone(args.backbone)
    unknown = check_unknown_items(tokenizer, splits, args)
    kind, train, validation, test = task_datasets(
        splits, tokenizer, args.num_eval_negatives, training_args.seed
    )
    head = head_arguments(splits, kind, args)
    if kind == "ranking" and uses_item_text(backbone.config):  # target items ranked by their text
        head["target_texts"] = target_item_texts(args, head["target_names"])
    model, report = prepare_for_transfer(
        backbone,
        method=args.method,
        task=args.task,
        head=kind,
        insertion=args.insertion,
        bottleneck_size=args.bottleneck_size,
        train_layer_norms=args.train_layer_norms,
        patch_type=args.patch_type,
        patch_target=args.patch_target,
        item_patch_type=args.item_patch_type,
        item_patch_settings=json.loads(args.item_patch_settings) if args.item_patch_settings else None,
        places=args.places,
        blocks=args.blocks,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        phm_dim=args.phm_dim,
        phm_rank=args.phm_rank,
        prompt_length=args.prompt_length,
        train_tcl_embedding=args.train_tcl_embedding,
        readout=args.readout,
        head_terms=args.head_terms,
        seed=training_args.seed,
        **head,
    )
    logger.info(str(report))
    model.patch_config.max_length = args.max_length
    train_collator, eval_collator = task_collators(tokenizer, model, args.max_length, kind)
    metric = TASK_KINDS[kind].selection_metric
    trainer = pipeline_trainer(
        PeterRecTrainer,
        training_args,
        metric,
        callbacks,
        model=model,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(kind, RANKING_CUTOFFS),
    )
    _, log_history, results = train_and_test(trainer, test, training_args)
    full_metrics = None
    if kind == "ranking":
        results["test"].update(cold_target_test_metrics(trainer, test))
        full_metrics = full_ranking_test_metrics(trainer, test)
    summary = {
        "task": args.task,
        "task_kind": kind,
        "method": args.method,
        "patch_type": model.patch_config.patch_type if METHODS[args.method].adds_patches else None,
        "patch_target": model.patch_config.patch_target,
        "item_patch_type": model.patch_config.item_patch_type,
        "dataset": dataset_name(args, args.task),
        "backbone": args.backbone,
        "trainable_parameters": report.trainable_parameters,
        "total_parameters": report.total_parameters,
        "train_examples": len(train),
        "unknown_item_share": unknown.share,
        **results,
    }
    if full_metrics is not None:
        summary["test_full_ranking"] = full_metrics
    save_dir = Path(args.save_dir or Path(training_args.output_dir) / "patch")
    trainer.model.patch_config.evaluation_seed = training_args.seed
    if trainer.is_world_process_zero():
        save_patch(
            trainer.model,
            save_dir,
            metrics=_without_loss(results["test"]),
            full_ranking_metrics=full_metrics,
            dataset=summary["dataset"],
        )
        summary["patch_size_bytes"] = (save_dir / PATCH_WEIGHTS_NAME).stat().st_size
        summary["hub_repo_id"] = push_finished_folder(training_args, save_dir, args.base_model_id)
    summary["patch"] = str(save_dir)
    return finish_run(trainer, summary, metric, log_history)


def evaluation_length(args: EvaluateArguments, model, tokenizer: ItemTokenizer) -> int:
    """The longest input `evaluate` reads: `--max_length`, else the task's own (`inference.task_max_length`)."""
    return args.max_length or task_max_length(model, tokenizer) or DEFAULT_MAX_LENGTH


def _evaluate_backbone(args: EvaluateArguments, training_args: TrainingArguments, backbone, tokenizer):
    """(trainer, evaluated rows, summary head) for the held-out last item of each history."""
    splits = load_splits(args, args.task or "pretrain")
    evaluated = dict(zip(("validation", "test"), held_out_datasets(splits, tokenizer), strict=True))[
        args.split
    ]
    trainer = PretrainingTrainer(
        model=backbone,
        args=training_args,
        data_collator=NextItemCollator(tokenizer, evaluation_length(args, backbone, tokenizer)),
        processing_class=tokenizer,
        compute_metrics=compute_pretraining_metrics,
    )
    return trainer, evaluated, {"backbone": args.backbone}


def _evaluate_patch(args: EvaluateArguments, training_args: TrainingArguments, backbone, tokenizer):
    """(trainer, evaluated rows, summary head) for the task of the patch folder `args.patch`."""
    model = load_patch(args.patch, backbone)
    spec = model.patch_config
    splits = load_splits(args, args.task or spec.task)
    if spec.head == "classification":
        splits = align_labels(splits, spec.label_names)
    seed = next(s for s in (args.evaluation_seed, spec.evaluation_seed, training_args.seed) if s is not None)
    kind, _, validation, test = task_datasets(splits, tokenizer, args.num_eval_negatives, seed)
    evaluated = {"validation": validation, "test": test}[args.split]
    length = evaluation_length(args, model, tokenizer)
    _, eval_collator = task_collators(tokenizer, model, length, kind)
    trainer = PeterRecTrainer(
        model=model,
        args=training_args,
        data_collator=eval_collator,
        eval_data_collator=eval_collator,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(kind, RANKING_CUTOFFS),
    )
    head = {
        "backbone": args.backbone,
        "patch": args.patch,
        "task": spec.task,
        "method": spec.method,
        "evaluation_seed": seed,
        "max_length": length,
        "unknown_item_share": check_unknown_items(tokenizer, splits, args).share,
    }
    return trainer, evaluated, head


def evaluate(args: EvaluateArguments, training_args: TrainingArguments) -> dict[str, Any]:
    """Test metrics of a backbone (held-out last item over the whole item pool) or of a backbone with a patch
    (the task's metrics; for ranking also the full ranking, and both on the rows whose target item is cold).
    Writes `metrics.json` into `output_dir`."""
    backbone, tokenizer = load_backbone(args.backbone)
    training_args = replace(training_args, load_best_model_at_end=False, eval_strategy="no")
    run = _evaluate_backbone if args.patch is None else _evaluate_patch
    trainer, evaluated, summary = run(args, training_args, backbone, tokenizer)
    metrics = strip_prefix(trainer.evaluate(evaluated, metric_key_prefix=args.split), args.split)
    summary.update(split=args.split, metrics=metrics)
    if isinstance(trainer.model, ItemRankingHead):
        metrics.update(cold_target_test_metrics(trainer, evaluated))
        summary["full_ranking"] = full_ranking_test_metrics(trainer, evaluated)
    if trainer.is_world_process_zero():
        write_json(Path(training_args.output_dir) / METRICS_FILE, summary)
    return summary


__all__ = ["evaluate", "finetune", "pretrain", "pretraining_config", "train_and_test"]
