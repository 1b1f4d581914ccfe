"""Hyperparameter selection that is not noise: the candidates of a preset's grid and the choice among them.

A candidate sets some training arguments (`learning_rate`, `num_train_epochs`, `max_length`: the most recent items
the model reads) and some fields of a `Configuration` (`readout`, `bottleneck_size`, ...). Each candidate is scored on every held-out set of a scheme: the `k` folds of
the training users (`cv`, `folds.user_folds`) or the validation split alone (`validation`); the best mean wins.
The runner (`Reproduction.select`) supplies the scores by fine-tuning on the first seed, and reads the test split
only afterwards, once per seed, with the chosen candidate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .plan import SELECTION_SCHEMES, Configuration
from .report import Aggregate

TRAINING_KNOBS = ("learning_rate", "num_train_epochs", "max_length")
"""Candidate keys that are training arguments; every other key is a field of `Configuration`."""
_SHORT = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "max_length": "length",
    "bottleneck_size": "bottleneck",
}


def candidates(tune: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid `tune` (key -> candidate values), in the grid's order; `[{}]` for an empty
    grid."""
    allowed = set(TRAINING_KNOBS) | {field.name for field in fields(Configuration)} - {"task", "method"}
    unknown = sorted(set(tune) - allowed)
    if unknown:
        raise ValueError(f"Cannot tune {unknown}; choose from {sorted(allowed)}.")
    keys = list(tune)
    return [
        dict(zip(keys, values, strict=True)) for values in itertools.product(*(tune[key] for key in keys))
    ]


def candidate_label(candidate: Mapping[str, Any]) -> str:
    """`lr0.001-readout_mean`: a candidate's name in tables and its runs' folder name (`default` when empty)."""
    parts = []
    for key, value in candidate.items():
        value = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{_SHORT.get(key, key)}{value}" if key in _SHORT else f"{key}_{value}")
    return "-".join(parts) or "default"


def split_candidate(candidate: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`Configuration` fields, training arguments) of a candidate."""
    training = {key: value for key, value in candidate.items() if key in TRAINING_KNOBS}
    return {key: value for key, value in candidate.items() if key not in TRAINING_KNOBS}, training


@dataclass
class Selection:
    """The outcome of a selection: per candidate (by label) its values and its `Aggregate` over the held-out sets,
    and the chosen label."""

    scheme: str
    metric: str
    held_out_sets: int
    values: dict[str, dict[str, Any]]
    scores: dict[str, Aggregate]
    chosen: str

    def as_dict(self) -> dict[str, Any]:
        """The report's record: `candidates` maps each label to its values, mean, std and per-set scores."""
        return {
            "scheme": self.scheme,
            "metric": self.metric,
            "held_out_sets": self.held_out_sets,
            "chosen": self.chosen,
            "candidates": {
                label: {
                    "values": self.values[label],
                    "mean": score.mean,
                    "std": score.std,
                    "scores": score.values,
                }
                for label, score in self.scores.items()
            },
        }


def choose_candidate(
    grid: Sequence[Mapping[str, Any]],
    held_out_sets: Sequence[Any],
    score: Callable[[Mapping[str, Any], Any], float],
    scheme: str,
    metric: str,
) -> Selection:
    """Scores every candidate of `grid` on every held-out set (`score(candidate, held_out)`) and chooses the best
    mean (the first candidate among ties)."""
    if scheme not in SELECTION_SCHEMES:
        raise ValueError(f"selection must be one of {SELECTION_SCHEMES}, got {scheme!r}.")
    values = {candidate_label(candidate): dict(candidate) for candidate in grid}
    scores = {
        label: Aggregate.of([score(candidate, held_out) for held_out in held_out_sets])
        for label, candidate in values.items()
    }
    chosen = max(scores, key=lambda label: scores[label].mean)
    return Selection(scheme, metric, len(held_out_sets), values, scores, chosen)


__all__ = [
    "TRAINING_KNOBS",
    "Selection",
    "candidate_label",
    "candidates",
    "choose_candidate",
    "split_candidate",
]
