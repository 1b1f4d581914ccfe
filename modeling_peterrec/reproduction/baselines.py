"""Baselines without a neural network, on exactly the splits, rows and candidates the models get (RQ3, Tables 4, 5).

User profiles (accuracy): the majority class (the paper's LabelCS), and a logistic regression on the TF-IDF bag of a
user's items, over the items the model sees (the `max_length` most recent ones) or over all of them; its inverse
regularisation `C` is chosen by stratified cross-validation inside the training users, so validation and test users
are never fitted on, and the evaluated split is read once.

ColdRec (sampled HR/MRR@k on each row's fixed `candidate_ids`, and full-ranking HR/MRR/NDCG@k over every target
item): item popularity (the paper's rule), item-kNN (cosine similarity between source and target items from their
co-occurrence in training users) and EASE, a ridge regression from the source bag to the target items whose penalty is
chosen by cross-validation inside the training users. Every number comes from `modeling_peterrec.metrics`, also on
the rows whose target item is cold (`cold_<measure>`, `cold_rows`; the items of no training pair). None of them
learns anything for such an item: popularity, item-kNN and EASE all score it 0 (no training user has it, so its
count, its co-occurrence column and its ridge column are zero), and ties count against the true item
(`metrics.rank_of_positive`), so popularity and item-kNN (scores >= 0) rank a cold item below every candidate, and
EASE ranks it above only the candidates it scores below zero.

The logistic regression needs scikit-learn, the `baselines` extra (`pip install 'peterrec[baselines]'`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as transformers_logging

from ..metrics import (
    classification_metrics,
    cold_item_metrics,
    exclusion_mask,
    full_ranking_metrics,
    sampled_ranking_metrics,
)
from ..registry import TASK_KINDS, TaskKind
from .folds import fold_indices

logger = transformers_logging.get_logger(__name__)


@dataclass(frozen=True)
class Baseline:
    """A baseline: `name` keys its results, `title` names it in tables."""

    name: str
    title: str
    description: str


BASELINES: dict[str, Baseline] = {
    baseline.name: baseline
    for baseline in (
        Baseline("majority", "LabelCS", "the most frequent training label (Table 4)"),
        Baseline(
            "tfidf_lr_seen",
            "LR, TF-IDF of the seen items",
            "logistic regression on the TF-IDF bag of the items the model sees",
        ),
        Baseline(
            "tfidf_lr_all",
            "LR, TF-IDF of all items",
            "logistic regression on the TF-IDF bag of all the user's items",
        ),
        Baseline("popularity", "Popularity", "target items by their number of training users (Table 5)"),
        Baseline("item_knn", "Item-kNN", "summed cosine similarity to the user's source items"),
        Baseline("ease", "EASE", "ridge regression from the source bag to the target items"),
    )
}
"""The baselines, by name, in table order."""

RULE_BASELINES = {"classification": "majority", "ranking": "popularity"}
"""The paper's own rule baseline of each task kind (RQ3)."""

LOGISTIC_REGRESSION_CS = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths the logistic regression's cross-validation chooses from."""
EASE_L2_GRID = (10.0, 100.0, 1000.0)
"""Ridge penalties EASE's cross-validation chooses from."""
CV_FOLDS = 5


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The logistic-regression baselines need scikit-learn: install the `baselines` extra "
            "(pip install 'peterrec[baselines]')."
        ) from error
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV

    return TfidfVectorizer, LogisticRegressionCV


def task_kind_of(splits) -> TaskKind:
    """The kind of a task's `DatasetDict`, from the registry's marking column (`label`, `targets`)."""
    columns = splits["train"].column_names
    kinds = [kind for kind in TASK_KINDS.values() if kind.column is not None and kind.column in columns]
    if len(kinds) != 1:
        raise ValueError(
            f"Cannot tell the task kind of columns {columns}; expected one of `label`, `targets`."
        )
    return kinds[0]


def recent(histories: Sequence[Sequence[Any]], max_length: int | None) -> list[list[Any]]:
    """The `max_length` most recent items of each history (all of them for None), as the collators keep them."""
    return [list(items) if max_length is None else list(items)[-max_length:] for items in histories]


# User profiles -------------------------------------------------------------------------------------------------


def majority_label(labels: Sequence[int]) -> int:
    """The most frequent label (the smallest id among ties)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64)).argmax())


def _items_as_tokens(items: Sequence[Any]) -> list[Any]:
    return list(items)


def stratified_folds(
    labels: Sequence[int], seed: int, n_splits: int = CV_FOLDS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) index pairs over the training rows only, stratified by label (`folds.fold_indices`; fewer
    folds when a class is rarer than `n_splits`, so every fit sees every class)."""
    counts = np.bincount(np.asarray(labels))
    smallest = int(counts[counts > 0].min())
    return fold_indices(len(labels), max(2, min(n_splits, smallest)), seed, labels)


