"""`peterrec reproduce`: the reproduction's arguments as a dataclass read by `HfArgumentParser` (options or one `.json`
file), and the entry point that runs the research questions, the investigation or the baselines alone."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .._io import write_json
from .._logging import configure_command_logging
from ..allocator import keep_freed_memory
from ..reporting import markdown_table
from .baselines import BASELINES
from .investigation import investigate
from .plan import (
    ALL_TASKS,
    DEFAULT_RESEARCH_QUESTIONS,
    PRESETS,
    RESEARCH_QUESTIONS,
    SELECTION_SCHEMES,
    TASKS,
    Preset,
)
from .report import baselines_table
from .runner import Reproduction, reproduce


@dataclass
class ReproduceArguments:
    """What to reproduce, with which preset, on which data, and where the results go."""

    preset: str = field(
        default="cpu", metadata={"help": "Model size and budget.", "choices": sorted(PRESETS)}
    )
    rq: list[int] = field(
        default_factory=lambda: list(DEFAULT_RESEARCH_QUESTIONS),
        metadata={
            "help": "Research questions to run (6: the adapter study of docs/adapters.md; 7: items from their text, "
            "docs/text_items.md; both run only when named).",
            "choices": list(RESEARCH_QUESTIONS),
        },
    )
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata={"help": "Tasks to run.", "choices": list(ALL_TASKS)}
    )
    seeds: list[int] | None = field(default=None, metadata={"help": "Override the preset's seeds."})
    learning_rates: list[float] | None = field(
        default=None, metadata={"help": "Candidate learning rates (replace the preset's; several: selected)."}
    )
    readouts: list[str] | None = field(
        default=None, metadata={"help": "Candidate readouts (replace the preset's; several: selected)."}
    )
    bottleneck_sizes: list[int] | None = field(
        default=None,
        metadata={"help": "Candidate patch bottlenecks (replace the preset's; several: selected)."},
    )
    epoch_candidates: list[float] | None = field(
        default=None,
        metadata={"help": "Candidate fine-tuning epochs (replace the preset's; several: selected)."},
    )
    length_candidates: list[int] | None = field(
        default=None,
        metadata={
            "help": "Candidate numbers of most recent items the models read when fine-tuning (several: selected; "
            "the backbone and the baselines keep --max_length)."
        },
    )
    selection: str | None = field(
        default=None,
        metadata={
            "help": "Where candidates are scored: cv (folds of the training users) or validation.",
            "choices": list(SELECTION_SCHEMES),
        },
    )
    folds: int | None = field(default=None, metadata={"help": "Override the preset's number of folds (cv)."})
    pretrain_epochs: float | None = field(
        default=None, metadata={"help": "Override the preset's pretraining epochs (every backbone)."}
    )
    finetune_epochs: float | None = field(
        default=None, metadata={"help": "Override the preset's fine-tuning (profile tasks)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Override the preset's number of most recent items the models see."}
    )
    output_dir: str = field(default="results", metadata={"help": "Where the report, JSON and plots go."})
    work_dir: str | None = field(
        default=None, metadata={"help": "Where the runs go (default <output_dir>/runs)."}
    )
    dataset: str = field(default="ml-1m", metadata={"help": "MovieLens release (ml-1m, ml-100k)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "One DatasetDict folder per task, instead of MovieLens."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Data cache (default $PETERREC_CACHE or ~/.cache/peterrec)."}
    )
    item_texts: str | None = field(
        default=None,
        metadata={
            "help": "RQ7's backbones over item texts: a JSON object item id -> text (needed with --data_dir; "
            "MovieLens: title, year and genres)."
        },
    )
    jobs: int = field(
        default=1,
        metadata={
            "help": "Worker processes that run backbones and configurations side by side (one per core suits a "
            "CPU machine)."
        },
    )
    threads: int | None = field(
        default=None,
        metadata={"help": "Intra-op threads of each worker (default: this machine's threads shared out)."},
    )
    report_only: bool = field(
        default=False,
        metadata={
            "help": "Run nothing: write the report from the runs already in the work folder (missing ones are "
            "left out)."
        },
    )
    investigate: str | None = field(
        default=None,
        metadata={
            "help": "Instead of the research questions: the validation-only study of learning rates and "
            "PeterRec's options on this task (writes investigation.md).",
            "choices": list(ALL_TASKS),
        },
    )
    baselines_only: bool = field(
        default=False,
        metadata={
            "help": "Instead of the research questions: only the baselines of the chosen tasks, on "
            "--baselines_split (writes baselines.md and baselines.json)."
        },
    )
    baselines_split: str = field(
        default="validation",
        metadata={"help": "The split --baselines_only evaluates.", "choices": ["validation", "test"]},
    )

    def __post_init__(self) -> None:
        if self.jobs < 1 or (self.threads is not None and self.threads < 1):
            raise ValueError(f"--jobs and --threads must be at least 1, got {self.jobs} and {self.threads}.")

    def preset_with_overrides(self) -> Preset:
        """The chosen preset with the options that override it."""
        preset = PRESETS[self.preset]
        grid = {
            "learning_rate": self.learning_rates,
            "readout": self.readouts,
            "bottleneck_size": self.bottleneck_sizes,
            "num_train_epochs": self.epoch_candidates,
            "max_length": self.length_candidates,
        }
        tune = {**preset.tune, **{key: tuple(values) for key, values in grid.items() if values is not None}}
        overrides = {
            "seeds": None if self.seeds is None else tuple(self.seeds),
            "tune": tune,
            "selection": self.selection,
            "folds": self.folds,
            "pretrain_epochs": self.pretrain_epochs,
            "masked_pretrain_epochs": self.pretrain_epochs,
            "finetune_epochs": self.finetune_epochs,
            "max_length": self.max_length,
        }
        return replace(preset, **{key: value for key, value in overrides.items() if value is not None})

    def runner(self, preset: Preset) -> Reproduction:
        """A runner of `preset` on the chosen data, with its runs in the work folder."""
        output_dir = Path(self.output_dir)
        return Reproduction(
            preset,
            Path(self.work_dir) if self.work_dir is not None else output_dir / "runs",
            self.dataset,
            None if self.data_dir is None else Path(self.data_dir),
            None if self.cache_dir is None else Path(self.cache_dir),
            item_texts=None if self.item_texts is None else Path(self.item_texts),
        )


def parse_arguments(argv: Sequence[str]) -> ReproduceArguments:
    """Options, or a single `.json` file holding them."""
    parser = HfArgumentParser(
        ReproduceArguments,
        prog="peterrec reproduce",
        description="Reproduce the paper's research questions (Section 4) on MovieLens-1M: results/reproduction.md, "
        "results/reproduction.json and learning-curve plots.",
    )
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(json_file=argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=list(argv))
    return args


def run_baselines_only(args: ReproduceArguments, preset: Preset, command: str) -> dict[str, Any]:
    """The baselines of the chosen tasks on one split, as `baselines.json` and `baselines.md` in the output folder."""
    runner, output_dir = args.runner(preset), Path(args.output_dir)
    tasks = [task for task in ALL_TASKS if task in args.tasks]
    baselines = {task: runner.baselines(task, args.baselines_split) for task in tasks}
    report = {
        "command": command,
        "split": args.baselines_split,
        "max_length": preset.max_length,
        "baselines": baselines,
    }
    report = json.loads(json.dumps(report))
    write_json(output_dir / "baselines.json", report)
    (output_dir / "baselines.md").write_text(
        f"# Baselines on the {args.baselines_split} split\n\n"
        f"The {preset.max_length} most recent items are the seen ones; seeds {list(preset.seeds)}. Generated by "
        f"`{command}`.\n\n{baselines_table(report['baselines'], tasks)}\n\n"
        + markdown_table(["Baseline", "What it does"], [[b.title, b.description] for b in BASELINES.values()])
        + "\n"
    )
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`peterrec reproduce`: parses the options, runs the reproduction and prints where the report is."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_arguments(argv)
    preset = args.preset_with_overrides()
    command = " ".join(["peterrec reproduce", *argv])
    configure_command_logging()
    keep_freed_memory()
    output_dir = Path(args.output_dir)
    if args.investigate is not None:
        rates = preset.tune.get("learning_rate", (preset.learning_rate,))
        report = investigate(args.runner(preset), args.investigate, rates, output_dir)
        print(output_dir / "investigation.md")
        return report
    if args.baselines_only:
        report = run_baselines_only(args, preset, command)
        print(output_dir / "baselines.md")
        return report
    report = reproduce(
        preset,
        args.output_dir,
        args.rq,
        args.tasks,
        args.dataset,
        args.data_dir,
        args.cache_dir,
        args.work_dir,
        command=command,
        report_only=args.report_only,
        item_texts=args.item_texts,
        jobs=args.jobs,
        threads=args.threads,
    )
    print(output_dir / "reproduction.md")
    return report
