"""The reproduction's independent pieces of work in worker processes (`peterrec reproduce --jobs N`).

A reproduction is a list of backbones, then of configurations that each depend only on their backbone: every
configuration's selection, seeds and run folders are its own (`Reproduction.configuration_result`). With `jobs`
workers the backbones pretrain side by side, then the configurations fine-tune side by side, each worker with
`threads` intra-op threads. One worker per core with one thread each gets more out of a small CPU machine than one
process with several threads: a fine-tuning step of the cpu preset is too small to keep two threads busy
(docs/reproduction.md has the measured times).

Workers start with `spawn` (a fork after PyTorch's thread pool has started can hang) and receive the runner once;
the parent loads every task first, so that no two workers build the same data cache at once. A worker ends itself
when its parent is gone: a parent killed outright (SIGTERM, SIGKILL) cannot stop its pool, and an orphaned worker
would go on training into the run folders of the next reproduction started there.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

import torch

from .._logging import configure_command_logging
from ..allocator import keep_freed_memory

_runner: Any = None
"""The worker process's copy of the parent's `Reproduction` (set once by `_start`)."""


PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that its parent is still there."""


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _start(runner: Any, threads: int) -> None:
    global _runner
    _runner = runner
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(threads)
    configure_command_logging()
    keep_freed_memory()


def _call(method: str, argument: Any) -> Any:
    return getattr(_runner, method)(argument)


def map_in_stages(
    runner: Any,
    method: str,
    arguments: Sequence[Any],
    then_method: str,
    then_arguments: Sequence[tuple[Any, Any]],
    jobs: int,
    threads: int,
) -> tuple[list[Any], list[Any]]:
    """`[runner.method(a) for a in arguments]` and `[runner.then_method(b) for _, b in then_arguments]`, in those
    orders, computed by up to `jobs` worker processes (in this process, one after another, when `jobs` is 1).

    `then_arguments` pairs each second-stage argument with the first-stage argument whose call it needs (a
    configuration with its backbone): it starts as soon as that call has finished, not when all have. The masked
    backbone pretrains faster than the causal one, and its configurations fill the core it frees."""
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs and threads must be at least 1, got {jobs} and {threads}.")
    if jobs == 1:
        return (
            [getattr(runner, method)(argument) for argument in arguments],
            [getattr(runner, then_method)(argument) for _, argument in then_arguments],
        )
    with ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(runner, threads),
    ) as pool:
        first = {pool.submit(_call, method, argument): index for index, argument in enumerate(arguments)}
        first_results: list[Any] = [None] * len(arguments)
        then_futures: list[Future | None] = [None] * len(then_arguments)
        for future in as_completed(first):
            index = first[future]
            first_results[index] = future.result()
            for position, (needed, argument) in enumerate(then_arguments):
                if needed == arguments[index]:
                    then_futures[position] = pool.submit(_call, then_method, argument)
        return first_results, [future.result() for future in then_futures]
