"""Importers for users' own files: interaction logs and label tables (CSV or Parquet) and the original code's
fine-tuning text format, each read into a `DatasetDict` of `schemas.py`."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ._bad_rows import raise_bad_rows
from .schemas import (
    SPLIT_FRACTIONS,
    checked_label_names,
    classification_dataset,
    coldrec_dataset,
    pretraining_dataset,
)

logger = logging.get_logger(__name__)


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
    path: str | os.PathLike,
    user_column: str,
    item_column: str,
    time_column: str | None,
    split_column: str | None = None,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Chronological item history per user (first-appearance order), sorted stably by (time, row), and each user's
    fixed split when `split_column` is given (the same on all of a user's rows)."""
    columns = [user_column, item_column] + [name for name in (time_column, split_column) if name]
    rows, source = _read_rows(path, columns)
    events: dict[str, list[tuple[float, str]]] = {}
    splits: dict[str, str] = {}
    problems = []
    for where, row in rows:
        user, item = _text(row[user_column]), _text(row[item_column])
        time = _time(row[time_column]) if time_column else 0.0
        reasons = [
            f"missing {name}" for name, value in ((user_column, user), (item_column, item)) if value is None
        ]
        if time is None:
            reasons.append(f"{time_column} {row[time_column]!r} is not a number or an ISO date")
        if split_column:
            split = _text(row[split_column])
            if split not in SPLIT_FRACTIONS:
                reasons.append(f"{split_column} {row[split_column]!r} is not one of {list(SPLIT_FRACTIONS)}")
            elif splits.setdefault(user, split) != split:
                reasons.append(f"user {user!r} is in split {splits[user]!r} on an earlier row")
        if reasons:
            problems.append((where, ", ".join(reasons)))
            continue
        events.setdefault(user, []).append((time, item))
    raise_bad_rows(
        source,
        problems,
        "Fill in or delete these rows; every row needs a user, an item"
        + (" and a timestamp (a number or an ISO date)" if time_column else "")
        + (f", and one {split_column} per user" if split_column else "")
        + ".",
    )
    return {user: _chronological(pairs) for user, pairs in events.items()}, splits


def _chronological(events: list[tuple[float, str]]) -> list[str]:
    """Items of one user's (time, item) events sorted stably by time: equal times keep the file's row order."""
    return [item for _, item in sorted(events, key=lambda event: event[0])]


def _user_order(user: str) -> tuple[int, int | str]:
    """Sort key of user ids: numeric ids numerically (so 9 comes before 10), others as strings, after them."""
    return (0, int(user)) if user.isdigit() else (1, user)


def _record_batches(path: Path, columns: list[str], rows_per_batch: int):
    """Record batches of a CSV or Parquet file's given columns, read a block at a time (CSV fields as strings)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        _check_columns(path, columns, parquet.schema_arrow.names)
        yield from parquet.iter_batches(batch_size=rows_per_batch, columns=columns)
        return
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    with open(path, newline="", encoding="utf-8") as handle:
        _check_columns(path, columns, next(csv.reader(handle), []))
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=1 << 22),
        convert_options=pa_csv.ConvertOptions(
            include_columns=columns,
            column_types={name: pa.string() for name in columns},
            strings_can_be_null=True,
        ),
    )
    yield from reader


def iter_histories(
    path: str | os.PathLike,
    user_column: str = "user",
    item_column: str = "item",
    time_column: str | None = "timestamp",
    users_per_batch: int = 1024,
) -> Iterator[tuple[list[str], list[list[str]]]]:
    """Chronological histories of a (user, item, timestamp) CSV or Parquet file, `users_per_batch` users at a
    time (user ids and their histories), in memory that does not grow with the file.

    The file must be sorted by user (numeric ids numerically, other ids as strings; a user's rows may be in any
    time order), so that a user's rows are contiguous: a user id smaller than the one before raises a `ValueError`
    (sort it first, e.g. `df.sort_values([user, timestamp], kind="stable")`). Each user's events are sorted
    stably by (timestamp, row), as in `load_interactions`; bad rows raise one `ValueError` per batch, numbered
    as data rows (the header is not counted).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    columns = [user_column, item_column] + ([time_column] if time_column else [])
    users: list[str] = []
    histories: list[list[str]] = []
    current: str | None = None
    events: list[tuple[float, str]] = []
    problems: list[tuple[str, str]] = []
    number = 0
    for batch in _record_batches(path, columns, rows_per_batch=1 << 16):
        values = [batch.column(name).to_pylist() for name in columns]
        times = values[2] if time_column else [0.0] * batch.num_rows
        for raw_user, raw_item, raw_time in zip(values[0], values[1], times, strict=True):
            number += 1
            user, item = _text(raw_user), _text(raw_item)
            time = _time(raw_time) if time_column else 0.0
            if user is None or item is None or time is None:
                missing = [
                    name for name, value in ((user_column, user), (item_column, item)) if value is None
                ]
                bad_time = (
                    [f"{time_column} {raw_time!r} is not a number or an ISO date"] if time is None else []
                )
                problems.append(
                    (f"row {number}", ", ".join([f"missing {name}" for name in missing] + bad_time))
                )
                continue
            if user != current:
                if current is not None and _user_order(user) < _user_order(current):
                    raise ValueError(
                        f"{path} is not sorted by {user_column}: row {number} has user {user!r} after {current!r}. "
                        f"Sort it by {user_column} first (numeric ids numerically), e.g. with pandas "
                        f"df.sort_values([{user_column!r}, {time_column!r}], kind='stable')."
                    )
                if current is not None:
                    users.append(current)
                    histories.append(_chronological(events))
                current, events = user, []
                if len(users) >= users_per_batch:
                    raise_bad_rows(
                        str(path), problems, "Every row needs a user, an item and a valid timestamp."
                    )
                    yield users, histories
                    users, histories = [], []
            events.append((time, item))
    if current is not None:
        users.append(current)
        histories.append(_chronological(events))
    raise_bad_rows(str(path), problems, "Every row needs a user, an item and a valid timestamp.")
    if users:
        yield users, histories


