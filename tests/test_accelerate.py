"""`accelerate launch` with 2 CPU processes trains like one process with the same global batch (SPEC §6).

On accelerate 1.15, `--cpu --num_processes 2` starts a single process; two CPU processes need `--multi_gpu` with
`ACCELERATE_USE_CPU=1`. The histories of the synthetic data all have the same length, so both processes count the
same number of next-item targets: the mean of the two processes' mean losses is then exactly the single process's
mean loss over the global batch, and DDP's averaged gradient is its gradient. Per-step losses agree to float32
rounding (different summation order): tolerance 1e-5 absolute on losses of about 3.7.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_peterrec.cli import main
from modeling_peterrec.data import pretraining_dataset

LOSS_TOLERANCE = 1e-5
HISTORY_LENGTH = 18  # train = 16 items, exactly one window of --max_length 16


def equal_length_histories(folder: Path, num_users: int = 64) -> str:
    rng = random.Random(0)
    users = [f"u{i}" for i in range(num_users)]
    histories = [[f"i{rng.randrange(40)}" for _ in range(HISTORY_LENGTH)] for _ in users]
    pretraining_dataset(users, histories).save_to_disk(str(folder))
    return str(folder)


def pretrain_arguments(data_dir: str, output_dir: Path, per_device_batch: int) -> list[str]:
    return [
        "pretrain", "--data_dir", data_dir, "--hidden_size", "16", "--dilations", "1", "2", "--max_length", "16",
        "--num_train_epochs", "2", "--per_device_train_batch_size", str(per_device_batch),
        "--per_device_eval_batch_size", "16", "--logging_steps", "1", "--disable_tqdm", "true",
        "--output_dir", str(output_dir), "--seed", "7",
    ]  # fmt: skip


def training_losses(output_dir: Path) -> list[tuple[int, float]]:
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


@pytest.mark.slow
def test_two_process_launch_matches_single_process_per_step_loss(tmp_path):
    data_dir = equal_length_histories(tmp_path / "data")
    main(pretrain_arguments(data_dir, tmp_path / "single", per_device_batch=16))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "modeling_peterrec.cli", *pretrain_arguments(data_dir, tmp_path / "two", per_device_batch=8),
    ]  # fmt: skip
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["processes"] == 2
    single, two = training_losses(tmp_path / "single"), training_losses(tmp_path / "two")
    # 64 users, global batch 16, 2 epochs: 8 optimizer steps in both runs.
    assert [step for step, _ in single] == [step for step, _ in two] == list(range(1, 9))
    for (step, expected), (_, found) in zip(single, two, strict=True):
        assert found == pytest.approx(expected, abs=LOSS_TOLERANCE), f"step {step}"
