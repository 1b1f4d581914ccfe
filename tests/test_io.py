"""Crash-safe writes (SPEC §7): a folder or file is its complete old or complete new version after a crash at any
step of a save, and the next save cleans what the crash left."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.kill_saves import kill_loop, load_io, save_version, state, version
from modeling_peterrec import _io
from modeling_peterrec._io import (
    atomic_folder,
    leftovers,
    recover_folder,
    sha256_file,
    write_bytes,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]

# Runs one save of version 1 in a fresh process that dies (os._exit, like kill -9: no cleanup runs) before,
# during or after the nth call of one replacement step.
CRASHING_SAVE = """
import os, shutil, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from benchmarks.kill_saves import load_io, save_version
folder, step, nth, when, fallback = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"
io = load_io(fallback)
original = getattr(io, step)
calls = 0

def crashing(*args):
    global calls
    calls += 1
    if calls == nth and when == "before":
        os._exit(9)
    if calls == nth and when == "during":  # half of the tree gone, or half of the staging written
        os.remove(next(path for path in Path(args[-1]).rglob("*") if path.is_file()))
        os._exit(9)
    result = original(*args)
    if calls == nth and when == "after":
        os._exit(9)
    return result

setattr(io, step, crashing)
save_version(io, folder, 1)
os._exit(0)
"""

# (step, nth call, when, version found afterwards); the exchange path replaces an existing folder.
EXCHANGE_POINTS = [
    ("_sync_tree", 1, "before", 0),
    ("_sync_tree", 1, "during", 0),
    ("_exchange", 1, "before", 0),
    ("_exchange", 1, "after", 1),
    ("_rename", 1, "before", 1),  # old content, swapped out, on its way to the trash name
    ("_rename", 1, "after", 1),
    ("_remove_tree", 1, "before", 1),
    ("_remove_tree", 1, "during", 1),
    ("_remove_tree", 1, "after", 1),
]
# Fallback: 1st rename moves the old folder aside, 2nd moves staging in, 3rd moves the aside copy to the trash.
FALLBACK_POINTS = [
    ("_sync_tree", 1, "during", 0),
    ("_rename", 1, "before", 0),
    ("_rename", 1, "after", 0),  # the only moment without a folder; recovery puts the aside copy back
    ("_rename", 2, "before", 0),
    ("_rename", 2, "after", 1),
    ("_rename", 3, "before", 1),
    ("_rename", 3, "after", 1),
    ("_remove_tree", 1, "during", 1),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


def crash_save(folder: Path, step: str, nth: int, when: str, fallback: bool) -> None:
    command = [sys.executable, "-S", "-c", CRASHING_SAVE, str(ROOT), str(folder), step, str(nth), when]
    result = subprocess.run(command + ["1" if fallback else "0"], capture_output=True, text=True)
    assert result.returncode == 9, result.stderr  # it did crash at that point


def assert_next_save_cleans(folder: Path) -> None:
    save_version(load_io(), folder, 2)
    assert state(folder) == "complete" and version(folder) == 2
    assert leftovers(folder) == []


@pytest.mark.parametrize("step,nth,when,expected", EXCHANGE_POINTS)
def test_exchange_crash_leaves_old_or_new_folder(tmp_path, step, nth, when, expected):
    folder = tmp_path / "patch"
    save_version(load_io(), folder, 0)
    old = snapshot(folder)
    crash_save(folder, step, nth, when, fallback=False)
    assert state(folder) == "complete" and version(folder) == expected
    if expected == 0:
        assert snapshot(folder) == old
    assert_next_save_cleans(folder)


@pytest.mark.parametrize("step,nth,when,expected", FALLBACK_POINTS)
def test_fallback_crash_is_recovered_to_old_or_new_folder(tmp_path, step, nth, when, expected):
    folder = tmp_path / "patch"
    save_version(load_io(), folder, 0)
    old = snapshot(folder)
    crash_save(folder, step, nth, when, fallback=True)
    recover_folder(folder)
    assert state(folder) == "complete" and version(folder) == expected
    if expected == 0:
        assert snapshot(folder) == old
    assert all(".trash-" not in path.name and ".staging-" not in path.name for path in leftovers(folder))
    assert_next_save_cleans(folder)


@pytest.mark.parametrize("when,exists", [("before", False), ("after", True)])
def test_first_save_crash_leaves_no_folder_or_the_new_one(tmp_path, when, exists):
    folder = tmp_path / "patch"
    crash_save(folder, "_rename", 1, when, fallback=False)
    assert folder.exists() == exists
    if exists:
        assert state(folder) == "complete" and version(folder) == 1
    assert_next_save_cleans(folder)


def test_exception_in_block_keeps_old_folder_and_removes_staging(tmp_path):
    folder = tmp_path / "patch"
    save_version(load_io(), folder, 0)
    old = snapshot(folder)
    with pytest.raises(RuntimeError), atomic_folder(folder) as staging:
        (staging / "weights.bin").write_bytes(b"partial")
        raise RuntimeError("serialisation failed")
    assert snapshot(folder) == old
    assert leftovers(folder) == []


def test_exchange_swaps_folders_on_linux(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "x").write_text("a")
    if not _io._exchange(first, second):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (second / "x").read_text() == "a" and not (first / "x").exists()


def test_live_writers_leftovers_are_kept_dead_ones_removed(tmp_path, monkeypatch):
    folder = tmp_path / "patch"
    dead = subprocess.run([sys.executable, "-S", "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    live = tmp_path / f".patch.staging-{os.getpid()}-0123abcd"
    gone = tmp_path / f".patch.staging-{dead_pid}-4567abcd"
    unrelated = tmp_path / ".patch.staging-notes"
    for path in (live, gone, unrelated):
        path.mkdir()
    with atomic_folder(folder) as staging:
        (staging / "x").write_text("new")
    assert live.exists() and unrelated.exists() and not gone.exists()
    monkeypatch.setattr(_io, "STALE_AFTER_S", -1)  # pid reused: age decides
    recover_folder(folder)
    assert not live.exists() and unrelated.exists()


def test_random_kills_never_leave_a_missing_or_partial_folder(tmp_path):
    counts = kill_loop(tmp_path / "patch", iterations=40, max_seconds=3.0, seed=1)
    assert counts["kills"] >= 3
    assert counts["complete"] == counts["kills"]
    assert counts["writer_finished_a_save"] == counts["kills"]  # each kill interrupted a re-save
    assert counts["saves_leaving_leftovers"] == 0 and counts["leftovers_at_end"] == 0


def test_random_kills_on_the_fallback_path_lose_nothing(tmp_path):
    counts = kill_loop(tmp_path / "patch", iterations=20, fallback=True, max_seconds=1.5, seed=2)
    assert counts["incomplete"] == 0
    assert counts["saves_leaving_leftovers"] == 0 and counts["leftovers_at_end"] == 0


def test_write_json_is_exact_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_json(path, {"b": 1, "a": [1.5, "x"]})
    assert path.read_text() == '{\n  "a": [\n    1.5,\n    "x"\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1.5, "x"], "b": 1}


def test_write_bytes_keeps_old_file_on_failure_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "ml-1m.inter"
    write_bytes(path, b"old")
    write_bytes(path, b"new\x00bytes")
    assert path.read_bytes() == b"new\x00bytes"

    def failing_fsync(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_bytes(path, b"x" * 100_000)
    assert path.read_bytes() == b"new\x00bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["ml-1m.inter"]


def test_sha256_file_hashes_the_whole_file_across_read_blocks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
