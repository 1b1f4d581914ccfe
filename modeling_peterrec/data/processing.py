"""Transforms of built data sets: one row per ColdRec target, tokenized items and sliding windows."""

from __future__ import annotations

from collections.abc import Sequence


def one_row_per_target(dataset):
    """Expand ColdRec rows into one row per target item, with a `target` column (the item's `ClassLabel` index),
    as `ItemRankingCollator` expects (the original code also builds one example per target)."""

    def expand(batch: dict[str, list]) -> dict[str, list]:
        columns = [name for name in batch if name != "targets"]
        expanded: dict[str, list] = {name: [] for name in [*columns, "target"]}
        for row, targets in enumerate(batch["targets"]):
            for target in targets:
                for name in columns:
                    expanded[name].append(batch[name][row])
                expanded["target"].append(target)
        return expanded

    features = dataset.features.copy()
    features["target"] = features.pop("targets").feature
    return dataset.map(expand, batched=True, remove_columns=["targets"], features=features)


def tokenize_dataset(dataset, tokenizer, column: str = "items"):
    """Add `input_ids` (the item ids of `column`, no special tokens, no padding) to a `Dataset` or `DatasetDict`."""
    return dataset.map(
        lambda batch: {"input_ids": [tokenizer.encode_items(items) for items in batch[column]]}, batched=True
    )


def sliding_windows(ids: Sequence, window: int, stride: int) -> list[list]:
    """Every `window`-long slice of `ids`, starting at 0, `stride`, `2 stride`, ..., plus one ending at the last
    item when the stride skips past it, so the whole history is covered (a history no longer than `window` is one
    slice). With `stride < window` consecutive windows overlap, so every item but the first is a next-item target
    in some window.
    """
    if not 1 <= stride <= window:
        raise ValueError(f"Need 1 <= stride <= window, got stride={stride}, window={window}.")
    if len(ids) == 0:
        raise ValueError("Cannot cut windows out of an empty sequence.")
    if len(ids) <= window:
        return [list(ids)]
    starts = list(range(0, len(ids) - window + 1, stride))
    if starts[-1] + window < len(ids):
        starts.append(len(ids) - window)
    return [list(ids[start : start + window]) for start in starts]


def expand_windows(dataset, window: int, stride: int | None = None, column: str = "items"):
    """One row per `sliding_windows` slice of `column` (default stride `window // 2`), other columns repeated:
    pretraining on every part of a long history, not only its most recent `window` items."""
    stride = stride or max(window // 2, 1)

    def expand(batch: dict[str, list]) -> dict[str, list]:
        expanded: dict[str, list] = {name: [] for name in batch}
        for row, ids in enumerate(batch[column]):
            for piece in sliding_windows(ids, window, stride):
                for name in batch:
                    expanded[name].append(piece if name == column else batch[name][row])
        return expanded

    return dataset.map(expand, batched=True)


__all__ = [
    "expand_windows",
    "one_row_per_target",
    "sliding_windows",
    "tokenize_dataset",
]
