"""Transforms of built data sets: one row per ColdRec target, labels aligned to a class order, tokenized items
and sliding windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .schemas import checked_label_names

HISTORY_COLUMN = "history"
"""The column `one_row_per_target` adds: the index of the row (the user's history) each target row came from."""


def one_row_per_target(dataset):
    """Expand ColdRec rows into one row per target item, with a `target` column (the item's `ClassLabel` index),
    as `ItemRankingCollator` expects (the original code also builds one example per target), and a
    `HISTORY_COLUMN` naming the row it came from, by which `HistoryGroupedSampler` batches a user's rows together."""
    from datasets import Value

    def expand(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        columns = [name for name in batch if name != "targets"]
        expanded: dict[str, list] = {name: [] for name in [*columns, "target", HISTORY_COLUMN]}
        for row, targets in enumerate(batch["targets"]):
            for target in targets:
                for name in columns:
                    expanded[name].append(batch[name][row])
                expanded["target"].append(target)
                expanded[HISTORY_COLUMN].append(indices[row])
        return expanded

    features = dataset.features.copy()
    features["target"] = features.pop("targets").feature
    features[HISTORY_COLUMN] = Value("int64")
    return dataset.map(expand, batched=True, with_indices=True, remove_columns=["targets"], features=features)


def align_labels(dataset, label_names: Sequence[str], column: str = "label"):
    """`dataset` (a `Dataset` or `DatasetDict`) with its `column` mapped by name onto `label_names`, the fixed class
    order of a classification head (for instance a patch's `label_names`), as a `ClassLabel(names=label_names)`.

    A `ClassLabel` column is matched by its names, so the same classes in another order map correctly; a string
    column by its values; an integer column is taken as ids into `label_names`. A name outside `label_names`, an
    id out of range, a missing label or another column type raises a `ValueError`.
    """
    from datasets import ClassLabel, DatasetDict

    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {split: align_labels(part, label_names, column) for split, part in dataset.items()}
        )
    names = checked_label_names(label_names)
    if column not in dataset.column_names:
        raise ValueError(f"The data set has no column {column!r}; its columns are {dataset.column_names}.")
    feature = dataset.features[column]
    dtype = str(getattr(feature, "dtype", ""))
    values = list(dataset[column])
    index = {name: position for position, name in enumerate(names)}
    if isinstance(feature, ClassLabel):
        unknown = [name for name in feature.names if name not in index]
        if unknown:
            raise ValueError(
                f"Label(s) {unknown} of column {column!r} are not in label_names {names}; the data set's classes "
                f"{feature.names} must all be among them."
            )
        # datasets stores a missing ClassLabel as -1, which must not wrap around to the last name.
        aligned = [
            index[feature.names[value]] if value is not None and 0 <= value < feature.num_classes else None
            for value in values
        ]
    elif dtype in ("string", "large_string"):
        unknown = sorted({value for value in values if value is not None and value not in index})
        if unknown:
            raise ValueError(f"Label(s) {unknown[:10]} of column {column!r} are not in label_names {names}.")
        aligned = [None if value is None else index[value] for value in values]
    elif dtype.startswith(("int", "uint")):
        aligned = values
        out_of_range = sorted(
            {value for value in aligned if value is not None and not 0 <= value < len(names)}
        )
        if out_of_range:
            raise ValueError(
                f"Label id(s) {out_of_range[:10]} of column {column!r} are not in [0, {len(names)}), the ids of "
                f"label_names {names}."
            )
    else:
        raise ValueError(
            f"Column {column!r} has type {feature}; give class names (a `ClassLabel` or string column) or ids "
            "(an integer column)."
        )
    missing = sum(value is None for value in aligned)
    if missing:
        raise ValueError(f"{missing} row(s) have no label in column {column!r}; drop or label them.")
    features = dataset.features.copy()
    features[column] = ClassLabel(names=names)

    def relabel(batch: dict[str, list], indices: list[int]) -> dict[str, Any]:
        return {column: [aligned[position] for position in indices]}

    return dataset.map(relabel, batched=True, with_indices=True, features=features)


def tokenize_dataset(dataset, tokenizer, column: str = "items"):
    """Add `input_ids` (the item ids of `column`, no special tokens, no padding) to a `Dataset` or `DatasetDict`."""
    return dataset.map(
        lambda batch: {"input_ids": [tokenizer.encode_items(items) for items in batch[column]]}, batched=True
    )


MIN_WINDOW_LENGTH = 2
"""Shortest pretraining window: one item has no next item to predict."""


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start positions of the `sliding_windows` of a `length`-long sequence (so windows can be counted without
    being cut)."""
    if not 1 <= stride <= window:
        raise ValueError(f"Need 1 <= stride <= window, got stride={stride}, window={window}.")
    if length == 0:
        raise ValueError("Cannot cut windows out of an empty sequence.")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def sliding_windows(ids: Sequence, window: int, stride: int) -> list[list]:
    """Every `window`-long slice of `ids`, starting at 0, `stride`, `2 stride`, ..., plus one ending at the last
    item when the stride skips past it, so the whole history is covered (a history no longer than `window` is one
    slice). With `stride < window` consecutive windows overlap, so every item but the first is a next-item target
    in some window.
    """
    return [list(ids[start : start + window]) for start in window_starts(len(ids), window, stride)]


def default_stride(window: int) -> int:
    """The pretraining windows' default stride: half a window, so consecutive windows overlap by half."""
    return max(window // 2, 1)


def expand_windows(dataset, window: int, stride: int | None = None, column: str = "items"):
    """One row per `sliding_windows` slice of `column` (default stride `window // 2`), other columns repeated:
    pretraining on every part of a long history, not only its most recent `window` items."""
    stride = stride or default_stride(window)

    def expand(batch: dict[str, list]) -> dict[str, list]:
        expanded: dict[str, list] = {name: [] for name in batch}
        for row, ids in enumerate(batch[column]):
            for piece in sliding_windows(ids, window, stride):
                for name in batch:
                    expanded[name].append(piece if name == column else batch[name][row])
        return expanded

    return dataset.map(expand, batched=True)


__all__ = [
    "HISTORY_COLUMN",
    "MIN_WINDOW_LENGTH",
    "align_labels",
    "default_stride",
    "expand_windows",
    "one_row_per_target",
    "sliding_windows",
    "tokenize_dataset",
    "window_starts",
]
