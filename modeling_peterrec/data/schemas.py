"""Row schemas of each kind of `DatasetDict` and the seeded 70% / 3% / 27% split by user (Section 4.1).

Row schemas (all ids are strings; sequences are chronological, oldest first):

- pretraining: `user_id`, `items`; leave-one-out splits: `train` is the history minus its last two items,
  `validation` the history minus its last item, `test` the full history (the last element of a `validation` or
  `test` row is the item to predict).
- classification: `user_id`, `items`, `label` (`ClassLabel`); splits 70% / 3% / 27% by user, seeded, stratified.
- ColdRec: `user_id`, `items` (source-domain history), `targets` (list of `ClassLabel` over the target items);
  splits 70% / 3% / 27% by user, seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers.utils import logging

logger = logging.get_logger(__name__)

SPLIT_FRACTIONS = {"train": 0.70, "validation": 0.03, "test": 0.27}
"""Share of users per split of a target task (Section 4.1 of the paper)."""


def split_by_user(
    num_users: int, seed: int = 0, labels: Sequence[int] | np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Split user indices 70% / 3% / 27% into train / validation / test (sorted index arrays), deterministically.

    Split sizes are `round(0.70 n)`, `round(0.03 n)` and the rest. With `labels`, the split is stratified: each
    class's users are shuffled and spread evenly over [0, 1), and all users are taken in that order, so every
    class lands in each split in proportion (within one user of the exact share).
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(num_users)
    else:
        labels = np.asarray(labels)
        if len(labels) != num_users:
            raise ValueError(f"Got {len(labels)} labels for {num_users} users; give one label per user.")
        keys = np.empty(num_users)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            keys[members] = (rng.permutation(len(members)) + rng.random(len(members))) / len(members)
        order = np.argsort(keys, kind="stable")
    num_train = round(SPLIT_FRACTIONS["train"] * num_users)
    num_validation = round(SPLIT_FRACTIONS["validation"] * num_users)
    cuts = np.split(order, [num_train, num_train + num_validation])
    return {split: np.sort(indices) for split, indices in zip(SPLIT_FRACTIONS, cuts, strict=True)}


def fixed_splits(split_names: Sequence[str]) -> dict[str, np.ndarray]:
    """User indices per split from each user's own split name (a user's fixed split, e.g. a `split` column), in the
    `split_by_user` format; a split no user names is empty. Names outside `SPLIT_FRACTIONS` raise a `ValueError`."""
    unknown = sorted(set(split_names) - set(SPLIT_FRACTIONS))
    if unknown:
        raise ValueError(f"Split names {unknown} are not among {list(SPLIT_FRACTIONS)}.")
    names = np.asarray(split_names, dtype=object)
    return {split: np.flatnonzero(names == split) for split in SPLIT_FRACTIONS}


def _string_features(**extra: Any):
    from datasets import Features, Value
    from datasets import Sequence as SequenceFeature

    return Features({"user_id": Value("string"), "items": SequenceFeature(Value("string")), **extra})


def _split_dataset(columns: dict[str, list], features, splits: dict[str, np.ndarray]):
    from datasets import Dataset, DatasetDict

    return DatasetDict(
        {
            split: Dataset.from_dict(
                {name: [values[index] for index in indices] for name, values in columns.items()},
                features=features,
            )
            for split, indices in splits.items()
        }
    )


MIN_HELD_OUT_LENGTH = 3
"""Shortest history that spares its last two items for validation and test (leave-one-out)."""


def leave_one_out(history: list) -> dict[str, list]:
    """One history's pretraining rows per split: `train` is the history minus its last two items, `validation` minus
    its last item, `test` the whole history; a history shorter than `MIN_HELD_OUT_LENGTH` is `train` only."""
    if len(history) < MIN_HELD_OUT_LENGTH:
        return {"train": history}
    return {"train": history[:-2], "validation": history[:-1], "test": history}


def pretraining_dataset(
    user_ids: Sequence[str], histories: Sequence[Sequence[str]], split_names: Sequence[str] | None = None
):
    """Leave-one-out pretraining splits (see the module docstring) of chronological histories.

    A user with fewer than three items cannot spare two held-out items: the whole history goes to `train` only.
    With `split_names` (each user's fixed split) each user's whole history goes to their own split instead (the
    last item of a `validation` or `test` row is still the one to predict).
    """
    from datasets import Dataset, DatasetDict

    features = _string_features()
    if split_names is not None:
        columns = {"user_id": list(user_ids), "items": [list(history) for history in histories]}
        return _split_dataset(columns, features, fixed_splits(split_names))
    rows: dict[str, dict[str, list]] = {split: {"user_id": [], "items": []} for split in SPLIT_FRACTIONS}
    short = 0
    for user, history in zip(user_ids, histories, strict=True):
        held_out = leave_one_out(list(history))
        short += len(held_out) == 1
        for split, items in held_out.items():
            rows[split]["user_id"].append(user)
            rows[split]["items"].append(items)
    if short:
        logger.warning(f"{short} user(s) have fewer than 3 items: their whole history is in `train` only.")
    return DatasetDict(
        {split: Dataset.from_dict(columns, features=features) for split, columns in rows.items()}
    )


def checked_label_names(label_names: Sequence[str]) -> list[str]:
    """`label_names` as a list, checked to be a non-empty sequence of distinct strings (a `ClassLabel`'s names)."""
    if isinstance(label_names, str):
        raise ValueError(f"label_names must be a sequence of class names, got the string {label_names!r}.")
    names = list(label_names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if not names or duplicates or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"label_names must be distinct strings, at least one, got {names}"
            + (f" (repeated: {duplicates})" if duplicates else "")
            + "."
        )
    return names


def classification_dataset(
    user_ids: Sequence[str],
    histories: Sequence[Sequence[str]],
    labels: Sequence[int],
    names: Sequence[str],
    seed: int = 0,
    split_names: Sequence[str] | None = None,
):
    """User-profile classification rows (`label` indexes `names`), split 70/3/27 by user, stratified by label, or
    by each user's fixed split in `split_names`."""
    from datasets import ClassLabel

    features = _string_features(label=ClassLabel(names=list(names)))
    columns = {
        "user_id": list(user_ids),
        "items": [list(history) for history in histories],
        "label": list(labels),
    }
    splits = (
        fixed_splits(split_names) if split_names is not None else split_by_user(len(user_ids), seed, labels)
    )
    return _split_dataset(columns, features, splits)


def coldrec_dataset(
    user_ids: Sequence[str],
    histories: Sequence[Sequence[str]],
    targets: Sequence[Sequence[str]],
    seed: int = 0,
):
    """Cold-start recommendation rows: source history and target items (named by `ClassLabel`), split 70/3/27."""
    from datasets import ClassLabel
    from datasets import Sequence as SequenceFeature

    names = sorted({item for items in targets for item in items})
    index = {name: position for position, name in enumerate(names)}
    features = _string_features(targets=SequenceFeature(ClassLabel(names=names)))
    columns = {
        "user_id": list(user_ids),
        "items": [list(history) for history in histories],
        "targets": [[index[item] for item in items] for items in targets],
    }
    return _split_dataset(columns, features, split_by_user(len(columns["user_id"]), seed))


__all__ = [
    "SPLIT_FRACTIONS",
    "checked_label_names",
    "classification_dataset",
    "coldrec_dataset",
    "fixed_splits",
    "leave_one_out",
    "pretraining_dataset",
    "split_by_user",
]
