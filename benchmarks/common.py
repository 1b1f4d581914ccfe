"""Helpers shared by the benchmark scripts: the environment record, timing, the measured matmul peak, output.

Run the scripts from the repository root as modules, e.g. `python -m benchmarks.pretraining --device cuda`.
Every script prints a table and writes `benchmarks/results/<name>-<device>.json` with the device and versions.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """Device, library versions and settings, stored with every result."""
    info = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu_memory_gib": (
            round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
            if device.type == "cuda"
            else None
        ),
    }
    for name in ("transformers", "triton", "liger-kernel", "cut-cross-entropy"):
        info[name] = package_version(name)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of `fn` in seconds, measured after `warmup` calls, synchronising around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_matmul_peak(device: torch.device) -> dict:
    """Measured dense matmul rate on random data: bf16 8192^3 on GPU, fp32 2048^3 on CPU."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = time_call(lambda: a @ b, device, warmup=3, repeats=10)
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "tflops": 2 * size**3 / seconds / 1e12}


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def write_results(name: str, device: torch.device, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{device.type}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def cpuinfo() -> str:
    """/proc/cpuinfo's text (Linux), or "" where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            return info.read()
    except OSError:
        return ""


def cpu_model() -> str | None:
    """The CPU's model name (what `lscpu` prints), read from /proc/cpuinfo (Linux)."""
    return next(
        (line.split(":", 1)[1].strip() for line in cpuinfo().splitlines() if line.startswith("model name")),
        None,
    )


def write_cpu_results(name: str, run: str, fields: dict) -> Path:
    """Writes `{name}-cpu.json` for the CPU benchmark `benchmarks.{name}`: the command as run, what it ran, the
    environment with the CPU's model, and `fields`."""
    payload = {
        "command": " ".join([f"python -m benchmarks.{name}", *sys.argv[1:]]),
        "run": run,
        "environment": {**environment(torch.device("cpu")), "cpu_model": cpu_model()},
        **fields,
    }
    return write_results(name, torch.device("cpu"), payload)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of `rows` restricted to `columns`; floats get 4 significant digits."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)
