"""Pretraining on an interaction log that does not fit in memory: shard files of (user, item, timestamp) rows, read
a block at a time into user histories, cut into the pretraining windows of Section 3.2 as a `datasets`
`IterableDataset`, and counted in one pass for the item vocabulary.

The log's layout, and why: every user's rows are in one shard file, and each file is sorted by user (numeric ids
numerically; a user's rows may be in any time order, they are sorted stably by (timestamp, row) as in
`load_interactions`). A reader then holds one user's history at a time and never the log, each file is read
start to end once per pass, and files are the unit that processes (`files_of_process`) and DataLoader workers
split among themselves. This is the layout a warehouse export writes with `CLUSTER BY user SORT BY user, time`
(or `df.sort_values` per partition), and what `benchmarks/synthetic_log.py` writes. An external group-by inside
the package would cost a full extra write and read of the log on every machine for what the export does once, so
there is none: a file that is not sorted stops the stream with a `ValueError` naming the file, the row and the
two users out of order (`importers.iter_histories`). A user whose rows are split over two files cannot be
detected without holding every user id, so it is read as two users: keep each user in one file.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .importers import iter_histories
from .processing import MIN_WINDOW_LENGTH, default_stride, sliding_windows, window_starts
from .schemas import leave_one_out

LOG_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class InteractionLog:
    """An interaction log as shard files (Parquet or CSV) with a user, an item and (optionally) a timestamp column,
    every user's rows in one file, each file sorted by user (see the module docstring)."""

    files: tuple[str, ...]
    user_column: str = "user"
    item_column: str = "item"
    time_column: str | None = "timestamp"

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("An interaction log needs at least one file.")
        odd = [name for name in self.files if Path(name).suffix.lower() not in LOG_SUFFIXES]
        if odd:
            raise ValueError(
                f"{odd[:5]} are not {' or '.join(LOG_SUFFIXES)} files; give Parquet or CSV shards."
            )
        missing = [name for name in self.files if not Path(name).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[:5]} do not exist.")

    @classmethod
    def from_patterns(cls, patterns: Sequence[str | os.PathLike], **columns) -> InteractionLog:
        """The log of every file matched by `patterns` (files, folders of `.parquet`/`.csv` files, or globs such
        as `logs/part-*.parquet`), in sorted path order: the order of the stream, and of its shards."""
        files: list[str] = []
        for pattern in map(str, patterns):
            if Path(pattern).is_dir():
                matched = [
                    str(path) for path in Path(pattern).iterdir() if path.suffix.lower() in LOG_SUFFIXES
                ]
            else:
                matched = glob.glob(pattern)
            if not matched:
                raise FileNotFoundError(f"No file matches {pattern!r}.")
            files.extend(matched)
        return cls(tuple(sorted(set(files))), **columns)

    def histories(self, files: Sequence[str] | None = None) -> Iterator[tuple[str, list[str]]]:
        """`(user, chronological items)` of every user of `files` (default: all), one file after the other."""
        for path in self.files if files is None else files:
            for users, histories in iter_histories(
                path, self.user_column, self.item_column, self.time_column
            ):
                yield from zip(users, histories, strict=True)


def training_windows(ids: Sequence, window: int, stride: int) -> list[list]:
    """The pretraining rows of one user: the `sliding_windows` of the training part of the history (`leave_one_out`),
    those with at least `MIN_WINDOW_LENGTH` items."""
    return [
        piece
        for piece in sliding_windows(leave_one_out(list(ids))["train"], window, stride)
        if len(piece) >= MIN_WINDOW_LENGTH
    ]


@dataclass
class LogCounts:
    """What one pass over a log counts: the items of the training histories (what `ItemTokenizer.from_counts`
    builds the vocabulary from, as `from_sequences` does from the `train` split), and per file its users, events
    and pretraining windows (which size the epochs of each process)."""

    item_counts: Counter = field(default_factory=Counter)
    users: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)


