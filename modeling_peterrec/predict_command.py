"""Batch prediction from file to file (`peterrec predict`): users' histories in, recommendations or class
predictions out, streamed a batch of users at a time so that memory does not grow with the file.

Input: a CSV or Parquet interaction log (user, item, timestamp), sorted by user (see
`data.importers.iter_histories`), or a saved `datasets` folder with `user_id` and `items` columns. Output, chosen by
the suffix: CSV, Parquet or JSON Lines (`.jsonl`), in one of two layouts:

- recommendations (next-item and ColdRec ranking heads): one row per (user, rank): `user`, `rank` (1 = best),
  `item`, `score`;
- predictions (classification heads): one row per user: `user`, `label`, `score` (its probability) and
  `probability_<class>` for each class.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig

from .data.importers import iter_histories
from .inference import Runner, class_probabilities, head_serving, top_k
from .model_types import backbone_class, model_type_of, pretraining_model_class
from .saving import load_patch
from .tokenization_peterrec import ItemTokenizer

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".parquet", ".jsonl")


@dataclass
class PredictArguments:
    """Arguments of `peterrec predict` (`HfArgumentParser`-ready)."""

    model_name_or_path: str = field(
        metadata={"help": "Backbone or pretraining-model folder (or Hub repo id) with its tokenizer."}
    )
    input_file: str = field(
        metadata={
            "help": "CSV/Parquet of (user, item, timestamp) rows sorted by user, or a saved datasets folder."
        }
    )
    output_file: str = field(metadata={"help": "Where to write: .csv, .parquet or .jsonl."})
    patch: str | None = field(
        default=None,
        metadata={"help": "Patch folder (or Hub repo id); without it the pretraining head recommends."},
    )
    top_k: int = field(default=10, metadata={"help": "Items per user (recommendations)."})
    exclude_seen: bool = field(
        default=True, metadata={"help": "Never recommend an item of the user's history."}
    )
    batch_size: int = field(default=256, metadata={"help": "Users per forward pass (and per read)."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest input; default: each task's fine-tuning length (the patch records it), else the "
            "tokenizer's model_max_length."
        },
    )
    user_column: str = field(default="user", metadata={"help": "User column of a CSV/Parquet input."})
    item_column: str = field(default="item", metadata={"help": "Item column of a CSV/Parquet input."})
    time_column: str = field(
        default="timestamp",
        metadata={"help": "Time column of a CSV/Parquet input; '' when rows are in time order."},
    )
    split: str = field(default="test", metadata={"help": "Split of a datasets folder holding a DatasetDict."})
    allow_unknown_items: bool = field(
        default=False, metadata={"help": "Go on when most items are outside the vocabulary (only warn)."}
    )
    device: str | None = field(default=None, metadata={"help": "Default: cuda when available, else cpu."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def load_for_prediction(model_name_or_path: str, patch: str | None = None):
    """The model that `run_predict` serves and its tokenizer, for the model type that the folder's `config.json`
    names (`registry.MODEL_TYPES`): the backbone with the patch, or without a patch the pretraining model (next-item
    for a causal backbone, masked-item otherwise). Item texts saved with the folder (and items added by text) come
    with it."""
    tokenizer = ItemTokenizer.from_pretrained(model_name_or_path)
    config = AutoConfig.from_pretrained(model_name_or_path)
    if patch is not None:
        backbone = backbone_class(model_type_of(config)).from_pretrained(model_name_or_path)
        return load_patch(patch, backbone), tokenizer
    return pretraining_model_class(config).from_pretrained(model_name_or_path).eval(), tokenizer


def read_users(args: PredictArguments) -> Iterator[tuple[list[str], list[list[str]]]]:
    """(user ids, histories) batches of the input, `args.batch_size` users each."""
    path = Path(args.input_file)
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        dataset = load_from_disk(str(path))
        if isinstance(dataset, DatasetDict):
            dataset = dataset[args.split]
        for batch in dataset.iter(batch_size=args.batch_size):
            yield [str(user) for user in batch["user_id"]], batch["items"]
        return
    yield from iter_histories(
        path, args.user_column, args.item_column, args.time_column or None, users_per_batch=args.batch_size
    )


class TableWriter:
    """Appends column batches to a CSV, Parquet or JSON Lines file, written beside the target and moved into place
    by `close`, so a failed run never leaves a half-written file under the output name."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"{self.path}: the output must end in one of {list(OUTPUT_FORMATS)}.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self._writer = None
        self._handle = None

    def write(self, columns: dict[str, list]) -> None:
        import pyarrow as pa

        table = pa.table(columns)
        if self.format == ".jsonl":
            self._handle = self._handle or open(self.partial, "w", encoding="utf-8")
            self._handle.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
        elif self._writer is None:
            if self.format == ".parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.partial, table.schema)
            else:
                from pyarrow import csv as pa_csv

                self._writer = pa_csv.CSVWriter(self.partial, table.schema)
        if self._writer is not None:
            self._writer.write_table(table)

    def close(self) -> Path:
        for resource in (self._writer, self._handle):
            if resource is not None:
                resource.close()
        if self._writer is None and self._handle is None:
            self.partial.write_text("")
        os.replace(self.partial, self.path)
        return self.path