def tfidf_logistic_regression(
    train_histories: Sequence[Sequence[Any]],
    train_labels: Sequence[int],
    eval_histories: Sequence[Sequence[Any]],
    seed: int,
    cs: Sequence[float] = LOGISTIC_REGRESSION_CS,
) -> np.ndarray:
    """Predicted labels of `eval_histories` by a logistic regression on TF-IDF item bags, fitted on the training
    users only: the IDF, the `C` chosen by stratified cross-validation over them, and the final fit."""
    tfidf_vectorizer, logistic_regression_cv = _sklearn()
    vectorizer = tfidf_vectorizer(analyzer=_items_as_tokens)
    train = vectorizer.fit_transform(train_histories)
    model = logistic_regression_cv(
        Cs=list(cs), cv=stratified_folds(train_labels, seed), scoring="accuracy", max_iter=2000
    )
    with warnings.catch_warnings():
        # scikit-learn 1.8+ announces default changes that do not touch an L2 fit; older releases lack the options.
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(train, np.asarray(train_labels))
    logger.info(f"Logistic regression: C {float(np.ravel(model.C_)[0]):g} chosen by cross-validation")
    return model.predict(vectorizer.transform(eval_histories))


def classification_baselines(
    splits, max_length: int, seed: int = 0, split: str = "test"
) -> dict[str, dict[str, float]]:
    """`classification_metrics` of each user-profile baseline on `split` (fitted on `train` only)."""
    train, evaluated = splits["train"], splits[split]
    labels = evaluated["label"]
    majority = majority_label(train["label"])
    results = {"majority": classification_metrics([majority] * len(labels), labels)}
    for name, length in (("tfidf_lr_seen", max_length), ("tfidf_lr_all", None)):
        predictions = tfidf_logistic_regression(
            recent(train["items"], length), train["label"], recent(evaluated["items"], length), seed
        )
        results[name] = classification_metrics(predictions, labels)
    return results


# ColdRec -------------------------------------------------------------------------------------------------------


def bag_matrix(rows: Sequence[Sequence[int]], num_columns: int) -> np.ndarray:
    """`(len(rows), num_columns)` 0/1 matrix, 1 where a row holds the column's id."""
    matrix = np.zeros((len(rows), num_columns))
    for position, ids in enumerate(rows):
        matrix[position, list(ids)] = 1.0
    return matrix


def item_popularity(targets: Sequence[Sequence[int]], num_items: int) -> torch.Tensor:
    """How many training users have each target item."""
    return torch.as_tensor(bag_matrix(targets, num_items).sum(axis=0), dtype=torch.float32)


