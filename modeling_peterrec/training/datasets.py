"""Shaping a task's splits into the rows and batches its model reads: pretraining windows and held-out histories
(Section 3.2), classification rows, and cold-start ranking rows with their fixed evaluation candidates
(Section 4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import (
    HISTORY_COLUMN,
    MIN_WINDOW_LENGTH,
    ItemRankingCollator,
    SequenceClassificationCollator,
    align_labels,
    expand_windows,
    load_task,
    one_row_per_target,
    tokenize_dataset,
)
from ..metrics import build_ranking_candidates, cold_item_rows
from ..modeling_peterrec import PeterRecPreTrainedModel
from ..registry import TASK_KINDS, tcl_position
from ..tokenization_peterrec import ItemTokenizer
from .arguments import DataArguments, FinetuneArguments, PretrainArguments

SPLITS = ("train", "validation", "test")


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
    missing = [split for split in SPLITS if split not in splits]
    if missing:
        raise ValueError(f"The data has no {missing} split(s); it needs train, validation and test splits.")
    return with_class_labels(splits)


def with_class_labels(splits):
    """`splits` with a `ClassLabel` label column, whatever the user saved: a plain string column gets its sorted
    names, a plain integer column the names "0" to "n-1" (`data.align_labels`), so heads and patches always know
    their classes by name."""
    from datasets import ClassLabel

    if "label" not in splits["train"].column_names or isinstance(
        splits["train"].features["label"], ClassLabel
    ):
        return splits
    values = {value for split in splits.values() for value in split["label"] if value is not None}
    if all(isinstance(value, str) for value in values):
        names = sorted(values)
    else:
        names = [str(label) for label in range(max(values) + 1)]
    return align_labels(splits, names)


def dataset_name(args: DataArguments, task: str) -> str:
    """How metrics files and cards name the data: the `--data_dir` folder, or `release/task`."""
    return args.data_dir if args.data_dir is not None else f"{args.dataset}/{task}"


def task_kind(dataset) -> str:
    """The `TASK_KINDS` name of a task's rows, read from the column that marks each kind (`TaskKind.column`);
    rows with none of them are pretraining histories."""
    for kind in TASK_KINDS.values():
        if kind.column is not None and kind.column in dataset.column_names:
            return kind.name
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
    return windows.filter(lambda row: len(row["input_ids"]) >= MIN_WINDOW_LENGTH)


def in_memory_pretraining_data(args: PretrainArguments):
    """(tokenizer, train windows, validation, test) of a pretraining task held in memory (`--task`/`--data_dir`):
    the vocabulary of the training split (`--min_count`, `--max_items`), its `pretraining_windows` and the
    held-out rows."""
    splits = load_splits(args)
    if task_kind(splits["train"]) != "pretraining":
        raise ValueError(
            f"Task {args.task!r} holds labelled rows; pretrain on a pretraining task (pretrain, pretrain_source) "
            "or on the output of data.load_interactions."
        )
    tokenizer = ItemTokenizer.from_sequences(
        splits["train"]["items"],
        min_count=args.min_count,
        max_items=args.max_items,
        tcl_position=tcl_position(args.objective == "causal"),
        model_max_length=args.max_length,
    )
    train = pretraining_windows(splits["train"], tokenizer, args.pretraining_window, args.window_stride)
    return (tokenizer, train, *held_out_datasets(splits, tokenizer))


def classification_datasets(splits, tokenizer: ItemTokenizer):
    """(train, validation, test) rows with `input_ids` and `label`."""
    return tuple(
        _keep_columns(tokenize_dataset(splits[name], tokenizer), ["input_ids", "label"]) for name in SPLITS
    )


def _check_negatives_available(splits, num_items: int, num_eval_negatives: int) -> None:
    """Every evaluated user needs `num_eval_negatives` target items outside their own targets to sample from."""
    fewest = min(
        (
            num_items - len(set(targets))
            for name in ("validation", "test")
            for targets in splits[name]["targets"]
        ),
        default=num_items,
    )
    if num_eval_negatives > fewest:
        raise ValueError(
            f"--num_eval_negatives {num_eval_negatives} is more than the {fewest} target items some evaluated "
            f"users have left to sample from (the task has {num_items} target items); lower --num_eval_negatives."
        )


def ranking_datasets(splits, tokenizer: ItemTokenizer, num_eval_negatives: int, seed: int):
    """(train, validation, test) rows with one row per target item (`target`), as in the original code.

    Evaluation rows also get `positives` (all of the user's targets, which never serve as negatives),
    `candidate_ids`: the true item in column 0 and `num_eval_negatives` uniformly sampled negatives after it, drawn
    once with a fixed seed (the paper's protocol, Section 4.1), and `cold_target`: whether the true item is a cold
    item, one that occurs in no training pair (`metrics.cold_item_rows`).
    """
    num_items = len(splits["train"].features["targets"].feature.names)
    _check_negatives_available(splits, num_items, num_eval_negatives)
    training_targets = {target for targets in splits["train"]["targets"] for target in targets}
    rows = {}
    for name in SPLITS:
        dataset = tokenize_dataset(splits[name], tokenizer)
        dataset = dataset.add_column("positives", [list(targets) for targets in dataset["targets"]])
        dataset = _keep_columns(
            one_row_per_target(dataset), ["input_ids", "target", "positives", HISTORY_COLUMN]
        )
        if name != "train":
            candidates = build_ranking_candidates(
                dataset["target"],
                num_items,
                num_eval_negatives,
                exclude=[set(positives) for positives in dataset["positives"]],
                seed=seed,
            )
            dataset = dataset.add_column("candidate_ids", candidates.tolist())
            dataset = dataset.add_column(
                "cold_target", cold_item_rows(dataset["target"], training_targets).tolist()
            )
        rows[name] = dataset
    return rows["train"], rows["validation"], rows["test"]


def task_datasets(splits, tokenizer: ItemTokenizer, num_eval_negatives: int, seed: int):
    """(kind, train, validation, test) of a fine-tuning task."""
    kind = task_kind(splits["train"])
    if kind == "classification":
        return (kind, *classification_datasets(splits, tokenizer))
    if kind == "ranking":
        return (kind, *ranking_datasets(splits, tokenizer, num_eval_negatives, seed))
    columns = " or ".join(f"`{kind.column}`" for kind in TASK_KINDS.values() if kind.column is not None)
    raise ValueError(f"This task has no {columns} column; fine-tune on a classification or ColdRec task.")


def head_arguments(splits, kind: str, args: FinetuneArguments) -> dict[str, Any]:
    """The task head's label or target names read from the training split's features (`prepare_for_transfer`),
    and for ranking the loss options of `args`."""
    features = splits["train"].features
    if kind == "classification":
        return {"label_names": features["label"].names}
    return {
        "num_target_items": len(features["targets"].feature.names),
        "target_names": features["targets"].feature.names,
        "ranking_loss": args.ranking_loss,
        "num_negatives": args.num_negatives,
    }


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


def task_collators(tokenizer: ItemTokenizer, model: PeterRecPreTrainedModel, max_length: int, kind: str):
    """(training collator, evaluation collator) of a fine-tuning task, with `[TCL]` where the backbone reads it
    (`tcl_position`, Figure 2)."""
    position = tcl_position(model.config.is_causal)
    if kind == "classification":
        collator = SequenceClassificationCollator(tokenizer, max_length, tcl_position=position)
        return collator, collator
    collator = ItemRankingCollator(
        tokenizer,
        max_length,
        tcl_position=position,
        num_target_items=model.config.num_target_items,
        num_negatives=model.config.num_negatives,
    )
    return collator, RankingEvaluationCollator(collator)


__all__ = [
    "RankingEvaluationCollator",
    "classification_datasets",
    "dataset_name",
    "head_arguments",
    "held_out_datasets",
    "in_memory_pretraining_data",
    "load_splits",
    "pretraining_windows",
    "ranking_datasets",
    "task_collators",
    "task_datasets",
    "task_kind",
]
