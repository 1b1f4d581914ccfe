"""The baselines on tiny hand-built data: majority, the TF-IDF logistic regression and its cross-validation folds,
item-kNN similarities, EASE's closed form, and ranking measures on fixed candidates."""

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from sklearn.linear_model import LogisticRegressionCV

from modeling_peterrec.reproduction.baselines import (
    baseline_rows,
    ease_weights,
    item_knn_similarity,
    ranking_metrics_of_scores,
)


def profile_splits() -> DatasetDict:
    """Class-0 users watch a and b, class-1 users c and d (7 against 5 training users); the test users follow the
    same rule, so the classes are separable."""

    def rows(labels: list[int]) -> Dataset:
        histories = [["a", "b", "a"] if label == 0 else ["c", "d", "c", "d"] for label in labels]
        return Dataset.from_dict({"items": histories, "label": labels})

    return DatasetDict(
        {"train": rows([0] * 7 + [1] * 5), "validation": rows([1, 1, 0, 1]), "test": rows([0, 1, 1])}
    )


def test_majority_predicts_the_most_frequent_training_label():
    results = baseline_rows(profile_splits(), max_length=2, split="test")
    assert results["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert baseline_rows(profile_splits(), max_length=2, split="validation")["majority"]["accuracy"] == 0.25


def test_tfidf_logistic_regression_separates_a_separable_toy_set():
    results = baseline_rows(profile_splits(), max_length=2, split="test")
    assert results["tfidf_lr_seen"]["accuracy"] == 1.0
    assert results["tfidf_lr_all"]["accuracy"] == 1.0


def test_cross_validation_folds_hold_training_users_only(monkeypatch):
    fits, original_fit = [], LogisticRegressionCV.fit

    def recording_fit(self, features, labels, **kwargs):
        fits.append((features.shape[0], list(labels), self.cv))
        return original_fit(self, features, labels, **kwargs)

    monkeypatch.setattr(LogisticRegressionCV, "fit", recording_fit)
    splits = profile_splits()
    baseline_rows(splits, max_length=2, split="test")
    assert len(fits) == 2
    for rows, labels, folds in fits:
        assert rows == len(splits["train"]) and labels == splits["train"]["label"]
        held_out = sorted(int(index) for _, validation in folds for index in validation)
        assert held_out == list(range(len(splits["train"])))
        assert all(max(fitted) < len(splits["train"]) for fitted, _ in folds)


# 3 training users, 4 source items, 2 target items.
SOURCE = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=float)
TARGETS = np.array([[1, 0], [1, 1], [0, 1]], dtype=float)


def test_item_knn_similarity_is_the_cosine_of_item_columns():
    half_root = np.sqrt(0.5)
    # Source item norms sqrt(2), sqrt(2), 1, 1; target item norms sqrt(2), sqrt(2); co-occurrences by hand.
    expected = np.array([[0.5, 0.5], [1.0, 0.5], [half_root, half_root], [0.0, half_root]])
    np.testing.assert_allclose(item_knn_similarity(SOURCE, TARGETS), expected)
    np.testing.assert_allclose(np.array([0, 0, 1, 1]) @ expected, [half_root, 2 * half_root])


def test_ease_weights_are_the_ridge_closed_form():
    rng = np.random.default_rng(0)
    source, targets = (rng.random((20, 6)) < 0.4).astype(float), (rng.random((20, 3)) < 0.3).astype(float)
    expected = np.linalg.inv(source.T @ source + 7.0 * np.eye(6)) @ source.T @ targets
    np.testing.assert_allclose(ease_weights(source, targets, 7.0), expected, atol=1e-10)


def test_baseline_ranking_measures_on_fixed_candidates_by_hand():
    scores = torch.as_tensor(SOURCE @ item_knn_similarity(SOURCE, TARGETS))
    # User 0 scores (1.5, 1.0), user 1 (1.71, 1.21), user 2 (0.5, 1.21). Rows: (user 0, target 1), (user 2,
    # target 0), (user 1, target 0); the true item in column 0 of the candidates.
    rows = scores[[0, 2, 1]]
    metrics = ranking_metrics_of_scores(rows, [[1, 0], [0, 1], [0, 1]], [1, 0, 0], [[1], [0, 1], [0]])
    # Sampled ranks 1, 1, 0. Full ranking: user 2's other positive (item 1) does not compete, so ranks 1, 0, 0.
    assert metrics["hr@5"] == 1.0
    assert metrics["mrr@5"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert metrics["full_mrr@5"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert metrics["full_ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 + 1) / 3)
