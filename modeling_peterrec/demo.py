"""The README's `make demo` (`peterrec demo`): ML-1M end to end on a small backbone, and its results table.

A small causal backbone is pretrained on the ColdRec source-domain sequences (`pretrain_source`), then PeterRec and
FineAll are fine-tuned for GenEst and ColdRec on that one backbone (Section 4's comparison, at demo size), and
printed beside each task's classical baselines on the same test rows: a deep model that does not beat them has not
shown anything yet. GenEst histories also hold target-domain movies, which the source-domain backbone has never
seen: they are read as `[UNK]`, and the demo says how many.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.utils import logging

from ._io import write_json
from .data import load_task, prepare_movielens
from .registry import HEAD_TERMS, TASK_KINDS
from .reporting import plot_comparison, replace_block
from .reproduction.plan import PRESETS
from .training.arguments import FinetuneArguments, PeterRecTrainingArguments, PretrainArguments
from .training.pipelines import finetune, pretrain

logger = logging.get_logger(__name__)

DEMO_BACKBONE = {"hidden_size": 64, "dilations": [1, 2, 4, 8] * 2, "max_length": 50}
"""The demo's small backbone: 8 layers of width 64 over the 50 most recent items (the paper: 16 layers of 256)."""
DEMO_PRETRAINING = {"pretraining_loss": "sampled_softmax", "num_sampled": 512}
"""The demo pretrains with the original code's sampled softmax, three times faster than the full softmax on CPU."""
DEMO_FINETUNING = {
    "learning_rate": PRESETS["cpu"].learning_rate,
    "wide_learning_rate": PRESETS["cpu"].wide_learning_rate,
    "early_stopping_patience": 2,
}
"""Fine-tuning at the reproduction's `cpu` preset's rates (the learning rate chosen on validation, the wide term's by
cross-validation, docs/transfer.md), with a shorter patience for the demo's six epochs."""


@dataclass(frozen=True)
class DemoRun:
    """One fine-tuning of the demo: a task, a method, the readout of its user vectors (Figure 2) and the terms its
    head adds up (`registry.HEAD_TERMS`)."""

    task: str
    method: str
    readout: str = "tcl"
    head_terms: str = "deep"

    @property
    def name(self) -> str:
        if not HEAD_TERMS[self.head_terms].deep:
            return f"{self.head_terms} term only"
        parts = [self.method]
        if self.readout != "tcl":
            parts.append(f"{self.readout} readout")
        if self.head_terms != "deep":
            parts.append(self.head_terms.replace("_", " & "))
        return ", ".join(parts)

    @property
    def folder(self) -> str:
        return "-".join((self.task, self.method, self.readout, self.head_terms))


DEMO_RUNS = (
    DemoRun("genest", "peterrec"),
    DemoRun("genest", "peterrec", "attention"),
    DemoRun("genest", "fine_cls", head_terms="wide"),
    DemoRun("genest", "peterrec", "attention", "wide_deep"),
    DemoRun("genest", "fine_all"),
    DemoRun("coldrec", "peterrec"),
    DemoRun("coldrec", "fine_all"),
)
"""PeterRec (the paper's [TCL] readout, and the whole-history attention pooling) beside FineAll, for GenEst and
ColdRec; on GenEst also the wide term over the item bag alone and added to PeterRec's head (wide & deep), which
shows what the backbone adds to a linear model of the items (docs/transfer.md)."""
RESULTS_FILE = "demo_results.json"
COMPARISON_FILE = "comparison.png"
DOCS_BLOCK = "demo"
"""The block of README.md that `--update_docs` rewrites from the run (`reporting.replace_block`)."""


@dataclass
class DemoArguments:
    """Options of `peterrec demo` (flags or a `.json` file, through `HfArgumentParser`)."""

    output_dir: str = field(default="peterrec-demo", metadata={"help": "Runs, results and the results file."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Data cache (default $PETERREC_CACHE or ~/.cache/peterrec)."}
    )
    pretrain_epochs: float = field(default=2.0, metadata={"help": "Pretraining epochs."})
    finetune_epochs: float = field(
        default=6.0,
        metadata={
            "help": "Fine-tuning epochs of each task and method (early stopping after 2 without gain)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the user splits and of training."})
    update_docs: str | None = field(
        default=None,
        metadata={"help": "A markdown file (README.md) whose demo block is rewritten with this run's table."},
    )


def _demo_training_arguments(
    output_dir: Path, epochs: float, batch_size: int, seed: int, **options: Any
) -> TrainingArguments:
    return PeterRecTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        **options,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=256,
        logging_steps=10,
        save_total_limit=1,
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
    )


