"""How the commands' processes keep freed memory: in their own heap, rather than handing it back to the system.

glibc's `malloc` serves each block of more than 128 KiB-32 MiB (its threshold adapts) with a fresh `mmap` and
returns it to the system on `free`, and trims the heap's free top above twice that. A training step allocates
and frees tensors of tens of megabytes (at the cpu preset, 64 histories of 400 items, hidden 64: 20 MB for each
convolution's im2col input) whose shapes change from step to step, so steps keep paying page faults on fresh
memory, and on a virtual machine a page fault costs more than the arithmetic at this hidden size. Keeping freed
blocks in the heap made a ColdRec fine-tuning run of the cpu preset 1.3x faster on one thread, with identical
results (docs/performance.md, CPU section); the price is that the process keeps its peak memory until it exits.

`peterrec` commands, the reproduction's worker processes and the example scripts call `keep_freed_memory` at start;
`PETERREC_KEEP_FREED_MEMORY=0` turns it off. Other C libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

SWITCH_VARIABLE = "PETERREC_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""`mallopt` parameters (glibc's malloc.h)."""
LARGEST_SETTING = 2**31 - 1
"""`mallopt` takes an `int`: no block below 2 GiB is mmapped, and the heap's top is never trimmed below it."""


def keep_freed_memory() -> bool:
    """Makes glibc keep freed blocks in the process's heap (no `mmap` per large tensor, no trimming); returns
    whether it did (False without glibc or with `PETERREC_KEEP_FREED_MEMORY=0`)."""
    if os.environ.get(SWITCH_VARIABLE, "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    done = all(libc.mallopt(option, LARGEST_SETTING) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
    if not done:
        logger.warning("glibc refused the allocator settings; freed memory is handed back as usual.")
    return done
