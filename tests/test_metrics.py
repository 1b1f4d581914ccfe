"""Metrics against hand-computed values, ties included (SPEC §3, "Evaluation")."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from modeling_peterrec.metrics import (
    build_ranking_candidates,
    classification_metrics,
    cold_item_metrics,
    cold_item_rows,
    exclusion_mask,
    full_rank_of_positive,
    full_ranking_metrics,
    make_compute_metrics,
    rank_of_positive,
    ranking_metrics,
    sample_negatives,
    sampled_ranking_metrics,
)


def test_classification_metrics_hand_computed():
    # class 0: F1 = 1; class 1: tp 1, predicted 2, actual 1 -> 2/3; class 2: tp 1, predicted 1, actual 2 -> 2/3
    metrics = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2])
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx(7 / 9)


def test_classification_metrics_takes_argmax_of_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.1, 0.9, 0.0], [0.0, 0.0, 3.0]])
    assert classification_metrics(logits, np.array([0, 1, 2, 2])) == classification_metrics(
        [0, 1, 1, 2], [0, 1, 2, 2]
    )


def test_macro_f1_counts_classes_only_predicted():
    # class 0: tp 2, predicted 2, actual 3 -> 4/5; class 3 predicted once, never true -> 0
    metrics = classification_metrics([0, 0, 3], [0, 0, 0])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx(0.4)


def test_classification_metrics_rejects_length_mismatch():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        classification_metrics([0, 1, 1], [0, 1])


def test_rank_of_positive_counts_ties_against_positive():
    positive = torch.tensor([0.5, 0.5, 0.5])
    candidates = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.1, 0.9], [0.6, 0.7, 0.8]])
    assert rank_of_positive(positive, candidates).tolist() == [0, 2, 3]


def test_rank_of_positive_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        rank_of_positive(torch.tensor([float("nan")]), torch.tensor([[0.1]]))


def test_ranking_metrics_hand_computed():
    metrics = ranking_metrics([0, 2, 3, 7], ks=(1, 5))
    assert metrics["hr@1"] == pytest.approx(0.25)
    assert metrics["mrr@1"] == pytest.approx(0.25)
    assert metrics["ndcg@1"] == pytest.approx(0.25)
    assert metrics["hr@5"] == pytest.approx(0.75)
    assert metrics["mrr@5"] == pytest.approx((1 + 1 / 3 + 1 / 4) / 4)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(5)) / 4)
    assert sorted(metrics) == ["hr@1", "hr@5", "mrr@1", "mrr@5", "ndcg@1", "ndcg@5"]


def test_sample_negatives_is_deterministic_for_a_seed():
    positives = torch.tensor([3, 10, 42])
    first = sample_negatives(positives, num_items=50, num_negatives=20, seed=7)
    assert torch.equal(first, sample_negatives(positives, num_items=50, num_negatives=20, seed=7))
    assert not torch.equal(first, sample_negatives(positives, num_items=50, num_negatives=20, seed=8))
    assert first.shape == (3, 20) and first.dtype == torch.long


def test_sample_negatives_excludes_positive_and_user_items_without_duplicates():
    positives = torch.tensor([3, 10])
    exclude = [{4, 5, 6}, {11, 12}]
    negatives = sample_negatives(
        positives, num_items=30, num_negatives=25, exclude=exclude, seed=0, first_item_id=1
    )
    for row, positive, excluded in zip(negatives.tolist(), positives.tolist(), exclude, strict=True):
        assert len(set(row)) == 25
        assert positive not in row and not excluded & set(row)
        assert min(row) >= 1 and max(row) < 30


def test_sample_negatives_exhausts_a_small_pool_exactly():
    negatives = sample_negatives([2], num_items=5, num_negatives=3, exclude=[{0}])
    assert sorted(negatives[0].tolist()) == [1, 3, 4]


def test_sample_negatives_names_the_fix_when_pool_is_too_small():
    with pytest.raises(ValueError, match="with_replacement=True"):
        sample_negatives([2], num_items=5, num_negatives=4, exclude=[{0}])
    with_replacement = sample_negatives(
        [2], num_items=5, num_negatives=10, exclude=[{0}], with_replacement=True
    )
    assert set(with_replacement[0].tolist()) <= {1, 3, 4}


def test_build_ranking_candidates_puts_positive_first():
    candidates = build_ranking_candidates([5, 6], num_items=200, seed=1)
    assert candidates.shape == (2, 100)
    assert candidates[:, 0].tolist() == [5, 6]
    assert torch.equal(candidates[:, 1:], sample_negatives([5, 6], num_items=200, seed=1))


def test_sampled_ranking_metrics_positive_in_column_zero_with_tie():
    scores = torch.tensor([[0.9, 0.1, 0.9], [0.2, 0.5, 0.1], [0.8, 0.1, 0.2]])  # ranks 1 (tie), 1, 0
    metrics = sampled_ranking_metrics(scores, ks=(1, 5))
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["hr@5"] == pytest.approx(1.0)
    assert metrics["mrr@5"] == pytest.approx((0.5 + 0.5 + 1) / 3)


def test_full_rank_excludes_masked_items_but_never_the_positive():
    scores = torch.tensor([[0.0, 0.3, 0.5, 0.5, 0.9, 0.1], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    positives = torch.tensor([2, 5])
    assert full_rank_of_positive(scores, positives).tolist() == [2, 0]
    mask = exclusion_mask([{4}, {0, 1}], num_items=6)
    assert full_rank_of_positive(scores, positives, mask).tolist() == [1, 0]
    assert full_rank_of_positive(scores, positives, exclusion_mask([{2}, set()], 6)).tolist() == [2, 0]


def test_full_ranking_metrics_by_chunks_equals_whole():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(10, 40, generator=generator)
    positives = torch.randint(0, 40, (10,), generator=generator)
    mask = exclusion_mask([{i, i + 1} for i in range(10)], num_items=40)
    whole = full_rank_of_positive(scores, positives, mask)
    chunked = torch.cat(
        [
            full_rank_of_positive(scores[i : i + 3], positives[i : i + 3], mask[i : i + 3])
            for i in range(0, 10, 3)
        ]
    )
    assert torch.equal(whole, chunked)
    assert full_ranking_metrics(scores, positives, mask) == ranking_metrics(whole)


def test_compute_metrics_for_trainer_eval_predictions():
    from transformers.trainer_utils import EvalPrediction

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    classification = make_compute_metrics("classification")(
        EvalPrediction(predictions=(logits,), label_ids=np.array([0, 1, 1]))
    )
    assert classification == pytest.approx({"accuracy": 2 / 3, "macro_f1": (2 / 3 + 2 / 3) / 2})
    scores = np.array([[0.9, 0.1, 0.9], [0.2, 0.5, 0.1]])
    ranking = make_compute_metrics("ranking", ks=(1,))(EvalPrediction(predictions=scores, label_ids=None))
    assert ranking == pytest.approx({"hr@1": 0.0, "mrr@1": 0.0, "ndcg@1": 0.0})
    with pytest.raises(ValueError, match="task_kind"):
        make_compute_metrics("regression")


class _CandidateScorer(nn.Module):
    """Scores (user, item) pairs by an embedding dot product and returns the (N, 1 + M) matrix as logits."""

    def __init__(self) -> None:
        super().__init__()
        self.users = nn.Embedding(4, 2)
        self.items = nn.Embedding(10, 2)
        with torch.no_grad():
            self.users.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]))
            self.items.weight.copy_(torch.arange(20, dtype=torch.float).reshape(10, 2))

    def forward(self, user_ids, candidate_ids, labels=None):
        logits = torch.einsum("bd,bmd->bm", self.users(user_ids), self.items(candidate_ids))
        return {"loss": -logits[:, 0].mean(), "logits": logits}


def test_ranking_convention_runs_through_trainer_evaluate(tmp_path):
    from transformers import Trainer, TrainingArguments

    # item i has embedding (2i, 2i + 1); candidates: the true item first, then three negatives
    candidates = [[9, 1, 2, 3], [0, 1, 2, 3], [5, 6, 1, 2], [0, 1, 2, 3]]
    data = [{"user_ids": user, "candidate_ids": row, "labels": 0} for user, row in enumerate(candidates)]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=3, report_to=[], use_cpu=True
    )
    trainer = Trainer(
        model=_CandidateScorer(),
        args=args,
        eval_dataset=data,
        compute_metrics=make_compute_metrics("ranking", ks=(1, 2)),
    )
    metrics = trainer.evaluate()
    # user 0 scores 2i: rank 0; user 1 scores 2i + 1: rank 3; user 2 scores 4i + 1: rank 1; user 3 scores -2i: rank 0
    assert metrics["eval_hr@1"] == pytest.approx(2 / 4)
    assert metrics["eval_hr@2"] == pytest.approx(3 / 4)
    assert metrics["eval_mrr@2"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_cold_target_items_are_reported_apart_with_hand_computed_values():
    # Five target items; training pairs hold targets 0, 1 and 4, so targets 2 and 3 are cold.
    targets = torch.tensor([0, 2, 3, 1])
    cold = cold_item_rows(targets, [0, 1, 1, 4])
    assert cold.tolist() == [False, True, True, False]
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3, 0.4],  # target 0 ranks 0
            [0.5, 0.9, 0.8, 0.1, 0.2],  # target 2 (cold): only 0.9 is higher, rank 1
            [0.5, 0.6, 0.7, 0.1, 0.2],  # target 3 (cold): item 1 is another positive, so rank 3, not 4
            [0.1, 0.2, 0.3, 0.4, 0.5],  # target 1 ranks 3
        ]
    )
    mask = exclusion_mask([[0], [2], [1, 3], [1]], 5)

    def metrics_of(rows):
        return full_ranking_metrics(scores[rows], targets[rows], mask[rows], ks=(1, 2, 4))

    metrics = cold_item_metrics(metrics_of, cold)
    assert metrics["cold_rows"] == 2
    assert metrics["cold_hr@1"] == 0.0
    assert metrics["cold_hr@2"] == pytest.approx(1 / 2)
    assert metrics["cold_mrr@2"] == pytest.approx((1 / 2) / 2)
    assert metrics["cold_ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert metrics["cold_hr@4"] == pytest.approx(1.0)
    assert metrics["cold_mrr@4"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert cold_item_metrics(metrics_of, cold_item_rows(targets, range(5))) == {"cold_rows": 0}
