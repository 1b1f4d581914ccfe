"""A pretraining killed with SIGKILL after a checkpoint resumes to the same weights as an uninterrupted run.

The killed run is a subprocess that sends itself SIGKILL at the end of step 8, two steps after `checkpoint-6` was
written: nothing is flushed or cleaned up, and the work of steps 7 and 8 is lost. Resuming from the latest
checkpoint restores the weights, the Adam state, the scheduler and the random states, and skips the batches
already seen in the current epoch. The causal objective draws no random numbers, so on the same number of threads
the final weights are bit-identical to those of a run that was never interrupted.
"""

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from modeling_peterrec.data import pretraining_dataset
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments, pretrain

KILL_AT_STEP = 8
SAVE_STEPS = 3

KILLED_RUN = """
import json, os, signal, sys
from transformers import TrainerCallback
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments, pretrain

class KillAfterCheckpoint(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)

pretrain(
    PretrainArguments(**json.loads(sys.argv[1])),
    PeterRecTrainingArguments(**json.loads(sys.argv[2])),
    callbacks=[KillAfterCheckpoint()],
)
"""


TRAINING = {
    "num_train_epochs": 2,
    "per_device_train_batch_size": 8,
    "eval_strategy": "no",
    "save_strategy": "steps",
    "save_steps": SAVE_STEPS,
    "save_total_limit": None,
    "load_best_model_at_end": False,
    "logging_steps": 1,
    "disable_tqdm": True,
    "seed": 11,
}
"""Checkpoints every 3 steps, no evaluation; 64 windows of at most 10 items, batch 8: 8 steps per epoch."""


def pretrain_arguments(tmp_path: Path) -> PretrainArguments:
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        rng = random.Random(0)
        users = [f"u{i}" for i in range(40)]
        histories = [[f"i{rng.randrange(30)}" for _ in range(rng.randint(4, 20))] for _ in users]
        pretraining_dataset(users, histories).save_to_disk(str(data_dir))
    return PretrainArguments(data_dir=str(data_dir), hidden_size=16, dilations=[1, 2], max_length=10)


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "backbone" / "model.safetensors")


def test_resume_after_sigkill_gives_bit_identical_weights(tmp_path):
    args = pretrain_arguments(tmp_path)
    pretrain(args, PeterRecTrainingArguments(output_dir=str(tmp_path / "uninterrupted"), **TRAINING))

    killed = {"output_dir": str(tmp_path / "killed"), **TRAINING}
    environment = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, json.dumps(asdict(args)), json.dumps(killed), str(KILL_AT_STEP)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    checkpoints = sorted(path.name for path in (tmp_path / "killed").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    assert not (tmp_path / "killed" / "backbone").exists()

    summary = pretrain(args, PeterRecTrainingArguments(**killed, resume_from_checkpoint="last"))
    steps = [entry["step"] for entry in summary["log_history"] if "loss" in entry]
    # Steps 1-6 come from checkpoint-6's history, 7-16 from the resumed run: no step is missing or repeated.
    assert steps == list(range(1, 17))

    expected, resumed = final_weights(tmp_path / "uninterrupted"), final_weights(tmp_path / "killed")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
