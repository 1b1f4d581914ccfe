"""One evaluation interface for every head and every task (the paper's Section 4.1 protocols, and full ranking).

The same functions give the numbers in the tests, in the training logs (through `make_compute_metrics`), in the model
cards and in the reproduction tables.

- User-profile classification (GenEst, AgeEst, LifeEst): accuracy, the paper's measure, and macro-F1.
- Item recommendation (ColdRec): HR@k and MRR@k of the true item ranked among 99 uniformly sampled negatives, the
  paper's protocol ("Evaluation Protocols", Section 4.1), and the same measures plus NDCG@k over the full ranking of
  all target items, since sampled metrics are known to mislead.
- Cold target items (ColdRec): the same measures restricted to the rows whose true target item never occurs in a
  training pair of the task (`cold_item_rows`, `cold_item_metrics`), reported apart as `cold_<measure>` with their
  count `cold_rows`: such an item is ranked by what the head knows without interactions (its text, or nothing).
- Pretraining: MRR@5 / HR@5 of the held-out last item ranked over the whole item pool (Section 4.1,
  "pre-training ... calculated based on the rank in the whole item pool").

Ranks are 0-based and count the competitors scoring at least as high as the true item: a tie counts against the true
item, as in the original code (`tf.nn.top_k` breaks ties toward the lower index, where the negatives sit), so a model
that scores everything alike never looks good.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "build_ranking_candidates",
    "classification_metrics",
    "cold_item_metrics",
    "cold_item_rows",
    "exclusion_mask",
    "full_rank_of_positive",
    "full_ranking_metrics",
    "make_compute_metrics",
    "rank_of_positive",
    "ranking_metrics",
    "sample_negatives",
    "sampled_ranking_metrics",
]

ArrayLike = torch.Tensor | np.ndarray | Sequence


def _as_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if tensor.numel() == 0:
        raise ValueError(f"`{name}` is empty: evaluation needs at least one example.")
    return tensor.detach().cpu()


def _check_finite(scores: torch.Tensor, name: str) -> None:
    if torch.isnan(scores).any():
        raise ValueError(
            f"`{name}` contains NaN scores; check the model outputs (a NaN loss or overflow upstream)."
        )


def classification_metrics(logits_or_predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Accuracy and macro-F1 of user-profile predictions.

    Args:
        logits_or_predictions: `(N, num_labels)` logits (the predicted class is the argmax) or `(N,)` class ids.
        labels: `(N,)` true class ids.

    Returns:
        `{"accuracy", "macro_f1"}`. Macro-F1 is the unweighted mean of the per-class F1 over the classes that occur
        in the labels or in the predictions (a class never seen on either side has no defined F1).
    """
    predictions = _as_tensor(logits_or_predictions, "logits_or_predictions")
    labels = _as_tensor(labels, "labels").long().reshape(-1)
    if predictions.dim() == 2:
        _check_finite(predictions, "logits_or_predictions")
        predictions = predictions.argmax(dim=-1)
    predictions = predictions.long().reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"Got {predictions.numel()} predictions for {labels.numel()} labels; pass one prediction (or one row "
            "of logits) per label."
        )
    f1_scores = []
    for label in torch.cat([labels, predictions]).unique():
        true_positives = ((predictions == label) & (labels == label)).sum().item()
        predicted, actual = (predictions == label).sum().item(), (labels == label).sum().item()
        f1_scores.append(2 * true_positives / (predicted + actual))
    return {
        "accuracy": (predictions == labels).double().mean().item(),
        "macro_f1": float(np.mean(f1_scores)),
    }


def rank_of_positive(positive_scores: ArrayLike, candidate_scores: ArrayLike) -> torch.Tensor:
    """0-based rank of each true item among its competitors; ties count against the true item.

    Args:
        positive_scores: `(N,)` score of each example's true item.
        candidate_scores: `(N, M)` scores of the competing items (the true item is not among them).

    Returns:
        `(N,)` long tensor: the number of competitors scoring greater than or equal to the true item.
    """
    positive_scores = _as_tensor(positive_scores, "positive_scores").reshape(-1)
    candidate_scores = _as_tensor(candidate_scores, "candidate_scores")
    if candidate_scores.dim() != 2 or candidate_scores.shape[0] != positive_scores.shape[0]:
        raise ValueError(
            f"`candidate_scores` must be (N, M) with N = {positive_scores.shape[0]} (one row per positive); "
            f"got shape {tuple(candidate_scores.shape)}."
        )
    _check_finite(positive_scores, "positive_scores")
    _check_finite(candidate_scores, "candidate_scores")
    return (candidate_scores >= positive_scores.unsqueeze(-1)).sum(dim=-1)


