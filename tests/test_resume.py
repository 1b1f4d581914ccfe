"""Resuming a pretraining killed with SIGKILL: from the newest complete checkpoint, to the same weights.

The first test kills a run two steps after `checkpoint-6` was written: nothing is flushed or cleaned up, and the
work of steps 7 and 8 is lost. Resuming from the latest checkpoint restores the weights, the Adam state, the
scheduler and the random states, and skips the batches already seen in the current epoch. The causal objective
draws no random numbers, so on the same number of threads the final weights are bit-identical to those of a run
that was never interrupted.

A kill can also land while the `Trainer` writes a checkpoint: the folder is then empty or half written. The other
tests cut a real checkpoint at each stage of its writing, and kill a run at random moments while it saves a
checkpoint after every step; `--resume_from_checkpoint last` must always pick a complete checkpoint.
"""

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_peterrec.data import pretraining_dataset
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments, pretrain
from modeling_peterrec.training.checkpoints import (
    last_complete_checkpoint,
    missing_checkpoint_parts,
    resume_target,
)

REPOSITORY = Path(__file__).parents[1]

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


@pytest.mark.slow
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
        cwd=REPOSITORY,
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


# --- a kill while a checkpoint is written ------------------------------------------------------------------------

ONE_STEP = {
    **TRAINING,
    "max_steps": 1,
    "save_strategy": "steps",
    "save_steps": 1,
    "per_device_eval_batch_size": 64,
}


def checkpoint_write_stages(checkpoint: Path) -> dict[str, list[str]]:
    """The files of a real checkpoint present after each stage of its writing, in the `Trainer`'s order: the
    weights (with config, tokenizer and training arguments), optimizer and scheduler, random states, and
    `trainer_state.json` last."""
    written = sorted(path.name for path in checkpoint.iterdir())
    state = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]
    assert set(state) <= set(written), written
    weights = [name for name in written if name not in state]
    assert "model.safetensors" in weights, written
    return {
        "empty": [],
        "weights only": weights,
        "no random states": weights + state[:2],
        "no trainer_state": weights + state[:3],
        "complete": written,
    }


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory) -> Path:
    """The output folder of a one-step pretraining, holding one complete `checkpoint-1`."""
    root = tmp_path_factory.mktemp("one_step")
    output_dir = root / "run"
    pretrain(pretrain_arguments(root), PeterRecTrainingArguments(output_dir=str(output_dir), **ONE_STEP))
    return output_dir


def copy_stage(source: Path, target: Path, names: list[str], truncate: str | None = None) -> None:
    target.mkdir(parents=True)
    for name in names:
        shutil.copy(source / name, target / name)
    if truncate is not None:
        cut = target / truncate
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])


@pytest.mark.parametrize(
    "stage", ["empty", "weights only", "no random states", "no trainer_state", "complete"]
)
def test_last_resumes_from_the_newest_complete_checkpoint(one_step_run, tmp_path, stage, caplog):
    complete = one_step_run / "checkpoint-1"
    output_dir = tmp_path / "run"
    shutil.copytree(complete, output_dir / "checkpoint-1")
    copy_stage(complete, output_dir / "checkpoint-2", checkpoint_write_stages(complete)[stage])

    with caplog.at_level(logging.INFO, logger="modeling_peterrec"):
        target = resume_target(
            PeterRecTrainingArguments(output_dir=str(output_dir), resume_from_checkpoint="last")
        )

    expected = "checkpoint-2" if stage == "complete" else "checkpoint-1"
    assert Path(target) == output_dir / expected
    assert f"Resuming from {output_dir / expected}" in caplog.text
    assert ("Skipped incomplete checkpoints" in caplog.text) == (stage != "complete")
    if stage != "complete":
        assert "checkpoint-2 (no " in caplog.text


def test_a_truncated_trainer_state_makes_a_checkpoint_incomplete(one_step_run, tmp_path):
    complete = one_step_run / "checkpoint-1"
    names = checkpoint_write_stages(complete)["complete"]
    copy_stage(complete, tmp_path / "checkpoint-1", names, truncate="trainer_state.json")
    assert missing_checkpoint_parts(tmp_path / "checkpoint-1") == ["trainer_state.json"]
    assert missing_checkpoint_parts(complete) == []


