"""Kill -9 a process that keeps re-saving a folder with `atomic_folder`, at random moments, and count what each kill
left: the folder missing, the folder incomplete (a file missing, extra or not matching the checksums written inside),
and staging/aside/trash folders still there after the next save.

    python benchmarks/kill_saves.py --iterations 300 [--fallback]

`--fallback` forces the rename-aside path used where `renameat2(RENAME_EXCHANGE)` is unavailable. The writer loads
`modeling_peterrec/_io.py` by path (stdlib only, so it starts in milliseconds) and reports each finished save; the
kill comes at a random moment within about two save durations after its first one, so it lands anywhere in a save.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

IO_MODULE = Path(__file__).resolve().parents[1] / "modeling_peterrec" / "_io.py"
MANIFEST = "MANIFEST.json"
WEIGHTS_BYTES = 1 << 20


def load_io(fallback: bool = False) -> ModuleType:
    spec = importlib.util.spec_from_file_location("peterrec_io", IO_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if fallback:
        module._exchange = lambda first, second: False
    return module


def save_version(io: ModuleType, folder: Path, version: int) -> None:
    """A patch-like folder: a ~1 MB weights file, a config, a nested card, and the checksums of all of them."""
    files = {
        "weights.bin": random.randbytes(WEIGHTS_BYTES),
        "config.json": json.dumps({"version": version}).encode(),
        "card/README.md": f"version {version}\n".encode() * (1 + version % 7),
    }
    with io.atomic_folder(folder) as staging:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        (staging / MANIFEST).write_text(json.dumps(manifest))


def state(folder: Path) -> str:
    """ "missing", "incomplete" or "complete" (exactly the files the manifest lists, with its checksums)."""
    if not folder.is_dir():
        return "missing"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "incomplete"
    present = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
    if present != set(manifest) | {MANIFEST}:
        return "incomplete"
    for name, digest in manifest.items():
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
            return "incomplete"
    return "complete"


def version(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["version"]


def kill_loop(
    folder: Path, iterations: int, fallback: bool = False, max_seconds: float | None = None, seed: int = 0
) -> Counter:
    """Starts a writer, kills it after a random delay, checks the folder and saves once more here, `iterations`
    times or until `max_seconds`. Counts the folder states after the kills, the saves that left staging, aside or
    trash folders behind, and those still there at the end."""
    rng = random.Random(seed)
    io = load_io(fallback)
    started = time.monotonic()
    save_version(io, folder, 0)
    save_seconds = time.monotonic() - started
    counts: Counter = Counter()
    deadline = time.monotonic() + max_seconds if max_seconds else float("inf")
    command = [sys.executable, "-S", __file__, "--writer", str(folder)] + (["--fallback"] if fallback else [])
    while counts["kills"] < iterations and time.monotonic() < deadline:
        writer = subprocess.Popen(command, stdout=subprocess.PIPE)
        writer.stdout.readline()  # its first save is done: from here on every kill lands inside a save
        time.sleep(rng.uniform(0, 2 * save_seconds))
        writer.kill()
        writer.stdout.close()
        writer.wait()  # reaped, so its pid is gone and its leftovers count as stale
        counts["kills"] += 1
        counts[state(folder)] += 1
        counts["writer_finished_a_save"] += state(folder) == "complete" and version(folder) > 0
        save_version(io, folder, -1)
        counts["saves_leaving_leftovers"] += bool(io.leftovers(folder))
    counts["leftovers_at_end"] = len(io.leftovers(folder))
    return counts


def writer(folder: Path, fallback: bool) -> None:
    io = load_io(fallback)
    version = 1
    while True:
        save_version(io, folder, version)
        print(version, flush=True)
        version += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--fallback", action="store_true")
    parser.add_argument("--writer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.writer, args.fallback)
        return
    with tempfile.TemporaryDirectory() as root:
        started = time.monotonic()
        counts = kill_loop(Path(root) / "patch", args.iterations, args.fallback)
    path = "rename-aside fallback" if args.fallback else "renameat2 exchange"
    print(
        f"{counts['kills']} kills ({path}, {time.monotonic() - started:.1f} s): "
        f"folder missing {counts['missing']}, incomplete {counts['incomplete']}, "
        f"complete {counts['complete']} (new content in {counts['writer_finished_a_save']}); saves leaving leftovers {counts['saves_leaving_leftovers']}, "
        f"leftovers at the end {counts['leftovers_at_end']}"
    )


if __name__ == "__main__":
    main()
