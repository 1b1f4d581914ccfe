"""Batch prediction: peak memory of `run_predict` over 20,000 and 100,000 synthetic users (it must not grow with the
file), and predict throughput (users/s) at the demo's size, eager against the `torch.export` program.

    python -m benchmarks.predict            # both measurements
    python -m benchmarks.predict --skip_memory

Each memory run is its own process, so its peak RSS (`ru_maxrss`) is that run's alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from modeling_peterrec import (
    ItemTokenizer,
    PeterRecConfig,
    PeterRecForNextItemPrediction,
    prepare_for_transfer,
)
from modeling_peterrec.export import export_program
from modeling_peterrec.inference import Runner, predict
from modeling_peterrec.predict_command import PredictArguments, run_predict

NUM_ITEMS = 3706
EVENTS_PER_USER = 10


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_users(path: Path, num_users: int) -> None:
    """A CSV sorted by user, EVENTS_PER_USER events each, items drawn from a fixed pseudo-random sequence."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "timestamp"])
        for user in range(num_users):
            for event in range(EVENTS_PER_USER):
                writer.writerow([user, f"movie{(user * 7919 + event * 104729) % NUM_ITEMS}", event])


def save_backbone(folder: Path, hidden_size: int, dilations: list[int]) -> PeterRecForNextItemPrediction:
    tokenizer = ItemTokenizer.from_sequences([[f"movie{i}" for i in range(NUM_ITEMS)]])
    torch.manual_seed(0)
    model = PeterRecForNextItemPrediction(
        PeterRecConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, dilations=dilations)
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def memory_run(folder: str, num_users: int) -> dict:
    """One run in this process: writes the file, reads RSS before, runs `run_predict`, reports the peak."""
    work = Path(folder)
    source = work / f"users-{num_users}.csv"
    write_users(source, num_users)
    before = rss_mib()
    start = time.perf_counter()
    args = PredictArguments(str(work / "backbone"), str(source), str(work / f"out-{num_users}.parquet"))
    args.progress, args.device = False, "cpu"
    summary = run_predict(args)
    return {
        "users": num_users,
        "rows_written": summary["rows"],
        "input_mib": source.stat().st_size / 2**20,
        "rss_before_mib": before,
        "rss_after_mib": rss_mib(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - start,
    }


def memory(sizes: list[int]) -> list[dict]:
    with tempfile.TemporaryDirectory() as work:
        save_backbone(Path(work) / "backbone", 16, [1, 2, 4, 8])
        results = []
        for num_users in sizes:
            output = subprocess.run(
                [sys.executable, "-m", "benchmarks.predict", "--memory_run", work, str(num_users)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    return results


def throughput(num_users: int = 2048, length: int = 50, batch_size: int = 256) -> dict:
    """Users/s of a demo-size classification patch model: the forward alone (eager and exported) and the whole
    `predict` call (encoding and softmax included)."""
    tokenizer = ItemTokenizer.from_sequences([[f"movie{i}" for i in range(NUM_ITEMS)]])
    torch.manual_seed(0)
    backbone = PeterRecForNextItemPrediction(
        PeterRecConfig(vocab_size=len(tokenizer), hidden_size=64, dilations=[1, 2, 4, 8] * 2)
    )
    model, _ = prepare_for_transfer(backbone, "peterrec", "gender", "classification", label_names=["F", "M"])
    model.eval()
    generator = torch.Generator().manual_seed(0)
    draws = torch.randint(NUM_ITEMS, (num_users, length - 1), generator=generator).tolist()
    histories = [[f"movie{i}" for i in row] for row in draws]
    runner = Runner(model, tokenizer, recommends=False)
    batches = [runner.encode(histories[i : i + batch_size]) for i in range(0, num_users, batch_size)]
    program = export_program(model, tokenizer).module()
    eager_forward = runner.tasks[None].head.scores

    def timed(run) -> float:
        run()  # warm-up
        start = time.perf_counter()
        run()
        return num_users / (time.perf_counter() - start)

    with torch.no_grad():
        result = {
            "users": num_users,
            "length": length,
            "batch_size": batch_size,
            "threads": torch.get_num_threads(),
            "forward_eager_users_per_s": timed(lambda: [eager_forward(model, *b) for b in batches]),
            "forward_exported_users_per_s": timed(lambda: [program(*b) for b in batches]),
            "predict_call_users_per_s": timed(
                lambda: predict(model, tokenizer, histories, batch_size=batch_size)
            ),
        }
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory_run", nargs=2, metavar=("FOLDER", "USERS"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_throughput", action="store_true")
    args = parser.parse_args()
    if args.memory_run:
        print(json.dumps(memory_run(args.memory_run[0], int(args.memory_run[1]))))
        return
    results = {}
    if not args.skip_memory:
        results["memory"] = memory(args.sizes)
    if not args.skip_throughput:
        results["throughput_cpu"] = throughput()
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/predict-cpu.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