def test_no_complete_checkpoint_is_a_clear_error(one_step_run, tmp_path):
    complete = one_step_run / "checkpoint-1"
    copy_stage(complete, tmp_path / "checkpoint-3", checkpoint_write_stages(complete)["weights only"])
    with pytest.raises(FileNotFoundError, match="no complete checkpoint-"):
        resume_target(PeterRecTrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint="last"))
    with pytest.raises(FileNotFoundError, match=r"incomplete \(no optimizer.pt"):
        resume_target(
            PeterRecTrainingArguments(
                output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "checkpoint-3")
            )
        )


def test_resume_last_skips_a_checkpoint_killed_mid_save(one_step_run, tmp_path):
    """The reported bug: `last` used to pick the empty newest folder, and the `Trainer` stopped with "Can't find a
    valid checkpoint"."""
    output_dir = tmp_path / "run"
    shutil.copytree(one_step_run / "checkpoint-1", output_dir / "checkpoint-1")
    (output_dir / "checkpoint-2").mkdir()
    training = {**ONE_STEP, "max_steps": 2}
    summary = pretrain(
        pretrain_arguments(tmp_path),
        PeterRecTrainingArguments(output_dir=str(output_dir), resume_from_checkpoint="last", **training),
    )
    assert [entry["step"] for entry in summary["log_history"] if "loss" in entry] == [1, 2]
    assert missing_checkpoint_parts(output_dir / "checkpoint-2") == []


ZYGOTE = """
import json, os, sys, traceback
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments, pretrain

# Imports are paid once: every run is a forked child, which the test kills with SIGKILL.
args = PretrainArguments(**json.loads(sys.argv[1]))
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        sys.stdout = sys.stderr  # the Trainer prints its logs; stdout is the test's channel
        try:
            pretrain(args, PeterRecTrainingArguments(**json.loads(line)))
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""

RANDOM_KILLS = 3
KILL_WINDOW_S = 0.3
"""Each run is killed up to this long after it starts writing a new checkpoint: mostly in the middle of a save."""


def step_of(checkpoint: Path | None) -> int:
    return 0 if checkpoint is None else int(checkpoint.name.split("-")[1])


@pytest.mark.slow
def test_random_kills_always_leave_a_complete_checkpoint_to_resume_from(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    output_dir = tmp_path / "run"
    training = {**TRAINING, "output_dir": str(output_dir), "save_steps": 1, "save_total_limit": 2}
    training.update(max_steps=10_000, num_train_epochs=1000)
    errors = (tmp_path / "zygote.err").open("w")
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, json.dumps(asdict(pretrain_arguments(tmp_path)))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=REPOSITORY,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )

    def run(resume: str | None, **changes) -> int:
        zygote.stdin.write(json.dumps({**training, "resume_from_checkpoint": resume, **changes}))
        zygote.stdin.write("\n")
        zygote.stdin.flush()
        return int(zygote.stdout.readline())

    try:
        for kill in range(RANDOM_KILLS):
            resumed = last_complete_checkpoint(output_dir)
            child = run(None if resumed is None else str(resumed))
            deadline = time.monotonic() + 120
            # The run has resumed and gone past its checkpoint once a newer checkpoint folder appears.
            while step_of(max(output_dir.glob("checkpoint-*"), key=step_of, default=None)) <= step_of(
                resumed
            ):
                assert time.monotonic() < deadline, (
                    seed,
                    kill,
                    (tmp_path / "zygote.err").read_text()[-3000:],
                )
                time.sleep(0.005)
            time.sleep(rng.uniform(0, KILL_WINDOW_S))
            os.kill(child, signal.SIGKILL)
            status = int(zygote.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                seed,
                (tmp_path / "zygote.err").read_text()[-3000:],
            )
            kept = last_complete_checkpoint(output_dir)
            assert kept is None or missing_checkpoint_parts(kept) == [], (seed, kill, kept)

        kept = last_complete_checkpoint(output_dir)
        run("last" if kept else None, max_steps=step_of(kept) + 1)
        assert int(zygote.stdout.readline()) == 0, (seed, (tmp_path / "zygote.err").read_text()[-3000:])
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
        errors.close()
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry][-1] == step_of(kept) + 1
    assert (output_dir / "backbone" / "model.safetensors").is_file()
