"""A validation-only study of why PeterRec and FineAll differ: learning rates, then PeterRec's options
(`peterrec reproduce --investigate TASK`, results/investigation.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._io import write_json
from ..registry import METHODS, TASK_KINDS
from ..reporting import markdown_table
from .plan import TASK_TITLES, Configuration
from .runner import Reproduction

INVESTIGATION_VARIANTS = {
    "wider bottleneck (k/2)": {"bottleneck_size": "half"},
    "also train norm2 (original code)": {"train_layer_norms": ("norm2",)},
    "also train a task [TCL] embedding": {"train_tcl_embedding": True},
    "parallel insertion (d)": {"insertion": "parallel_before_ln"},
    "sum readout (Figure 2d)": {"readout": "sum"},
}
"""PeterRec options tried against the default (serial (c), bottleneck k/8, frozen LayerNorms and [TCL])."""


def investigate(
    runner: Reproduction, task: str, learning_rates: Sequence[float], output_dir: Path
) -> dict[str, Any]:
    """Validation-only study of why PeterRec and FineAll differ (the issue's "investigate" step), on the causal
    backbone with the first seed: both methods over `learning_rates`, then PeterRec's options
    (`INVESTIGATION_VARIANTS`) at PeterRec's best rate. Every run tests on the validation split (a tuning copy),
    so the test split is never read. Writes `investigation.md` and `investigation.json`."""
    seed, rows = runner.preset.seeds[0], []

    def score(label: str, configuration: Configuration, rate: float) -> float:
        output_dir_of_run = runner.work_dir / "investigation" / configuration.name / f"lr{rate:g}"
        summary = runner.run(configuration, seed, rate, output_dir_of_run, "validation")
        validation = summary["validation"]
        rows.append(
            {"variant": label, "configuration": configuration.name, "learning_rate": rate, **validation}
        )
        return validation[TASK_KINDS[summary["task_kind"]].selection_metric]

    best = {}
    for method in ("peterrec", "fine_all"):
        scores = {
            rate: score(METHODS[method].title, Configuration(task, method), rate) for rate in learning_rates
        }
        best[method] = max(scores, key=scores.get)
    hidden = runner.backbone("causal")["config"]["hidden_size"]
    for label, options in INVESTIGATION_VARIANTS.items():
        options = {**options}
        if options.get("bottleneck_size") == "half":
            options["bottleneck_size"] = hidden // 2
        score(f"PeterRec, {label}", Configuration(task, "peterrec", **options), best["peterrec"])
    measures = [key for key in rows[0] if key not in ("variant", "configuration", "learning_rate")]
    table = markdown_table(
        ["Variant", "Learning rate", *(f"Validation {measure}" for measure in measures)],
        [[row["variant"], f"{row['learning_rate']:g}", *(f"{row[m]:.4f}" for m in measures)] for row in rows],
    )
    report = {
        "task": task,
        "seed": seed,
        "preset": asdict(runner.preset),
        "rows": rows,
        "best_learning_rate": best,
    }
    write_json(output_dir / "investigation.json", report)
    (output_dir / "investigation.md").write_text(
        f"# Investigation on {TASK_TITLES[task]} validation ({runner.preset.name} preset, seed {seed})\n\n"
        f"{len(runner.splits(task)['validation'])} validation users; the test split was not read.\n\n{table}\n"
    )
    return report