def ranking_metrics(ranks: ArrayLike, ks: Iterable[int] = (5, 10)) -> dict[str, float]:
    """Top-k measures from 0-based ranks, averaged over examples.

    HR@k is 1 when rank < k; MRR@k is 1 / (rank + 1) and NDCG@k is 1 / log2(rank + 2) when rank < k, else 0 (with
    one relevant item, the ideal DCG is 1).

    Returns:
        `{"hr@k", "mrr@k", "ndcg@k"}` for every k in `ks`.
    """
    ranks = _as_tensor(ranks, "ranks").double().reshape(-1)
    if (ranks < 0).any():
        raise ValueError("`ranks` must be non-negative 0-based ranks (see `rank_of_positive`).")
    metrics = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"Cut-off k must be at least 1, got {k}.")
        hit = ranks < k
        metrics[f"hr@{k}"] = hit.double().mean().item()
        metrics[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1), 0.0).mean().item()
        metrics[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).mean().item()
    return metrics


def sample_negatives(
    positives: ArrayLike,
    num_items: int,
    num_negatives: int = 99,
    exclude: Sequence[set[int]] | None = None,
    seed: int = 0,
    first_item_id: int = 0,
    with_replacement: bool = False,
) -> torch.Tensor:
    """Uniformly sampled negative items for each positive (the paper's protocol: 99 negatives per true item).

    Items are the ids `first_item_id .. num_items - 1` (target-item indices for a ranking head, `first_item_id=0`;
    vocabulary ids for pretraining, `first_item_id=tokenizer.first_item_id` so special tokens are never drawn). The
    positive itself is never drawn, nor any id in that example's `exclude` set (typically the user's other
    positives). The result depends only on the arguments: one `torch.Generator` seeded with `seed`.

    Args:
        positives: `(N,)` true item of each example.
        num_items: one past the largest item id.
        num_negatives: negatives per example.
        exclude: optional per-example sets of further ids that must not be drawn.
        seed: random seed.
        first_item_id: smallest item id that may be drawn.
        with_replacement: draw with replacement, as the original code did; by default the negatives of one example
            are distinct.

    Returns:
        `(N, num_negatives)` long tensor of item ids.
    """
    positives = _as_tensor(positives, "positives").long().reshape(-1)
    if exclude is not None and len(exclude) != positives.shape[0]:
        raise ValueError(
            f"`exclude` has {len(exclude)} sets for {positives.shape[0]} positives; pass one per positive."
        )
    if not first_item_id <= positives.min().item() <= positives.max().item() < num_items:
        raise ValueError(
            f"Positive ids must lie in [{first_item_id}, {num_items}); check `num_items`/`first_item_id`."
        )
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index, positive in enumerate(positives.tolist()):
        forbidden = {positive} | {
            i for i in (exclude[index] if exclude is not None else ()) if i >= first_item_id
        }
        available = num_items - first_item_id - len({i for i in forbidden if i < num_items})
        if available < (1 if with_replacement else num_negatives):
            raise ValueError(
                f"Example {index} has only {available} items left to sample from but needs {num_negatives} distinct "
                "negatives; lower `num_negatives`, shrink `exclude`, or pass `with_replacement=True`."
            )
        rows.append(
            _sample_row(generator, first_item_id, num_items, num_negatives, forbidden, with_replacement)
        )
    return torch.tensor(rows, dtype=torch.long).reshape(positives.shape[0], num_negatives)


def _sample_row(
    generator: torch.Generator, low: int, high: int, count: int, forbidden: set[int], with_replacement: bool
) -> list[int]:
    """Rejection sampling: cheap when the pool is large compared to `count`, which is the case for item catalogues."""
    chosen: list[int] = []
    taken = set(forbidden)
    while len(chosen) < count:
        for item in torch.randint(low, high, (2 * (count - len(chosen)) + 8,), generator=generator).tolist():
            if item not in taken:
                chosen.append(item)
                if not with_replacement:
                    taken.add(item)
                if len(chosen) == count:
                    break
    return chosen


def build_ranking_candidates(
    positives: ArrayLike,
    num_items: int,
    num_negatives: int = 99,
    exclude: Sequence[set[int]] | None = None,
    seed: int = 0,
    first_item_id: int = 0,
    with_replacement: bool = False,
) -> torch.Tensor:
    """`(N, 1 + num_negatives)` candidate ids with the true item in column 0, then the sampled negatives.

    Score these candidates (e.g. `PeterRecForItemRanking.score(input_ids, attention_mask, candidates)`) and pass the
    scores to `sampled_ranking_metrics`. Arguments as in `sample_negatives`.
    """
    positives = _as_tensor(positives, "positives").long().reshape(-1, 1)
    negatives = sample_negatives(
        positives.reshape(-1), num_items, num_negatives, exclude, seed, first_item_id, with_replacement
    )
    return torch.cat([positives, negatives], dim=1)


def sampled_ranking_metrics(candidate_scores: ArrayLike, ks: Iterable[int] = (5, 10)) -> dict[str, float]:
    """Ranking measures of the true item among sampled negatives (the paper's protocol for ColdRec).

    Args:
        candidate_scores: `(N, 1 + M)` scores with the true item in column 0 and its M negatives after it (the
            layout of `build_ranking_candidates`).
        ks: cut-offs.
    """
    candidate_scores = _as_tensor(candidate_scores, "candidate_scores")
    if candidate_scores.dim() != 2 or candidate_scores.shape[1] < 2:
        raise ValueError(
            "`candidate_scores` must be (N, 1 + M): the true item's score in column 0, then M >= 1 negatives; "
            f"got shape {tuple(candidate_scores.shape)}."
        )
    return ranking_metrics(rank_of_positive(candidate_scores[:, 0], candidate_scores[:, 1:]), ks)


