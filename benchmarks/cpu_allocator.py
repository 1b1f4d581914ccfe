"""A fine-tuning run on CPU with glibc's default allocator against `keep_freed_memory` (modeling_peterrec/allocator.py).

The run is the reproduction's own (`Reproduction.run`): the `cpu` preset's ColdRec FineAll with the [TCL] readout
(RQ1) on its causal backbone, for a fraction of the preset's epochs, tuned on the validation split. The allocator
setting is a property of the process and cannot be undone, so every measurement is a fresh process (`--child`),
the two settings taking turns round by round; the validation metrics must come out identical.

Synthetic steps of one fixed shape do not show the difference (glibc's adaptive mmap threshold settles on a
shape that repeats); the real run's batches of varying lengths, evaluation batches of 256 and data pipeline do.

    peterrec reproduce --preset cpu --rq 1 --tasks coldrec --seeds 0 --work_dir runs/cpu   # builds the backbone
    python -m benchmarks.cpu_allocator --work_dir runs/cpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from modeling_peterrec import keep_freed_memory
from modeling_peterrec.allocator import SWITCH_VARIABLE
from modeling_peterrec.reproduction.plan import PRESETS, Configuration
from modeling_peterrec.reproduction.runner import Reproduction

from .common import format_table, write_cpu_results

SETTINGS = {"glibc default": "0", "keep_freed_memory": "1"}
"""The value of `PETERREC_KEEP_FREED_MEMORY` in the measured process."""
CONFIGURATION = Configuration("coldrec", "fine_all")


def child(work_dir: Path, epochs: float, output_dir: Path) -> dict:
    """One timed run in this process, with the allocator as `PETERREC_KEEP_FREED_MEMORY` says."""
    torch.set_num_threads(1)
    kept = keep_freed_memory()
    preset = replace(PRESETS["cpu"], coldrec_epochs=epochs)
    started = time.perf_counter()
    summary = Reproduction(preset, work_dir).run(
        CONFIGURATION, 0, preset.learning_rate, output_dir, "validation"
    )
    return {
        "kept": kept,
        "wall_s": time.perf_counter() - started,
        "train_runtime_s": summary["train_runtime_s"],
        "validation": summary["validation"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work_dir", required=True, help="A cpu-preset reproduction folder with its backbone."
    )
    parser.add_argument("--epochs", type=float, default=0.4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work_dir = Path(args.work_dir).resolve()
    if args.child is not None:
        print(json.dumps(child(work_dir, args.epochs, Path(args.child))))
        return
    measured = {setting: [] for setting in SETTINGS}
    for round_index in range(args.rounds):
        for setting, switch in SETTINGS.items():
            output_dir = work_dir / "benchmark-allocator" / f"{switch}-{round_index}"
            shutil.rmtree(output_dir, ignore_errors=True)
            command = [sys.executable, "-m", "benchmarks.cpu_allocator", "--work_dir", str(work_dir)]
            command += ["--epochs", str(args.epochs), "--child", str(output_dir)]
            done = subprocess.run(
                command,
                env={**os.environ, SWITCH_VARIABLE: switch, "OMP_NUM_THREADS": "1"},
                capture_output=True,
                text=True,
                check=True,
            )
            shutil.rmtree(output_dir)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result["kept"] != (switch == "1"):
                raise RuntimeError(f"the allocator setting did not take in {setting!r}: {result}")
            measured[setting].append(result)
    validations = {
        json.dumps(result["validation"], sort_keys=True) for runs in measured.values() for result in runs
    }
    default = statistics.median(result["train_runtime_s"] for result in measured["glibc default"])
    rows = [
        {
            "allocator": setting,
            "training s min": min(result["train_runtime_s"] for result in runs),
            "training s median": statistics.median(result["train_runtime_s"] for result in runs),
            "run wall s median": statistics.median(result["wall_s"] for result in runs),
            "speed-up (median training)": default
            / statistics.median(result["train_runtime_s"] for result in runs),
        }
        for setting, runs in measured.items()
    ]
    print(format_table(rows, list(rows[0])))
    print(f"identical validation metrics in every run: {len(validations) == 1}")
    path = write_cpu_results(
        "cpu_allocator",
        f"{CONFIGURATION.name}, cpu preset, {args.epochs} epochs, validation split, one thread",
        {"rows": rows, "identical_validation_metrics": len(validations) == 1, "runs": measured},
    )
    print(path)


if __name__ == "__main__":
    main()
