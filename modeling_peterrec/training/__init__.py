"""Trainer pipelines of PeterRec: pretraining a backbone, fine-tuning a task patch, and evaluation.

The command line (`peterrec pretrain|finetune|evaluate`) and the scripts in `examples/` call these functions, so
both run the same code, on one process or under `accelerate launch`. One job per module:

- `arguments`: the argument dataclasses (`HfArgumentParser` reads them from flags or a `.json` file);
- `datasets`: a task's splits shaped into model rows and batches;
- `trainers`: the `Trainer` subclasses and the metrics glue;
- `samplers`: the order of fine-tuning rows (a ColdRec user's rows in one batch);
- `checkpoints`: which checkpoint a run resumes from;
- `backbones`: the backbone folder, written and read;
- `outputs`: `metrics.json` and the learning curve;
- `pipelines`: `pretrain`, `finetune`, `evaluate`.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "arguments": [
        "PAPER_DILATIONS",
        "DataArguments",
        "EvaluateArguments",
        "FinetuneArguments",
        "PeterRecTrainingArguments",
        "PretrainArguments",
    ],
    "..saving": ["load_backbone", "save_backbone"],
    "checkpoints": ["last_complete_checkpoint", "resume_target"],
    "datasets": ["RankingEvaluationCollator", "load_splits", "ranking_datasets", "task_kind"],
    "outputs": ["METRICS_FILE", "plot_learning_curve"],
    "pipelines": ["evaluate", "finetune", "pretrain"],
    "samplers": ["HistoryGroupedSampler"],
    "trainers": ["PeterRecTrainer", "PretrainingTrainer", "held_out_item_ranks"],
}
"""The module of each public name. They are imported on first use, so that the command line reads its arguments
(`arguments`) without first importing `datasets` and the Trainer (PEP 562)."""
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _HOME_OF[name]
    return getattr(
        importlib.import_module(module if module.startswith(".") else f".{module}", __name__), name
    )


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME_OF])


__all__ = sorted(_HOME_OF)
