"""Cross-validation folds inside the training users: the one place the reproduction splits them.

The validation split of an ML-1M profile task holds 3% of the users (181), so an accuracy read on it has a standard
error of about 0.033, the size of the differences being chosen between; k folds of the 4,228 training users give
every candidate 4,228 held-out users (standard error about 0.007, see docs/reproduction.md). The folds are built
from the training split alone, so a run on a fold never reads a test user. Both the models' selection
(`selection.py`) and the classical baselines' regularisation (`baselines.py`) use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fold_indices(
    num_rows: int, k: int, seed: int, labels: Sequence[int] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`k` (fitted, held-out) index pairs over `num_rows` rows; every row is held out in exactly one fold.

    With `labels`, each class is shuffled and dealt round-robin over the folds (the deal starting where the previous
    class stopped), so every fold holds each class's share to within one row; without, the rows are shuffled and cut
    into `k` near-equal parts."""
    if not 2 <= k <= num_rows:
        raise ValueError(f"k must be in [2, {num_rows}] for {num_rows} rows, got {k}.")
    rng = np.random.default_rng(seed)
    assignment = np.empty(num_rows, dtype=np.int64)
    if labels is None:
        assignment[rng.permutation(num_rows)] = np.arange(num_rows) % k
    else:
        labels, start = np.asarray(labels), 0
        if len(labels) != num_rows:
            raise ValueError(f"{len(labels)} labels for {num_rows} rows.")
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            assignment[members] = (start + np.arange(len(members))) % k
            start = (start + len(members)) % k
    rows = np.arange(num_rows)
    return [(rows[assignment != fold], rows[assignment == fold]) for fold in range(k)]


def user_folds(splits, k: int, seed: int) -> list:
    """`k` variants of a task's `DatasetDict`, split from its `train` users: each fold's `train` holds the other
    folds' users and its `test` the fold's own; its `validation` is the task's, which chooses the best checkpoint
    as in the final run. A fold that chose its checkpoint on its own held-out users would score the best of up to
    `evaluations_per_run` readings of them, a maximum of noisy measures rather than one unbiased one.

    Rows are grouped by `user_id` (a user is never on both sides), and stratified by label for classification
    tasks (a `label` column); ColdRec users are shuffled alone."""
    from datasets import DatasetDict

    train = splits["train"]
    users = list(dict.fromkeys(train["user_id"]))
    labels = None
    if "label" in train.column_names:
        label_of = dict(zip(train["user_id"], train["label"], strict=True))
        labels = [label_of[user] for user in users]
    position = {user: index for index, user in enumerate(users)}
    user_of_row = np.array([position[user] for user in train["user_id"]])
    variants = []
    for fitted, held_out in fold_indices(len(users), k, seed, labels):
        fitted_rows = np.flatnonzero(np.isin(user_of_row, fitted))
        held_out_rows = train.select(np.flatnonzero(np.isin(user_of_row, held_out)))
        variants.append(
            DatasetDict(
                {
                    "train": train.select(fitted_rows),
                    "validation": splits["validation"],
                    "test": held_out_rows,
                }
            )
        )
    return variants


__all__ = ["fold_indices", "user_folds"]
