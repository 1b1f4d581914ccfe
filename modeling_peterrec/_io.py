"""Crash-safe writes: a file or a whole folder (a backbone, a patch) is either its complete old or its complete new
version at every instant, even if the writer is killed.

Files: a temporary sibling, fsynced, then `os.replace`.

Folders: `atomic_folder` yields a staging sibling `.{name}.staging-<pid>-<token>`; once the block ends it swaps
staging and folder in one `renameat2(RENAME_EXCHANGE)` (Linux >= 3.15 on ext4, xfs, btrfs, tmpfs...) and deletes
what was swapped out. Where the exchange is not available it moves the old folder aside to
`.{name}.old-<pid>-<token>`, renames staging in, then deletes the aside copy; a writer killed between those two
renames leaves no folder, and the next `atomic_folder` (or `recover_folder`) puts the aside copy back. Folders on
their way out are first renamed to `.{name}.trash-<pid>-<token>`, so a half-deleted tree never carries a name
that recovery would trust. Leftovers of writers that are gone (pid not alive, or older than `STALE_AFTER_S`) are
deleted by the next save; those of live writers are left alone.

fsync: kill -9 alone loses nothing that reached the page cache, but a power loss does. So files are fsynced before
they are renamed into place (a rename must never point at unwritten data) and the parent folder is fsynced after
the rename (so the rename itself survives).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

STAGING, ASIDE, TRASH = "staging", "old", "trash"
# A leftover older than this is deleted even if its pid is alive again (pids get reused).
STALE_AFTER_S = 24 * 3600

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# renameat2 syscall numbers, for a libc without the wrapper (glibc < 2.28, some musl builds).
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "riscv64": 276}


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a fsynced temporary sibling and `os.replace`: readers see the old or the new
    content, never a mix, and an exception leaves the old file and no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(path, "tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Writes `payload` as indented, key-sorted JSON with `write_bytes`."""
    write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file at `path`, read in 1 MiB blocks (what a saved or downloaded file is
    checked against)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty staging folder next to `folder`; once the block ends without error, `folder` becomes the
    staging content in one atomic step. On an exception the staging folder is removed and `folder` is untouched."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    staging = _sibling(folder, STAGING)
    os.mkdir(staging)
    try:
        yield staging
        _sync_tree(staging)
        _replace(staging, folder)
    except BaseException:
        if staging.exists():
            _discard(folder, staging)
        raise


def recover_folder(folder: str | os.PathLike) -> None:
    """Puts `folder` back from its aside copy if a writer died between moving it aside and moving the new one in,
    then deletes staging, aside and trash folders left by writers that are gone."""
    folder = Path(folder)
    leftovers = _dead_leftovers(folder)
    asides = [path for path in leftovers if _kind(folder, path) == ASIDE]
    if asides and not folder.exists():
        newest = max(asides, key=lambda path: path.stat().st_ctime)
        _rename(newest, folder)
        _fsync_dir(folder.parent)
        leftovers.remove(newest)
    for path in leftovers:
        _discard(folder, path)


def leftovers(folder: str | os.PathLike) -> list[Path]:
    """Staging, aside and trash siblings of `folder`, of live and dead writers alike."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return []
    return sorted(path for path in folder.parent.iterdir() if _kind(folder, path) is not None)


# ---------------------------------------------------------------------------------------------------------------
# Replacement steps (separate functions so that tests can crash the writer before or after each one)
# ---------------------------------------------------------------------------------------------------------------


def _replace(staging: Path, folder: Path) -> None:
    if not folder.exists():
        _rename(staging, folder)
        _fsync_dir(folder.parent)
        return
    if _exchange(staging, folder):
        _fsync_dir(folder.parent)
        _discard(folder, staging)  # holds the old content now
        return
    aside = _sibling(folder, ASIDE)
    _rename(folder, aside)
    try:
        _rename(staging, folder)
    except BaseException:
        _rename(aside, folder)
        raise
    _fsync_dir(folder.parent)
    _discard(folder, aside)


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two paths in one step; False where the OS or the filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(os.fsencode(first), os.fsencode(second)) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def _rename(source: Path, target: Path) -> None:
    os.rename(source, target)


def _discard(folder: Path, path: Path) -> None:
    """Deletes a leftover of `folder` under a trash name, so a delete cut short never leaves a partial tree under a
    name that recovery trusts."""
    if _kind(folder, path) != TRASH:
        trash = _sibling(folder, TRASH)
        _rename(path, trash)
        path = trash
    _remove_tree(path)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync there; NTFS journals renames
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_tree(root: Path) -> None:
    for current, _, files in os.walk(root):
        for name in files:
            descriptor = os.open(os.path.join(current, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_dir(Path(current))


# ---------------------------------------------------------------------------------------------------------------
# Names of staging, aside and trash folders; which of them belong to writers that are gone
# ---------------------------------------------------------------------------------------------------------------


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _kind(folder: Path, path: Path) -> str | None:
    match = re.fullmatch(rf"\.{re.escape(folder.name)}\.({STAGING}|{ASIDE}|{TRASH})-\d+-[0-9a-f]+", path.name)
    return match.group(1) if match else None


def _dead_leftovers(folder: Path) -> list[Path]:
    dead = []
    for path in leftovers(folder):
        pid = int(path.name.rsplit("-", 2)[1])
        try:
            age = time.time() - path.lstat().st_ctime
        except FileNotFoundError:  # a live writer just renamed or deleted it
            continue
        if not _alive(pid) or age > STALE_AFTER_S:
            dead.append(path)
    return dead


def _alive(pid: int) -> bool:
    if (
        pid == os.getpid() or os.name == "nt"
    ):  # on Windows os.kill(pid, 0) would terminate it; age decides there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@cache
def _renameat2() -> Callable[[bytes, bytes], int] | None:
    """`renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)` through libc, or through `syscall` with this
    architecture's number; None off Linux."""
    if platform.system() != "Linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2"):
        function = libc.renameat2
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return lambda first, second: function(_AT_FDCWD, first, _AT_FDCWD, second, _RENAME_EXCHANGE)
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None or not hasattr(libc, "syscall"):
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda first, second: syscall(
        ctypes.c_long(number),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(first),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(second),
        ctypes.c_uint(_RENAME_EXCHANGE),
    )