def _baseline_rows(task: str, data: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The classical baselines of a task on the same test rows as the models (`reproduction.baselines`)."""
    from .reproduction.baselines import BASELINES, baseline_rows

    splits = load_task(data["dataset"], task, data["cache_dir"], data["split_seed"])
    results = baseline_rows(splits, data["max_length"], seed=seed)
    kind = TASK_KINDS["ranking" if "targets" in splits["train"].column_names else "classification"]
    return [
        {
            "task": task,
            "model": BASELINES[name].title,
            "metric": kind.selection_title,
            "value": metrics[kind.selection_metric],
            "trainable_parameters": None,
            "patch_size_bytes": None,
        }
        for name, metrics in results.items()
    ]


def run_demo(
    output_dir: str | os.PathLike = "peterrec-demo",
    cache_dir: str | os.PathLike | None = None,
    pretrain_epochs: float = 2.0,
    finetune_epochs: float = 6.0,
    seed: int = 0,
    update_docs: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """ML-1M from the pinned wheel, the small backbone pretrained on `pretrain_source`, then each of `DEMO_RUNS` on
    that one backbone, beside each task's classical baselines. Returns one row per model for
    `format_results_table`, writes them to `demo_results.json`, and with `update_docs` rewrites that file's demo
    block."""
    output_dir = Path(output_dir)
    cache = None if cache_dir is None else str(cache_dir)
    started = time.perf_counter()
    prepare_movielens("ml-1m", cache, seed)
    logger.info(f"ML-1M tasks ready after {time.perf_counter() - started:.0f}s")
    data = {
        "dataset": "ml-1m",
        "cache_dir": cache,
        "split_seed": seed,
        "max_length": DEMO_BACKBONE["max_length"],
    }
    pretrained = pretrain(
        PretrainArguments(
            task="pretrain_source",
            hidden_size=DEMO_BACKBONE["hidden_size"],
            dilations=DEMO_BACKBONE["dilations"],
            window_stride=DEMO_BACKBONE["max_length"],
            **DEMO_PRETRAINING,
            **data,
        ),
        _demo_training_arguments(output_dir / "pretrain", pretrain_epochs, 64, seed),
    )
    pretraining = TASK_KINDS["pretraining"]
    rows = [
        {
            "task": "pretraining",
            "model": "causal backbone",
            "metric": pretraining.selection_title,
            "value": pretrained["test"][pretraining.selection_metric],
            "trainable_parameters": pretrained["num_parameters"],
            "patch_size_bytes": None,
        }
    ]
    for task in dict.fromkeys(run.task for run in DEMO_RUNS):
        rows += _baseline_rows(task, data, seed)
        for run in (run for run in DEMO_RUNS if run.task == task):
            result = finetune(
                FinetuneArguments(
                    backbone=pretrained["backbone"],
                    task=task,
                    method=run.method,
                    readout=run.readout,
                    head_terms=run.head_terms,
                    allow_unknown_items=True,
                    **data,
                ),
                _demo_training_arguments(
                    output_dir / run.folder, finetune_epochs, 64, seed, **DEMO_FINETUNING
                ),
            )
            kind = TASK_KINDS[result["task_kind"]]
            rows.append(
                {
                    "task": task,
                    "model": run.name,
                    "metric": kind.selection_title,
                    "value": result["test"][kind.selection_metric],
                    "trainable_parameters": result["trainable_parameters"],
                    "patch_size_bytes": result.get("patch_size_bytes"),
                    "kind": result["task_kind"],
                    "patch": result["patch"],
                }
            )
    total = time.perf_counter() - started
    write_json(output_dir / RESULTS_FILE, {"rows": rows, "wall_time_s": total})
    _plot(rows, output_dir / COMPARISON_FILE)
    logger.info(f"Demo finished in {total:.0f}s; runs, patches and {RESULTS_FILE} are in {output_dir}")
    if update_docs is not None:
        text = f"```\n{format_results_table(rows)}\n```\n\nWall time of this run: {total / 60:.1f} minutes."
        replace_block(update_docs, DOCS_BLOCK, text)
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Each task's methods beside its baselines as bars (`reporting.plot_comparison`); skipped with a warning
    without the optional matplotlib."""
    tasks = [row for row in rows if row["task"] != "pretraining"]
    panels = {row["task"]: {} for row in tasks}
    for row in tasks:
        panels[row["task"]][row["model"]] = row["value"]
    try:
        plot_comparison(panels, path, {row["task"]: row["metric"] for row in tasks})
    except ImportError as error:
        logger.warning(f"No comparison plot: {error}")


EXAMPLE_HISTORY = ("Heat (1995)", "Fargo (1996)", "Casino (1995)")
"""A history of source-domain movies (in the demo backbone's vocabulary) for the printed example."""


def where_and_how(
    rows: list[dict[str, Any]], output_dir: str | os.PathLike, history: Sequence[str] = EXAMPLE_HISTORY
) -> str:
    """Where the demo's files went, and three lines that load its first ranking and classification patches and call
    the recommend / predict API on `history`."""
    output_dir = Path(output_dir)
    backbone = output_dir / "pretrain" / "backbone"
    patches: dict[str, str] = {}
    for row in rows:
        if row.get("patch"):
            patches.setdefault(row["kind"], row["patch"])
    users = [list(history)]
    return "\n".join(
        [
            f"Backbone: {backbone}; patches: {output_dir}/<task>-<method>-<readout>-<head terms>/patch; table: "
            f"{output_dir / RESULTS_FILE}; plot: {output_dir / COMPARISON_FILE}.",
            "Recommendations and predictions from them:",
            "",
            "from modeling_peterrec import ItemTokenizer, PeterRecModel, load_patch, predict, recommend",
            f'tokenizer, backbone = ItemTokenizer.from_pretrained("{backbone}"), '
            f'PeterRecModel.from_pretrained("{backbone}")',
            f'print(recommend(load_patch("{patches["ranking"]}", backbone), tokenizer, {users!r}, k=5))',
            f'print(predict(load_patch("{patches["classification"]}", backbone), tokenizer, {users!r}))',
        ]
    )


def format_results_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the demo's rows: task, model (methods and baselines), metric, value, trainable
    parameters, patch size."""
    header = ("task", "model", "metric", "value", "trainable params", "patch size")
    lines = [
        (
            row["task"],
            row["model"],
            row["metric"],
            f"{row['value']:.4f}",
            "-" if row["trainable_parameters"] is None else f"{row['trainable_parameters']:,}",
            "-" if row["patch_size_bytes"] is None else f"{row['patch_size_bytes'] / 1024:,.0f} KiB",
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([render(header), render(["-" * width for width in widths]), *map(render, lines)])


__all__ = ["DemoArguments", "format_results_table", "run_demo", "where_and_how"]
