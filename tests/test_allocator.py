"""The commands' processes keep freed memory in their heap (`allocator.keep_freed_memory`, glibc only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from modeling_peterrec import allocator

LIBC = ctypes.util.find_library("c")
GLIBC = LIBC is not None and hasattr(ctypes.CDLL(LIBC), "gnu_get_libc_version")

# In a fresh interpreter: where a 64 MiB block comes from (the mmapped bytes it adds, glibc's `mallinfo2().hblkhd`)
# and how much heap is left after it is freed (`arena`), before and after `keep_freed_memory`.
PROBE = """
import ctypes, ctypes.util, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])  # without importing the package (torch)
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 64 * 2**20
def probe():
    mapped = libc.mallinfo2().hblkhd
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    mapped = libc.mallinfo2().hblkhd - mapped
    libc.free(block)
    return {"mapped": mapped, "heap_after_free": libc.mallinfo2().arena}
before = probe()
kept = allocator.keep_freed_memory()
print(json.dumps({"before": before, "kept": kept, "after": probe()}))
"""


def run_probe(**environment: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, allocator.__file__],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **environment},
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="the allocator settings are glibc's")
def test_large_blocks_stay_in_the_heap_once_kept():
    result = run_probe()
    assert result["before"]["mapped"] >= 64 * 2**20  # glibc's default: a block this large is mmapped
    assert result["kept"] is True
    assert result["after"]["mapped"] == 0
    assert result["after"]["heap_after_free"] >= 64 * 2**20  # freed, but not handed back


@pytest.mark.skipif(not GLIBC, reason="the allocator settings are glibc's")
def test_the_switch_leaves_the_allocator_as_it_is():
    result = run_probe(**{allocator.SWITCH_VARIABLE: "0"})
    assert result["kept"] is False
    assert result["after"]["mapped"] >= 64 * 2**20