def count_log(log: InteractionLog, window: int, stride: int | None = None) -> LogCounts:
    """Counts `log` in one pass, in memory that grows with the number of distinct items (one counter each) and not
    with the number of events: the counts are exact, so the vocabulary equals the in-memory one for any
    `min_count` and `max_items`."""
    stride = stride or default_stride(window)
    counts = LogCounts()
    for path in log.files:
        users = events = windows = 0
        for _, history in log.histories([path]):
            train = leave_one_out(history)["train"]
            counts.item_counts.update(train)
            users += 1
            events += len(history)
            if min(len(train), window) >= MIN_WINDOW_LENGTH:
                windows += len(window_starts(len(train), window, stride))
        counts.users.append(users)
        counts.events.append(events)
        counts.windows.append(windows)
    return counts


def _window_rows(
    files: list[str], log: InteractionLog, vocab: dict[str, int], unknown_id: int, window: int, stride: int
) -> Iterator[dict[str, list[int]]]:
    """The stream's generator: `{"input_ids": window}` rows of `files`, in order. Items map to ids as in
    `ItemTokenizer.encode_items` (unknown items to `[UNK]`), with a plain lookup: this runs once per event."""
    for _, history in log.histories(files):
        ids = [vocab.get(item, unknown_id) for item in history]
        for piece in training_windows(ids, window, stride):
            yield {"input_ids": piece}


def pretraining_stream(
    log: InteractionLog,
    tokenizer,
    window: int,
    stride: int | None = None,
    shuffle_buffer_size: int = 0,
    seed: int = 0,
):
    """The pretraining windows of `log` as a `datasets.IterableDataset` of `input_ids`, with one shard per file.

    The rows are those of the in-memory path, in the same order (`training.datasets.pretraining_windows` on
    `load_interactions` of the same rows): each user's training history (`leave_one_out`) cut into `window`-long
    windows every `stride` items (default half a window). With `shuffle_buffer_size > 0` the file order is
    shuffled per epoch and rows are drawn at random from a buffer of that many (`IterableDataset.shuffle`, seeded:
    the same seed and epoch give the same order). Under several processes each one reads its own files
    (`IterableDataset.shard`, which accelerate applies when `dispatch_batches=False`; `files_of_process`).
    `state_dict()`/`load_state_dict()` resume the stream at the same row (without shuffling; the content of a
    shuffle buffer is not saved, so a `Trainer` resumes by skipping the batches it has seen instead).
    """
    from datasets import Features, IterableDataset, List, Value

    stream = IterableDataset.from_generator(
        _window_rows,
        features=Features({"input_ids": List(Value("int32"))}),
        gen_kwargs={
            "files": list(log.files),
            "log": log,
            "vocab": tokenizer.get_vocab(),
            "unknown_id": tokenizer.unk_token_id,
            "window": window,
            "stride": stride or default_stride(window),
        },
    )
    return stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size) if shuffle_buffer_size > 0 else stream


def first_histories(log: InteractionLog, num_users: int) -> tuple[list[str], list[list[str]]]:
    """User ids and chronological histories of the first `num_users` users of `log` in stream order (reading only
    as far as they go): the held-out sample of a streamed pretraining run."""
    users, histories = [], []
    for user, history in log.histories():
        if len(users) == num_users:
            break
        users.append(user)
        histories.append(history)
    return users, histories


def files_of_process(num_files: int, world_size: int, rank: int) -> range:
    """Indices of the files that process `rank` of `world_size` reads: a contiguous block, the first
    `num_files % world_size` processes one file more (the rule of `datasets`' `IterableDataset.shard`)."""
    if num_files < world_size:
        raise ValueError(
            f"{num_files} file(s) cannot give each of {world_size} processes its own: write the log as at least "
            f"{world_size} shards (benchmarks/synthetic_log.py --num_shards, or your export's partition count)."
        )
    size, extra = divmod(num_files, world_size)
    start = size * rank + min(rank, extra)
    return range(start, start + size + (rank < extra))


__all__ = [
    "LOG_SUFFIXES",
    "InteractionLog",
    "LogCounts",
    "count_log",
    "files_of_process",
    "first_histories",
    "pretraining_stream",
    "training_windows",
]
