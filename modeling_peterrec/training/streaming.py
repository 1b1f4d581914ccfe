"""The pretraining pipeline's data when it streams an interaction log from shard files (`--train_files`,
`data.streaming`): the vocabulary pass, the stream of windows, the held-out sample, and the Trainer schedule of a
stream (each process its own files, and steps counted from the vocabulary pass)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from transformers import TrainingArguments
from transformers.utils import logging

from ..data import (
    InteractionLog,
    count_log,
    files_of_process,
    first_histories,
    pretraining_dataset,
    pretraining_stream,
)
from ..data.streaming import LogCounts
from ..registry import tcl_position
from ..tokenization_peterrec import ItemTokenizer
from .arguments import PretrainArguments
from .datasets import held_out_datasets

logger = logging.get_logger(__name__)


@dataclass
class StreamedPretrainingData:
    """What `pretrain` trains and evaluates on when it streams a log: the vocabulary, the training stream, the
    held-out rows of the first users, the counts of the vocabulary pass and the `TrainingArguments` of a stream."""

    tokenizer: ItemTokenizer
    train: object
    validation: object
    test: object
    counts: LogCounts
    training_args: TrainingArguments


def _merged_counts(
    log: InteractionLog, args: PretrainArguments, training_args: TrainingArguments
) -> LogCounts:
    """`count_log` of the whole log, each process counting its own files and the counts gathered: the vocabulary
    pass is split like the training stream, and every process ends with the same exact counts."""
    rank, world_size = training_args.process_index, training_args.world_size
    own = [log.files[index] for index in files_of_process(len(log.files), world_size, rank)]
    counts = count_log(replace(log, files=tuple(own)), args.pretraining_window, args.window_stride)
    if world_size == 1:
        return counts
    import torch.distributed as dist

    gathered: list[LogCounts | None] = [None] * world_size
    dist.all_gather_object(gathered, counts)
    merged = LogCounts()
    for part in gathered:  # in rank order, which is file order (`files_of_process` gives contiguous blocks)
        merged.item_counts.update(part.item_counts)
        merged.users += part.users
        merged.events += part.events
        merged.windows += part.windows
    return merged


def stream_schedule(training_args: TrainingArguments, num_windows: int) -> TrainingArguments:
    """`training_args` for a stream of `num_windows` windows: each process reads its own files
    (`dispatch_batches=False`, so accelerate shards the `IterableDataset` by file instead of reading it all on
    process 0 and sending batches), and a `max_steps` of `--num_train_epochs` epochs when none is given.

    An epoch is the log's windows shared evenly among the processes. Files differ in size, so a process may finish
    its files a little before or after that many steps: it goes on into its next pass, and every process takes the
    same steps (as DDP needs) without skipping a window. Evaluation and checkpoints every `"epoch"` become every
    epoch's number of steps: a per-process end of epoch would come at different steps on different processes, and
    evaluation waits for all of them.
    """
    world_size = training_args.world_size
    batches = math.ceil(num_windows / (world_size * training_args.per_device_train_batch_size))
    steps_per_epoch = max(batches // training_args.gradient_accumulation_steps, 1)
    changes: dict = {
        "accelerator_config": replace(training_args.accelerator_config, dispatch_batches=False),
        "train_sampling_strategy": "sequential",
    }
    if training_args.max_steps <= 0:
        changes["max_steps"] = math.ceil(training_args.num_train_epochs * steps_per_epoch)
    for strategy in ("eval", "save"):
        if getattr(training_args, f"{strategy}_strategy") == "epoch":
            changes.update({f"{strategy}_strategy": "steps", f"{strategy}_steps": steps_per_epoch})
    logger.info(
        f"Streaming: {steps_per_epoch:,} optimizer steps per epoch on each of {world_size} process(es), "
        f"{changes.get('max_steps', training_args.max_steps):,} in all"
    )
    return replace(training_args, **changes)


def streamed_pretraining_data(
    args: PretrainArguments, training_args: TrainingArguments
) -> StreamedPretrainingData:
    """The vocabulary (one counting pass over `args.train_files`, `--min_count` and `--max_items` as in memory),
    the shuffled stream of training windows, the held-out rows of the first `--eval_users` users (leave-one-out,
    as `data.pretraining_dataset`) and the `TrainingArguments` of the stream (`stream_schedule`)."""
    log = InteractionLog.from_patterns(
        args.train_files,
        user_column=args.user_column,
        item_column=args.item_column,
        time_column=args.time_column,
    )
    counts = _merged_counts(log, args, training_args)
    logger.info(
        f"Counted {sum(counts.events):,} events of {sum(counts.users):,} users in {len(log.files)} file(s): "
        f"{len(counts.item_counts):,} items, {sum(counts.windows):,} training windows"
    )
    tokenizer = ItemTokenizer.from_counts(
        counts.item_counts,
        min_count=args.min_count,
        max_items=args.max_items,
        tcl_position=tcl_position(args.objective == "causal"),
        model_max_length=args.max_length,
    )
    train = pretraining_stream(
        log,
        tokenizer,
        args.pretraining_window,
        args.window_stride,
        args.shuffle_buffer_size,
        training_args.seed,
    )
    validation, test = held_out_datasets(
        pretraining_dataset(*first_histories(log, args.eval_users)), tokenizer
    )
    return StreamedPretrainingData(
        tokenizer, train, validation, test, counts, stream_schedule(training_args, sum(counts.windows))
    )


__all__ = ["StreamedPretrainingData", "stream_schedule", "streamed_pretraining_data"]