def _recommendation_rows(users: list[str], results) -> dict[str, list]:
    columns: dict[str, list] = {"user": [], "rank": [], "item": [], "score": []}
    for user, result in zip(users, results, strict=True):
        for rank, (item, score) in enumerate(zip(result.items, result.scores, strict=True), start=1):
            for name, value in zip(columns, (user, rank, item, score), strict=True):
                columns[name].append(value)
    return columns


def _prediction_rows(users: list[str], predictions) -> dict[str, list]:
    columns = {
        "user": users,
        "label": [prediction.label for prediction in predictions],
        "score": [prediction.score for prediction in predictions],
    }
    for name in predictions[0].probabilities:
        columns[f"probability_{name}"] = [prediction.probabilities[name] for prediction in predictions]
    return columns


def run_predict(args: PredictArguments) -> dict:
    """Reads the users of `args.input_file`, writes their recommendations (item heads) or predictions
    (classification heads) to `args.output_file`; returns a summary (users, rows written, output path).

    The unknown-item share is checked on the first batch (`ItemTokenizer.check_unknown_items`).
    """
    if args.top_k < 1 or args.batch_size < 1:
        raise ValueError(f"top_k and batch_size must be positive, got {args.top_k} and {args.batch_size}.")
    model, tokenizer = load_for_prediction(args.model_name_or_path, args.patch)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    recommends = head_serving(model).recommends
    runner = Runner(model, tokenizer, max_length=args.max_length, recommends=recommends)
    spec = next(iter(runner.tasks.values()))
    writer = TableWriter(args.output_file)
    users_read = rows_written = 0
    with tqdm(unit=" users", disable=not args.progress, desc="predict") as progress:
        for users, histories in read_users(args):
            if users_read == 0:
                tokenizer.check_unknown_items(histories, allow_unknown_items=args.allow_unknown_items)
            _, _, scores = next(runner.score(histories))
            if recommends:
                no_lists = [None] * len(users)
                results = top_k(
                    scores, spec.outputs, histories, args.top_k, args.exclude_seen, no_lists, no_lists
                )
                columns = _recommendation_rows(users, results)
            else:
                columns = _prediction_rows(users, class_probabilities(scores, spec.outputs))
            writer.write(columns)
            users_read += len(users)
            rows_written += len(columns["user"])
            progress.update(len(users))
    path = writer.close()
    logger.info(f"Wrote {rows_written:,} rows for {users_read:,} users to {path}")
    return {"users": users_read, "rows": rows_written, "output_file": str(path)}


__all__ = [
    "OUTPUT_FORMATS",
    "PredictArguments",
    "TableWriter",
    "load_for_prediction",
    "read_users",
    "run_predict",
]