def item_knn_similarity(source: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`(source items, target items)` cosine similarity of the items' user columns in the training users; a user's
    score of a target item is the sum over their source items (`bag @ similarity`)."""
    norms = np.outer(np.linalg.norm(source, axis=0), np.linalg.norm(targets, axis=0))
    cooccurrence = source.T @ targets
    return np.divide(cooccurrence, norms, out=np.zeros_like(cooccurrence), where=norms > 0)


def ease_weights(source: np.ndarray, targets: np.ndarray, l2: float) -> np.ndarray:
    """Ridge regression from the source bag to the targets in closed form: `(XᵀX + λI)⁻¹ XᵀY`."""
    gram = source.T @ source + l2 * np.eye(source.shape[1])
    return np.linalg.solve(gram, source.T @ targets)


def choose_ease_l2(
    source: np.ndarray,
    targets: np.ndarray,
    seed: int,
    grid: Sequence[float] = EASE_L2_GRID,
    n_splits: int = 3,
) -> float:
    """The penalty with the best mean full-ranking MRR@10 on held-out folds of the training users.

    One eigendecomposition of each fold's `XᵀX = QΛQᵀ` gives the weights of every penalty,
    `Q diag(1 / (Λ + λ)) Qᵀ XᵀY`, so the grid costs one decomposition per fold."""
    scores = dict.fromkeys(grid, 0.0)
    for fitted, held_out in fold_indices(len(source), n_splits, seed):
        eigenvalues, eigenvectors = np.linalg.eigh(source[fitted].T @ source[fitted])
        projected = eigenvectors.T @ (source[fitted].T @ targets[fitted])
        users, items = np.nonzero(targets[held_out])
        positives = [np.nonzero(targets[held_out][user])[0].tolist() for user in users]
        mask = exclusion_mask(positives, targets.shape[1])
        for l2 in grid:
            weights = eigenvectors @ (projected / (eigenvalues + l2)[:, None])
            predicted = torch.as_tensor(source[held_out][users] @ weights)
            scores[l2] += full_ranking_metrics(predicted, items, mask, ks=(10,))["mrr@10"] / n_splits
    return max(grid, key=scores.get)


def ranking_metrics_of_scores(
    scores: torch.Tensor,
    candidate_ids: Sequence[Sequence[int]],
    targets: Sequence[int],
    positives: Sequence[Sequence[int]],
    cold: Sequence[bool] | None = None,
) -> dict[str, float]:
    """Sampled measures on each row's fixed candidates (true item in column 0) and full-ranking measures (prefixed
    `full_`, the row's other positives excluded) of `(rows, target items)` scores; with the rows' `cold` flags, both
    also on the cold rows (`cold_<measure>`, `full_cold_<measure>`), keyed as the models' `metrics.json` has them."""
    candidates = torch.as_tensor(candidate_ids, dtype=torch.long)
    mask = exclusion_mask(positives, scores.shape[1])
    true_items = torch.as_tensor(targets, dtype=torch.long)

    def sampled(rows: torch.Tensor | slice) -> dict[str, float]:
        return sampled_ranking_metrics(scores[rows].gather(1, candidates[rows]))

    def full(rows: torch.Tensor | slice) -> dict[str, float]:
        return full_ranking_metrics(scores[rows], true_items[rows], mask[rows])

    metrics, full_metrics = sampled(slice(None)), full(slice(None))
    if cold is not None:
        metrics.update(cold_item_metrics(sampled, cold))
        full_metrics.update(cold_item_metrics(full, cold))
    metrics.update({f"full_{key}": value for key, value in full_metrics.items()})
    return metrics


def popularity_metrics(
    popularity: torch.Tensor,
    candidate_ids: Sequence[Sequence[int]],
    targets: Sequence[int],
    positives: Sequence[Sequence[int]],
    num_items: int,
) -> dict[str, float]:
    """`ranking_metrics_of_scores` of the same popularity scores for every row."""
    return ranking_metrics_of_scores(
        popularity.expand(len(targets), num_items), candidate_ids, targets, positives
    )


def ranking_baselines(
    splits, max_length: int, num_eval_negatives: int, seed: int = 0, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Each ColdRec baseline's measures on the evaluation rows of `split` built as for the models (`ranking_datasets`:
    one row per target, the same seeded candidates), scored from the `max_length` most recent source items; also on
    the rows whose target item is cold (`metrics.cold_item_metrics`), as the models report them."""
    # Imported here so that the training code (the demo's table) can import this module without a cycle.
    from ..tokenization_peterrec import ItemTokenizer
    from ..training import ranking_datasets

    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])
    num_items = len(splits["train"].features["targets"].feature.names)
    _, validation, test = ranking_datasets(splits, tokenizer, num_eval_negatives, seed)
    rows = {"validation": validation, "test": test}[split]
    train_targets = bag_matrix(splits["train"]["targets"], num_items)
    train_source = bag_matrix(
        [tokenizer.encode_items(items) for items in recent(splits["train"]["items"], max_length)],
        len(tokenizer),
    )
    evaluated_source = bag_matrix(recent(rows["input_ids"], max_length), len(tokenizer))
    l2 = choose_ease_l2(train_source, train_targets, seed)
    logger.info(f"EASE: penalty {l2:g} chosen by cross-validation inside the training users")
    scores = {
        "popularity": item_popularity(splits["train"]["targets"], num_items).expand(len(rows), num_items),
        "item_knn": evaluated_source @ item_knn_similarity(train_source, train_targets),
        "ease": evaluated_source @ ease_weights(train_source, train_targets, l2),
    }
    evaluation = (rows["candidate_ids"], rows["target"], rows["positives"], rows["cold_target"])
    return {
        name: ranking_metrics_of_scores(torch.as_tensor(score, dtype=torch.float32), *evaluation)
        for name, score in scores.items()
    }


def baseline_rows(
    splits, max_length: int, num_eval_negatives: int = 99, seed: int = 0, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Every baseline of a task's kind, by name (see `BASELINES`), measured on `split` of its `DatasetDict`.

    Args:
        splits: the task's `DatasetDict` (`train`, `validation`, `test`).
        max_length: the number of most recent items the models see.
        num_eval_negatives: sampled negatives per ColdRec row, as the models are evaluated with.
        seed: the seed of the candidates (as `ranking_datasets`) and of the cross-validation folds.
        split: the evaluated split, `validation` or `test`.
    """
    if split not in ("validation", "test"):
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}.")
    if task_kind_of(splits).name == "ranking":
        return ranking_baselines(splits, max_length, num_eval_negatives, seed, split)
    return classification_baselines(splits, max_length, seed, split)


__all__ = [
    "BASELINES",
    "RULE_BASELINES",
    "Baseline",
    "baseline_rows",
    "classification_baselines",
    "ease_weights",
    "item_knn_similarity",
    "item_popularity",
    "majority_label",
    "popularity_metrics",
    "ranking_baselines",
    "ranking_metrics_of_scores",
    "tfidf_logistic_regression",
]