def load_interactions(
    path: str | os.PathLike,
    user_column: str = "user",
    item_column: str = "item",
    time_column: str | None = "timestamp",
    split_column: str | None = None,
):
    """Pretraining `DatasetDict` (leave-one-out splits) from a CSV or Parquet table of (user, item, timestamp) rows.

    Each user's events are sorted stably by (timestamp, row); with `time_column=None` the file order is the time
    order. Timestamps are numbers or ISO dates. Rows with a missing user, item or timestamp raise one `ValueError`
    listing their line numbers (CSV) or row numbers (Parquet). With `split_column` (values `train`,
    `validation`, `test`, the same on all of a user's rows) each user's whole history goes to their own split.
    """
    histories, splits = _read_histories(path, user_column, item_column, time_column, split_column)
    logger.info(
        f"Read {sum(map(len, histories.values())):,} interactions of {len(histories):,} users from {path}"
    )
    split_names = [splits[user] for user in histories] if split_column else None
    return pretraining_dataset(list(histories), list(histories.values()), split_names)


def load_labels(
    path: str | os.PathLike,
    interactions_path: str | os.PathLike,
    user_column: str = "user",
    label_column: str = "label",
    item_column: str = "item",
    time_column: str | None = "timestamp",
    label_names: Sequence[str] | None = None,
    seed: int = 0,
    split_column: str | None = None,
):
    """Classification `DatasetDict` joining a label table (user, label) to the histories of `interactions_path`.

    `label_names` is the fixed class order (for instance a patch's `label_names`): label ids follow it, whatever
    classes the file happens to hold. Without it the label set is the file's own distinct labels, sorted, so a
    file missing a class gives different ids: pass `label_names` whenever the ids must match a trained head.
    Rows with a missing user or label, a label outside `label_names`, a user seen twice, or a user without
    interactions (an empty sequence) raise one `ValueError` listing their line (CSV) or row (Parquet) numbers.
    Users with interactions but no label are left out of the task, and counted in the log. With `split_column` (a
    column of the label table: `train`, `validation` or `test` per user) the users keep their fixed splits;
    otherwise the seeded stratified 70/3/27 split applies.
    """
    names = checked_label_names(label_names) if label_names is not None else None
    histories, _ = _read_histories(interactions_path, user_column, item_column, time_column)
    rows, source = _read_rows(path, [user_column, label_column] + ([split_column] if split_column else []))
    labelled = [(where, _text(row[user_column]), _text(row[label_column])) for where, row in rows]
    split_of = {where: _text(row[split_column]) for where, row in rows} if split_column else {}
    if names is None:
        names = sorted({label for *_, label in labelled if label})
        logger.info(f"Label names read from {path} (sorted; pass label_names= to fix their order): {names}")
    index = {name: position for position, name in enumerate(names)}
    seen: dict[str, str] = {}
    users, labels, split_names, problems = [], [], [], []
    for where, user, label in labelled:
        if split_column and split_of[where] not in SPLIT_FRACTIONS:
            problems.append(
                (where, f"{split_column} {split_of[where]!r} is not one of {list(SPLIT_FRACTIONS)}")
            )
        elif user is None or label is None:
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
            split_names.append(split_of.get(where))
    raise_bad_rows(
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
    return classification_dataset(
        users, [histories[user] for user in users], labels, names, seed, split_names if split_column else None
    )


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
    raise_bad_rows(
        str(path),
        problems,
        "Write each line as s1,s2,...,sN,,t1,t2 with at least one source and one target item.",
    )
    return coldrec_dataset(users, sources, targets, seed)


__all__ = [
    "iter_histories",
    "load_interactions",
    "load_labels",
    "load_original_format",
]
