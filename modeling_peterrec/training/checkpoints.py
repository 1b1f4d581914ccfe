"""Which checkpoint `--resume_from_checkpoint` resumes from, and whether a checkpoint folder is complete.

A run killed while the `Trainer` writes `checkpoint-N` leaves that folder empty or half written. The `Trainer`
writes a checkpoint in this order: the weights (with config and tokenizer), `optimizer.pt` and `scheduler.pt`,
the random states (`rng_state.pth`, or `rng_state_<process>.pth` per process), and `trainer_state.json` last. A
folder is complete when all of them are there and `trainer_state.json` parses; `last` resumes from the newest
complete one and says which incomplete ones it skipped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from transformers import TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    logging,
)

logger = logging.get_logger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
WEIGHTS_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
RNG_STATE_PATTERN = "rng_state*.pth"
LAST = ("last", "true")
"""Values of `--resume_from_checkpoint` that mean the newest complete checkpoint of `--output_dir`."""

_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def missing_checkpoint_parts(folder: str | os.PathLike) -> list[str]:
    """What a checkpoint folder lacks to resume from (empty when complete), in the order the `Trainer` writes it."""
    folder = Path(folder)
    missing = []
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        missing.append("weights")
    missing += [name for name in (OPTIMIZER_FILE, SCHEDULER_FILE) if not (folder / name).is_file()]
    if not any(folder.glob(RNG_STATE_PATTERN)):
        missing.append("rng_state.pth")
    try:
        json.loads((folder / TRAINER_STATE_FILE).read_text())
    except (OSError, ValueError):
        missing.append(TRAINER_STATE_FILE)
    return missing


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (highest step) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    steps = {
        int(match.group(1)): path
        for path in output_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT_NAME.match(path.name))
    }
    return [steps[step] for step in sorted(steps, reverse=True)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of `output_dir`, or None; logs the newer incomplete ones it skips."""
    skipped = []
    for folder in checkpoint_folders(output_dir):
        missing = missing_checkpoint_parts(folder)
        if not missing:
            if skipped:
                logger.warning(f"Skipped incomplete checkpoints (killed while saving?): {'; '.join(skipped)}")
            return folder
        skipped.append(f"{folder.name} (no {', '.join(missing)})")
    if skipped:
        logger.warning(f"No complete checkpoint; incomplete ones: {'; '.join(skipped)}")
    return None


def resume_target(training_args: TrainingArguments) -> str | None:
    """The checkpoint folder that `--resume_from_checkpoint` names: a folder, or `last` (also `true`) for the
    newest complete checkpoint in `output_dir`; None to start afresh. An incomplete folder is never returned."""
    value = training_args.resume_from_checkpoint
    if value is None or value is False:
        return None
    if value is True or str(value).lower() in LAST:
        folder = last_complete_checkpoint(training_args.output_dir)
        if folder is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint last: {training_args.output_dir} holds no complete checkpoint-* folder "
                "to resume from; run without --resume_from_checkpoint to start afresh."
            )
    else:
        folder = Path(value)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value} is not a checkpoint folder; pass one of the checkpoint-* "
                "folders of a previous run, or `last` for the newest complete one in --output_dir."
            )
        missing = missing_checkpoint_parts(folder)
        if missing:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value} is incomplete (no {', '.join(missing)}), probably killed while "
                "saving; pass an older checkpoint-* folder, or `last` for the newest complete one."
            )
    logger.info(f"Resuming from {folder}")
    return str(folder)


__all__ = ["checkpoint_folders", "last_complete_checkpoint", "missing_checkpoint_parts", "resume_target"]