def exclusion_mask(exclude: Sequence[Iterable[int]], num_items: int) -> torch.Tensor:
    """`(N, num_items)` boolean mask, True at the ids of each example's set (for `full_ranking_metrics`)."""
    mask = torch.zeros(len(exclude), num_items, dtype=torch.bool)
    for row, items in enumerate(exclude):
        items = torch.as_tensor(list(items), dtype=torch.long)
        if items.numel() and (items.min() < 0 or items.max() >= num_items):
            raise ValueError(f"Example {row} excludes ids outside [0, {num_items}); check `num_items`.")
        mask[row, items] = True
    return mask


def full_rank_of_positive(
    scores: torch.Tensor, positives: ArrayLike, exclude_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of each true item among all items; ties count against the true item.

    Works on any block of rows, so a large evaluation can score and rank chunk by chunk and concatenate the ranks.

    Args:
        scores: `(N, num_items)` scores of every item (any device, any float dtype).
        positives: `(N,)` column of each example's true item.
        exclude_mask: optional `(N, num_items)` boolean mask of items that do not compete (the user's other positives,
            special tokens); the true item never competes with itself whatever the mask says.

    Returns:
        `(N,)` long tensor on the device of `scores`.
    """
    if scores.dim() != 2:
        raise ValueError(f"`scores` must be (N, num_items), got shape {tuple(scores.shape)}.")
    positives = torch.as_tensor(positives, dtype=torch.long, device=scores.device).reshape(-1)
    if positives.shape[0] != scores.shape[0]:
        raise ValueError(f"Got {positives.shape[0]} positives for {scores.shape[0]} rows of scores.")
    if (positives < 0).any() or (positives >= scores.shape[1]).any():
        raise ValueError(f"Positive ids must lie in [0, {scores.shape[1]}) (the columns of `scores`).")
    _check_finite(scores, "scores")
    positive_scores = scores.gather(1, positives.unsqueeze(1))
    competes = scores >= positive_scores
    if exclude_mask is not None:
        if exclude_mask.shape != scores.shape:
            raise ValueError(f"`exclude_mask` must have the shape of `scores` {tuple(scores.shape)}.")
        competes &= ~exclude_mask.to(device=scores.device, dtype=torch.bool)
    competes.scatter_(1, positives.unsqueeze(1), False)
    return competes.sum(dim=1)


def full_ranking_metrics(
    scores: torch.Tensor,
    positives: ArrayLike,
    exclude_mask: torch.Tensor | None = None,
    ks: Iterable[int] = (5, 10),
) -> dict[str, float]:
    """HR@k, MRR@k and NDCG@k of the true item ranked over all items (see `full_rank_of_positive`)."""
    return ranking_metrics(full_rank_of_positive(scores, positives, exclude_mask).cpu(), ks)


def cold_item_rows(targets: ArrayLike, training_targets: Iterable[int]) -> torch.Tensor:
    """`(N,)` boolean mask, True where the row's true target item is cold: it never occurs among
    `training_targets` (the target items of every training pair of the task)."""
    seen = torch.as_tensor(sorted(set(training_targets)), dtype=torch.long)
    return ~torch.isin(_as_tensor(targets, "targets").long().reshape(-1), seen)


def cold_item_metrics(
    metrics_of: Callable[[torch.Tensor], dict[str, float]], cold: ArrayLike
) -> dict[str, float]:
    """The measures of the rows whose target item is cold: `cold_rows`, their count, and `cold_<name>` for each
    measure of `metrics_of(rows)` (rows: the cold rows' positions), none when no row is cold."""
    rows = torch.as_tensor(cold, dtype=torch.bool).reshape(-1).nonzero().reshape(-1)
    metrics = {"cold_rows": len(rows)}
    if len(rows):
        metrics.update({f"cold_{name}": value for name, value in metrics_of(rows).items()})
    return metrics


def make_compute_metrics(
    task_kind: Literal["classification", "ranking"], ks: Iterable[int] = (5, 10)
) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` function for `transformers.Trainer`.

    - `"classification"`: `EvalPrediction.predictions` are the `(N, num_labels)` logits, `label_ids` the classes;
      returns `classification_metrics`.
    - `"ranking"`: by convention the model's evaluation output is the `(N, 1 + M)` candidate score matrix with the
      true item in column 0 and M sampled negatives after it (so the Trainer's evaluation loop gathers it like any
      logits); `label_ids` are not used. Returns `sampled_ranking_metrics` at the cut-offs `ks`.

    When the model returns several tensors, the first one is used.
    """
    ks = tuple(ks)
    if task_kind not in ("classification", "ranking"):
        raise ValueError(f"Unknown task_kind {task_kind!r}; use 'classification' or 'ranking'.")

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple | list):
            predictions = predictions[0]
        if task_kind == "classification":
            return classification_metrics(predictions, eval_prediction.label_ids)
        return sampled_ranking_metrics(predictions, ks)

    return compute_metrics
