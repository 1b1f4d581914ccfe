"""Trainer pipelines of PeterRec: pretraining a backbone, fine-tuning a task patch, and evaluation.

The command line (`peterrec pretrain|finetune|evaluate`) and the scripts in `examples/` call these functions, so
both run the same code, on one process or under `accelerate launch`. One job per module:

- `arguments`: the argument dataclasses (`HfArgumentParser` reads them from flags or a `.json` file);
- `datasets`: a task's splits shaped into model rows and batches;
- `trainers`: the `Trainer` subclasses and the metrics glue;
- `checkpoints`: which checkpoint a run resumes from;
- `backbones`: the backbone folder, written and read;
- `outputs`: `metrics.json` and the learning curve;
- `pipelines`: `pretrain`, `finetune`, `evaluate`.
"""

from ..saving import load_backbone, save_backbone
from .arguments import (
    PAPER_DILATIONS,
    DataArguments,
    EvaluateArguments,
    FinetuneArguments,
    PeterRecTrainingArguments,
    PretrainArguments,
)
from .checkpoints import last_complete_checkpoint, resume_target
from .datasets import RankingEvaluationCollator, load_splits, ranking_datasets, task_kind
from .outputs import METRICS_FILE, plot_learning_curve
from .pipelines import evaluate, finetune, pretrain
from .trainers import PeterRecTrainer, PretrainingTrainer, held_out_item_ranks

__all__ = [
    "METRICS_FILE",
    "PAPER_DILATIONS",
    "DataArguments",
    "EvaluateArguments",
    "FinetuneArguments",
    "PeterRecTrainer",
    "PeterRecTrainingArguments",
    "PretrainArguments",
    "PretrainingTrainer",
    "RankingEvaluationCollator",
    "evaluate",
    "finetune",
    "held_out_item_ranks",
    "last_complete_checkpoint",
    "load_backbone",
    "load_splits",
    "plot_learning_curve",
    "pretrain",
    "ranking_datasets",
    "resume_target",
    "save_backbone",
    "task_kind",
]
