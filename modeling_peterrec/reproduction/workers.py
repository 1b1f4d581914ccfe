"""The reproduction's independent pieces of work in worker processes (`peterrec reproduce --jobs N`).

A reproduction is a list of backbones, then of configurations that each depend only on their backbone: every
configuration's selection, seeds and run folders are its own (`Reproduction.configuration_result`). With `jobs`
workers the backbones pretrain side by side, then the configurations fine-tune side by side, each worker with
`threads` intra-op threads. One worker per core with one thread each gets more out of a small CPU machine than one
process with several threads: a fine-tuning step of the cpu preset is too small to keep two threads busy
(docs/reproduction.md has the measured times).

Workers start with `spawn` (a fork after PyTorch's thread pool has started can hang) and receive the runner once;
the parent loads every task first, so that no two workers build the same data cache at once.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import torch

from .._logging import configure_command_logging
from ..allocator import keep_freed_memory

_runner: Any = None
"""The worker process's copy of the parent's `Reproduction` (set once by `_start`)."""


def _start(runner: Any, threads: int) -> None:
    global _runner
    _runner = runner
    torch.set_num_threads(threads)
    configure_command_logging()
    keep_freed_memory()


def _call(method: str, argument: Any) -> Any:
    return getattr(_runner, method)(argument)


def map_runner(runner: Any, method: str, arguments: Sequence[Any], jobs: int, threads: int) -> list[Any]:
    """`[runner.method(argument) for argument in arguments]`, in that order, computed by up to `jobs` worker
    processes (in this process when `jobs` is 1 or there is one argument)."""
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs and threads must be at least 1, got {jobs} and {threads}.")
    if jobs == 1 or len(arguments) <= 1:
        return [getattr(runner, method)(argument) for argument in arguments]
    with ProcessPoolExecutor(
        min(jobs, len(arguments)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(runner, threads),
    ) as pool:
        return list(pool.map(partial(_call, method), arguments))
