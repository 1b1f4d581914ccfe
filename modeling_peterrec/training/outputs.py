"""What a run leaves in its output folder: `metrics.json` (the summary and the training log) and the learning curve.

The curve needs matplotlib (the `plots` extra); without it the run still finishes and writes `metrics.json`, and
only the PNG is skipped, with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.utils import logging

from .._io import write_json

logger = logging.get_logger(__name__)

METRICS_FILE = "metrics.json"
CURVE_FILE = "learning_curve.png"
TIMING_SUFFIXES = ("runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time")
"""Keys of `Trainer.evaluate`'s output that time the evaluation rather than measure the model."""


def strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """`{"test_mrr@5": x, "test_runtime": ...}` -> `{"mrr@5": x}`: the measures only, without the timings."""
    return {
        key[len(prefix) + 1 :]: value
        for key, value in metrics.items()
        if key.startswith(f"{prefix}_") and not key.endswith(TIMING_SUFFIXES)
    }


def plot_learning_curve(log_history: list[dict[str, Any]], metric: str, path: str | os.PathLike) -> None:
    """Training and validation loss per step, and the validation `metric` on a second axis, as a PNG.

    Draws on its own `Figure` with the Agg canvas, so the caller's matplotlib backend and pyplot state stay as they
    were.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "The learning curve needs matplotlib: pip install 'peterrec[plots]' (or matplotlib)."
        ) from error

    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    validation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    scores = [(entry["step"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    loss_axis = figure.add_subplot()
    for points, label, style in ((train, "training loss", "-"), (validation, "validation loss", "o-")):
        if points:
            loss_axis.plot(*zip(*points, strict=True), style, label=label)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    handles, labels = loss_axis.get_legend_handles_labels()
    if scores:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(*zip(*scores, strict=True), "s--", color="tab:green", label=f"validation {metric}")
        metric_axis.set_ylabel(metric)
        more_handles, more_labels = metric_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def finish_run(
    trainer: Trainer, summary: dict[str, Any], metric: str, log_history: list[dict[str, Any]]
) -> dict[str, Any]:
    """Writes `metrics.json` (the summary and the training log) and the learning curve into the output folder.

    `log_history` is the log of the training run itself, taken before the final evaluations, whose entries at the
    last step (the best checkpoint's numbers) would otherwise look like one more point of the curve.
    """
    summary["log_history"] = log_history
    if trainer.is_world_process_zero():
        output_dir = Path(trainer.args.output_dir)
        write_json(output_dir / METRICS_FILE, summary)
        logger.info(f"Wrote {output_dir / METRICS_FILE}")
        try:
            plot_learning_curve(log_history, metric, output_dir / CURVE_FILE)
        except ImportError as error:
            logger.warning(f"Skipped {output_dir / CURVE_FILE}: {error}")
        else:
            logger.info(f"Wrote {output_dir / CURVE_FILE}")
    return summary


__all__ = ["CURVE_FILE", "METRICS_FILE", "finish_run", "plot_learning_curve", "strip_prefix"]
