"""The MovieLens tasks (`MOVIELENS_TASKS`): ColdRec and user-profile labels built from a `MovieLens`, cached.

Stand-ins for the paper's tasks (Section 4.1): `pretrain` and `pretrain_source` for pretraining, `genest`,
`ageest`, `lifeest` and `lifestatus` for user-profile prediction and `coldrec` for cold-start recommendation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from .._io import atomic_folder
from .movielens import GENDER_NAMES, MovieLens, _movielens_source, default_cache_dir, read_movielens
from .schemas import classification_dataset, coldrec_dataset, pretraining_dataset

logger = logging.get_logger(__name__)

MOVIELENS_TASKS = ("pretrain", "pretrain_source", "genest", "ageest", "lifeest", "lifestatus", "coldrec")

COLDREC_TARGET_GENRES = frozenset({"Children's", "Animation", "Fantasy", "Musical"})
"""A movie with any of these genres belongs to the ColdRec target domain; every other movie to the source domain."""
COLDREC_MIN_RATING = 4.0
COLDREC_NUM_TARGETS = 3
COLDREC_MIN_SOURCE_ITEMS = 10

AGE_BRACKETS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
"""ML-1M's age brackets, keyed by their lower bound (the code ML-1M stores)."""

LIFE_STATUSES = ("employed", "student", "other or not specified", "homemaker or unemployed", "retired")
_LIFE_STATUS_OF = {
    "college/grad student": "student",
    "K-12 student": "student",
    "student": "student",
    "other or not specified": "other or not specified",
    "other": "other or not specified",
    "homemaker": "homemaker or unemployed",
    "unemployed": "homemaker or unemployed",
    "none": "homemaker or unemployed",
    "retired": "retired",
}
"""Coarse life status of an occupation; occupations not listed here are `employed`."""


def coldrec_split(movielens: MovieLens) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """ColdRec on MovieLens (stand-in for the paper's ColdRec, Section 4.1): `(user_ids, sources, targets)`.

    A movie is in the target domain if any of its genres is in `COLDREC_TARGET_GENRES`. A user's source sequence
    is their source-domain movies in time order; their targets are their last three target-domain movies rated 4
    or more; users need at least 10 source movies and one target.
    """
    kept_users, sources, targets = [], [], []
    for user, history, ratings in zip(
        movielens.user_ids, movielens.histories, movielens.ratings, strict=True
    ):
        in_target = [not COLDREC_TARGET_GENRES.isdisjoint(movielens.item_genres[item]) for item in history]
        source = [item for item, is_target in zip(history, in_target, strict=True) if not is_target]
        liked = [
            item
            for item, rating, is_target in zip(history, ratings, in_target, strict=True)
            if is_target and rating >= COLDREC_MIN_RATING
        ]
        if len(source) >= COLDREC_MIN_SOURCE_ITEMS and liked:
            kept_users.append(user)
            sources.append(source)
            targets.append(liked[-COLDREC_NUM_TARGETS:])
    return kept_users, sources, targets


def _age_bracket(age: int) -> int:
    """Index into `AGE_BRACKETS` of the bracket holding `age` (ML-1M stores a bracket's lower bound)."""
    return max(int(np.searchsorted(list(AGE_BRACKETS), age, side="right")) - 1, 0)


def build_movielens_tasks(movielens: MovieLens, seed: int = 0) -> dict[str, Any]:
    """Every task of `MOVIELENS_TASKS` on `movielens`, as a `DatasetDict` each.

    `pretrain` holds every user's full history; `pretrain_source` the ColdRec users' source sequences (the backbone
    for ColdRec is pretrained on the source domain only); `genest`, `ageest`, `lifeest` and `lifestatus` predict
    gender, ML-1M age bracket, occupation and coarse life status from the full history; `coldrec` is
    `coldrec_split`'s task.
    """
    source = _movielens_source(movielens.name)
    users, histories = movielens.user_ids, movielens.histories
    coldrec_users, coldrec_sources, coldrec_targets = coldrec_split(movielens)
    logger.info(
        f"{movielens.name} ColdRec: {len(coldrec_users):,} users, "
        f"{len({item for items in coldrec_targets for item in items}):,} target items, "
        f"{len({item for items in coldrec_sources for item in items}):,} source items"
    )
    genders = sorted(GENDER_NAMES)
    profile_labels = {
        "genest": (
            [genders.index(gender) for gender in movielens.genders],
            [GENDER_NAMES[g] for g in genders],
        ),
        "ageest": ([_age_bracket(age) for age in movielens.ages], list(AGE_BRACKETS.values())),
        "lifeest": (
            [source.occupations.index(job) for job in movielens.occupations],
            list(source.occupations),
        ),
        "lifestatus": (
            [LIFE_STATUSES.index(_LIFE_STATUS_OF.get(job, "employed")) for job in movielens.occupations],
            list(LIFE_STATUSES),
        ),
    }
    tasks = {
        "pretrain": pretraining_dataset(users, histories),
        "pretrain_source": pretraining_dataset(coldrec_users, coldrec_sources),
        **{
            task: classification_dataset(users, histories, labels, names, seed)
            for task, (labels, names) in profile_labels.items()
        },
        "coldrec": coldrec_dataset(coldrec_users, coldrec_sources, coldrec_targets, seed),
    }
    return tasks


def _task_dir(name: str, task: str, cache_dir: str | os.PathLike | None, seed: int) -> Path:
    return default_cache_dir(cache_dir) / "datasets" / name / f"seed{seed}" / task


def prepare_movielens(
    name: str = "ml-1m", cache_dir: str | os.PathLike | None = None, seed: int = 0
) -> dict[str, Any]:
    """Every MovieLens task (`MOVIELENS_TASKS`) of release `name`, built and saved to the cache on first use.

    Returns `{task: DatasetDict}` read back from `<cache>/datasets/<name>/seed<seed>/<task>`.
    """
    from datasets import load_from_disk

    _movielens_source(name)
    missing = [task for task in MOVIELENS_TASKS if not _task_dir(name, task, cache_dir, seed).exists()]
    if missing:
        tasks = build_movielens_tasks(read_movielens(name, cache_dir), seed)
        for task in missing:
            target = _task_dir(name, task, cache_dir, seed)
            with atomic_folder(target) as staging:
                tasks[task].save_to_disk(str(staging))
            logger.info(f"Saved {name}/{task} to {target}")
    return {task: load_from_disk(str(_task_dir(name, task, cache_dir, seed))) for task in MOVIELENS_TASKS}


def load_task(name: str, task: str, cache_dir: str | os.PathLike | None = None, seed: int = 0):
    """One MovieLens task's `DatasetDict` (see `prepare_movielens`), built on first use."""
    from datasets import load_from_disk

    if task not in MOVIELENS_TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(MOVIELENS_TASKS)}.")
    path = _task_dir(name, task, cache_dir, seed)
    if not path.exists():
        return prepare_movielens(name, cache_dir, seed)[task]
    return load_from_disk(str(path))


__all__ = [
    "AGE_BRACKETS",
    "COLDREC_MIN_RATING",
    "COLDREC_MIN_SOURCE_ITEMS",
    "COLDREC_NUM_TARGETS",
    "COLDREC_TARGET_GENRES",
    "LIFE_STATUSES",
    "MOVIELENS_TASKS",
    "build_movielens_tasks",
    "coldrec_split",
    "load_task",
    "prepare_movielens",
]
