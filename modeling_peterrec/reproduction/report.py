"""The reproduction's report: aggregation over seeds, the markdown tables of results/reproduction.md, the learning
curves (Figures 4-6) and the JSON file."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._io import write_json
from ..registry import (
    BLOCK_CHOICES,
    HEAD_TERMS,
    INSERTIONS,
    ITEM_PATCH_TYPES,
    METHODS,
    PATCH_TARGETS,
    PATCH_TYPES,
    insertions_of,
)
from ..reporting import markdown_table, plot_comparison, plot_curves
from .baselines import BASELINES
from .plan import (
    ALL_TASKS,
    FEW_LABEL_FRACTIONS,
    FEW_LABEL_TASK,
    INSERTION_TASK,
    RANKING_TASKS,
    RQ1_METHODS,
    RQ2_METHODS,
    RQ2_TASKS,
    RQ5_FEW_LABEL_FRACTION,
    RQ5_FEW_LABEL_HEAD_TERMS,
    RQ5_FEW_LABEL_METHODS,
    RQ5_HEAD_TERMS,
    RQ5_METHODS,
    RQ6_BACKBONES,
    RQ6_BASELINE_METHODS,
    RQ6_PLACED_TYPE,
    RQ6_TASKS,
    RQ7_BACKBONES,
    RQ7_TASKS,
    SOURCE_BACKBONES,
    TASK_TITLES,
    TRANSFER_READOUT,
    Configuration,
    adapter_study_plan,
    insertion_title,
    task_kind,
    text_items_plan,
    transfer_configuration,
)


@dataclass
class Aggregate:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for one value, printed without it) over
    seeds."""

    mean: float
    std: float
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Aggregate:
        if not values:
            raise ValueError("Cannot aggregate an empty list of values.")
        values = [float(value) for value in values]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, values)

    def __str__(self) -> str:
        # One seed has no spread to show; "± 0.0000" would claim one.
        return f"{self.mean:.4f}" if len(self.values) == 1 else f"{self.mean:.4f} ± {self.std:.4f}"


def aggregate_runs(runs: dict[int, dict[str, float]]) -> dict[str, Aggregate]:
    """Per-metric `Aggregate` over the seeds' metric dictionaries (metrics that every seed reports)."""
    names = set.intersection(*(set(metrics) for metrics in runs.values()))
    return {name: Aggregate.of([runs[seed][name] for seed in sorted(runs)]) for name in sorted(names)}


def reported_metrics(task: str) -> list[tuple[str, str]]:
    """(metric key, title) pairs a table shows for a task: accuracy, or HR@5 and MRR@5 among 99 sampled
    negatives (the paper's protocol) and MRR@5, HR@10 and NDCG@10 of the full ranking over all target items."""
    if task_kind(task).name == "ranking":
        return [
            ("hr@5", "HR@5"),
            ("mrr@5", "MRR@5"),
            ("full_mrr@5", "MRR@5 full"),
            ("full_hr@10", "HR@10 full"),
            ("full_ndcg@10", "NDCG@10 full"),
        ]
    return [("accuracy", "Acc")]


def _seeds_aggregate(by_seed: dict[str, dict[str, float]] | None, metric: str) -> str:
    if by_seed is None:
        return "–"
    return str(Aggregate.of([by_seed[seed][metric] for seed in sorted(by_seed)]))


def _cell(result: dict[str, Any] | None, metric: str) -> str:
    return _seeds_aggregate(None if result is None else result["test"], metric)


def _share(result: dict[str, Any] | None) -> str:
    if result is None:
        return "–"
    return f"{result['trainable_parameters']:,} ({100 * result['trainable_share']:.2f}%)"


def _methods_by_task_table(
    results: dict[str, dict[str, Any]],
    columns: Sequence[tuple[str, Configuration | None]],
    tasks: Sequence[str],
) -> str:
    """Rows: (task, metric); columns: one configuration per (title, configuration for the task `{task}`)."""
    rows = []
    for task in tasks:
        for metric, metric_title in reported_metrics(task):
            row = [f"{TASK_TITLES[task]} {metric_title}"]
            for _, configuration in columns:
                key = None if configuration is None else replace(configuration, task=task).name
                row.append(_cell(results.get(key), metric))
            rows.append(row)
    return markdown_table(["Task", *(title for title, _ in columns)], rows)


def baselines_table(
    baselines: dict[str, dict[str, dict[str, dict[str, float]]]],
    tasks: Sequence[str],
    methods: dict[str, dict[str, dict[str, dict[str, float]]]] | None = None,
) -> str:
    """Rows: (task, metric); columns: every baseline of the tasks' kinds, then each of `methods` (title -> task ->
    seed -> metrics). `baselines` maps task -> baseline name -> seed -> metrics."""
    tasks = [task for task in tasks if task in baselines]
    names = [name for name in BASELINES if any(name in baselines[task] for task in tasks)]
    methods = methods or {}
    rows = []
    for task in tasks:
        for metric, metric_title in reported_metrics(task):
            rows.append(
                [
                    f"{TASK_TITLES[task]} {metric_title}",
                    *(_seeds_aggregate(baselines[task].get(name), metric) for name in names),
                    *(_seeds_aggregate(by_task.get(task), metric) for by_task in methods.values()),
                ]
            )
    return markdown_table(["Task", *(BASELINES[name].title for name in names), *methods], rows)


def _wide_rate(preset: dict[str, Any]) -> str:
    rate = preset.get("wide_learning_rate")
    return "" if rate is None else f" (the wide term of a wide & deep head {rate:g})"


def render_report(report: dict[str, Any]) -> str:
    """The markdown of results/reproduction.md: one table per experiment, from the JSON report."""
    results, baselines, plan = report["configurations"], report["baselines"], report["plan"]
    preset = report["preset"]
    lines = [
        f"# Reproduction of the paper's findings on {report['data']}",
        "",
        f"Preset `{preset['name']}`: hidden {preset['hidden_size']}, dilations {list(preset['dilations'])}, "
        f"the {preset['max_length']} most recent items, seeds {list(preset['seeds'])}, learning rate "
        f"{preset['learning_rate']:g}{_wide_rate(preset)}, {_tuning_sentence(preset)} Cells: test mean ± sample std "
        f"over seeds. The runs took {report['run_time_s'] / 60:.0f} min one after the other (pretraining and "
        f"fine-tuning, as timed by each run); this pass {report['wall_time_s'] / 60:.0f} min. Generated by "
        f"`{report['command']}`.",
        "",
        "## Backbones (pretrained on the ColdRec source domain)",
        "",
        markdown_table(
            ["Backbone", "Parameters", "HR@10", "NDCG@10", "MRR@5", "HR@5", "Pretraining time"],
            [
                [
                    f"{objective}: {SOURCE_BACKBONES[objective].title}",
                    f"{summary['num_parameters']:,}",
                    *(
                        f"{summary['test'][metric]:.4f}" if metric in summary["test"] else "–"
                        for metric in ("hr@10", "ndcg@10", "mrr@5", "hr@5")
                    ),
                    f"{summary['train_runtime_s'] / 60:.1f} min",
                ]
                for objective, summary in report["backbones"].items()
            ],
        ),
        "",
        "The held-out last item of each user ranked over the whole item pool (test split; the field's common ML-1M "
        "protocol, SPEC §5).",
    ]
    tasks = [task for task in ALL_TASKS if task in report["tasks"]]

    def section(title: str, table: str, note: str = "") -> None:
        lines.extend(["", f"## {title}", "", table])
        if note:
            lines.extend(["", note])

    if "rq1" in plan:
        columns = [(METHODS[method].title, Configuration("{task}", method)) for method in RQ1_METHODS]
        section(
            "RQ1: does pretraining help? (causal backbone, serial insertion (c); Table 2)",
            _methods_by_task_table(results, columns, tasks),
            "PeterZero and FineZero train the same parameters as PeterRec and FineAll on a random backbone. "
            "Learning curves: `rq1_curves.png`.",
        )
    if "rq2" in plan:
        rq2_tasks = [task for task in tasks if task in RQ2_TASKS]
        columns = [
            (METHODS[method].title, Configuration("{task}", method, "masked")) for method in RQ2_METHODS
        ]
        columns += [
            (
                f"PeterRec {INSERTIONS[insertion].figure[1:]}",
                Configuration("{task}", "peterrec", "masked", insertion),
            )
            for insertion in ("serial_two", "parallel_before_ln")
        ]
        shares = [
            [title] + [_share(results.get(replace(configuration, task=task).name)) for task in rq2_tasks]
            for title, configuration in columns
        ]
        section(
            "RQ2: model patch vs other fine-tuning (non-causal backbone; Table 3, Figure 5)",
            _methods_by_task_table(results, columns, rq2_tasks)
            + "\n\nTrainable parameters (share of the task model):\n\n"
            + markdown_table(["Method", *(TASK_TITLES[task] for task in rq2_tasks)], shares),
            "Learning curves (validation measure during training, mean over seeds): `rq2_curves.png`.",
        )
    if "rq3" in plan:
        rows = []
        for task in tasks:
            peterrec = results.get(Configuration(task, "peterrec").name)
            for metric, metric_title in reported_metrics(task):
                rows.append(
                    [
                        f"{TASK_TITLES[task]} {metric_title}",
                        _seeds_aggregate(baselines.get(task), metric),
                        _cell(peterrec, metric),
                    ]
                )
        peterrec_by_task = {
            task: results[Configuration(task, "peterrec").name]["test"]
            for task in tasks
            if Configuration(task, "peterrec").name in results
        }
        section(
            "RQ3: PeterRec against rule baselines (Tables 4, 5)",
            markdown_table(["Task", "LabelCS / popularity", "PeterRec"], rows)
            + "\n\nClassical baselines beside PeterRec, on the same test users and candidates:\n\n"
            + baselines_table(report.get("classical_baselines", {}), tasks, {"PeterRec": peterrec_by_task}),
            "LabelCS predicts the most frequent training label; ColdRec's baseline ranks target items by the "
            "number of training users who liked them, on the same sampled candidates as the models. The logistic "
            "regressions read the TF-IDF bag of the items the model sees or of all the user's items, with C chosen "
            "by cross-validation inside the training users; item-kNN sums the cosine similarities of the user's "
            "source items to each target item; EASE is a ridge regression from the source bag to the target items.",
        )
    if "rq4_objective" in plan:
        columns = [
            (f"PeterRec {objective}", Configuration("{task}", "peterrec", objective))
            for objective in ("causal", "masked")
        ]
        section(
            "RQ4: causal vs non-causal pretraining (PeterRec, serial (c); Table 6)",
            _methods_by_task_table(results, columns, [task for task in tasks if task in RQ2_TASKS]),
        )
    if "rq4_insertion" in plan:
        rows = [
            [
                insertion_title(insertion),
                _cell(
                    results.get(Configuration(INSERTION_TASK, "peterrec", "masked", insertion).name),
                    "accuracy",
                ),
                _share(results.get(Configuration(INSERTION_TASK, "peterrec", "masked", insertion).name)),
            ]
            for insertion in insertions_of("peterrec")
        ]
        section(
            f"RQ4: patch insertion on {TASK_TITLES[INSERTION_TASK]} (non-causal backbone; Table 7)",
            markdown_table(["Insertion (Figure 3)", "Acc", "Trainable"], rows),
        )
    if "rq4_few_labels" in plan:
        rows = [
            [f"{round(100 * fraction)}% of the training users"]
            + [
                _cell(
                    results.get(Configuration(FEW_LABEL_TASK, method, train_fraction=fraction).name),
                    "accuracy",
                )
                for method in ("peterrec", "fine_all")
            ]
            for fraction in (*FEW_LABEL_FRACTIONS, 1.0)
        ]
        section(
            f"RQ4: few labels on {TASK_TITLES[FEW_LABEL_TASK]} (causal backbone; Figure 6)",
            markdown_table(["Training data", "PeterRec", "FineAll"], rows),
            "Each seed draws its own subset of training users. Learning curves: `rq4_few_labels.png`.",
        )
    if "rq5_transfer" in plan:
        _transfer_sections(section, results, report.get("classical_baselines", {}), tasks)
    if "rq6_types" in plan:
        _adapter_sections(
            section,
            results,
            report.get("classical_baselines", {}),
            [task for task in tasks if task in RQ6_TASKS],
        )
    if "rq7_text_items" in plan:
        _text_items_section(
            section,
            results,
            report.get("classical_baselines", {}),
            [task for task in tasks if task in RQ7_TASKS],
        )
    selected = {name: result["selection"] for name, result in results.items() if result.get("selection")}
    if selected:
        section(
            "Hyperparameter selection (first seed; the test split was not read)",
            selection_table(selected),
            "Mean ± sample std of each candidate's selection measure over the held-out sets: the folds of the "
            "training users (`cv`) or the validation split (`validation`); the chosen candidate is in bold.",
        )
    return "\n".join(lines) + "\n"


def _transfer_sections(
    section: Any,
    results: dict[str, dict[str, Any]],
    classical: dict[str, Any],
    tasks: Sequence[str],
) -> None:
    """RQ5's tables: methods with one head beside the classical baselines, the head-terms ablation, few labels."""

    def transfer(method: str, **fields: Any) -> Configuration:
        return transfer_configuration("{task}", method, **fields)

    methods = {
        METHODS[method].title: {
            task: results[replace(transfer(method), task=task).name]["test"]
            for task in tasks
            if replace(transfer(method), task=task).name in results
        }
        for method in RQ5_METHODS
    }
    section(
        f"RQ5: transfer with a whole-history readout ({TRANSFER_READOUT} pooling), beside the classical baselines",
        baselines_table(classical, tasks, methods)
        + "\n\nTrainable parameters (share of the task model):\n\n"
        + markdown_table(
            ["Method", *(TASK_TITLES[task] for task in tasks)],
            [
                [METHODS[method].title]
                + [_share(results.get(replace(transfer(method), task=task).name)) for task in tasks]
                for method in RQ5_METHODS
            ],
        ),
        "Every method reads users with the same task-owned attention pooling, so PeterRec against PeterZero "
        "measures what pretraining adds, and PeterRec against FineAll what freezing the backbone costs.",
    )
    columns = [(METHODS[method].title, transfer(method)) for method in ("peterrec", "peter_zero")] + [
        (f"{METHODS[method].title}, {terms}", transfer(method, head_terms=terms))
        for method, terms in RQ5_HEAD_TERMS
    ]
    section(
        "RQ5: what the deep part adds (head terms: deep only, wide only, wide & deep)",
        _methods_by_task_table(results, columns, tasks),
        "; ".join(f"`{terms.name}`: {terms.description}" for terms in HEAD_TERMS.values())
        + ". The wide part alone reads no backbone: it is a linear model of the item bag trained in the same "
        "pipeline, so the wide & deep columns against it show what the deep part, hence the backbone, adds.",
    )
    few = [task for task in tasks if task not in RANKING_TASKS]
    if few:
        for terms in RQ5_FEW_LABEL_HEAD_TERMS:
            columns = [
                (
                    f"{METHODS[method].title}, {round(100 * fraction)}%",
                    transfer(method, train_fraction=fraction, head_terms=terms),
                )
                for fraction in (RQ5_FEW_LABEL_FRACTION, 1.0)
                for method in RQ5_FEW_LABEL_METHODS
            ]
            section(
                f"RQ5: {round(100 * RQ5_FEW_LABEL_FRACTION)}% of the training users, head terms `{terms}`",
                _methods_by_task_table(results, columns, few),
                "Each seed draws its own subset of training users; validation and test users are unchanged.",
            )


def _study_rows(
    results: dict[str, dict[str, Any]],
    rows: Sequence[tuple[str, Configuration]],
    tasks: Sequence[str],
    costs: bool = False,
) -> str:
    """Rows: one configuration each (title, configuration for the task `{task}`); columns: every task's measures,
    then with `costs` the trainable share, the patch file and the seconds per training step of the first task."""
    metrics = [
        (task, metric, f"{TASK_TITLES[task]} {title}")
        for task in tasks
        for metric, title in reported_metrics(task)
    ]
    header = ["Configuration", *(title for _, _, title in metrics)]
    if costs:
        header += [f"Trainable ({TASK_TITLES[tasks[0]]})", "Patch KiB", "s/step"]
    table = []
    for title, configuration in rows:
        row = [title] + [
            _cell(results.get(replace(configuration, task=task).name), metric) for task, metric, _ in metrics
        ]
        if costs:
            first = results.get(replace(configuration, task=tasks[0]).name)
            size = None if first is None else first.get("patch_size_bytes")
            step = None if first is None else first.get("seconds_per_step")
            row += [
                _share(first),
                "–" if size is None else f"{size / 1024:.1f}",
                "–" if step is None else f"{step:.3f}",
            ]
        table.append(row)
    return markdown_table(header, table)


def _adapter_sections(
    section: Any, results: dict[str, dict[str, Any]], classical: dict[str, Any], tasks: Sequence[str]
) -> None:
    """RQ6's tables (Adapter4Rec): the patch types beside the classical baselines, where to insert, LayerNorm tuning
    and the target data's size."""
    if not tasks:
        return
    plan = {key: {c.name: c for c in group} for key, group in adapter_study_plan(["{task}"]).items()}

    def title(configuration: Configuration) -> str:
        method = METHODS[configuration.method].title
        if METHODS[configuration.method].adds_patches:
            method = PATCH_TYPES[configuration.patch_type].title
        return f"{configuration.objective}: {method}"

    types = [(title(c), c) for c in plan["rq6_types"].values()]
    section(
        "RQ6: which patch type (Adapter4Rec), on a convolutional and a self-attention backbone",
        _study_rows(results, types, tasks, costs=True),
        f"Backbones: {'; '.join(f'`{b}` {SOURCE_BACKBONES[b].title}' for b in RQ6_BACKBONES)}, each pretrained on "
        f"the source domain; every configuration reads users with the {TRANSFER_READOUT} pooling. "
        f"{', '.join(METHODS[m].title for m in RQ6_BASELINE_METHODS)} are the references; the other rows freeze the "
        "backbone and train their patch and the head. s/step: training time per optimizer step of the first seed, "
        "evaluations included (`benchmarks/patch_types.py` times the step alone). Plot: `rq6_types.png`.\n\n"
        "The classical baselines on the same test rows:\n\n" + baselines_table(classical, tasks),
    )
    blocks = [
        (f"{c.objective}: {PATCH_TYPES[RQ6_PLACED_TYPE].title}, {c.blocks or BLOCK_CHOICES[0]} blocks", c)
        for c in plan["rq6_blocks"].values()
    ]
    section(
        f"RQ6: where to insert ({PATCH_TYPES[RQ6_PLACED_TYPE].title})", _study_rows(results, blocks, tasks)
    )
    norms = [
        (
            f"{c.objective}: {PATCH_TYPES[RQ6_PLACED_TYPE].title}, LayerNorms {'tuned' if c.train_layer_norms else 'frozen'}",
            c,
        )
        for c in plan["rq6_layer_norms"].values()
    ]
    section(
        "RQ6: LayerNorm tuning",
        _study_rows(results, norms, tasks, costs=True),
        "Tuned: every LayerNorm of the backbone trains as the task's own copy (the shared ones stay untouched).",
    )
    scaling = [
        (f"{title(c)}, {round(100 * c.train_fraction)}% of users", c) for c in plan["rq6_scaling"].values()
    ]
    section(
        "RQ6: scaling the target training data down",
        _study_rows(results, scaling, tasks),
        "Each seed draws its own subset of training users; validation and test users are unchanged. Plot: "
        "`rq6_scaling.png`.",
    )


RQ7_MEASURES = (
    ("mrr@5", "MRR@5"),
    ("hr@10", "HR@10"),
    ("ndcg@10", "NDCG@10"),
    ("full_hr@10", "HR@10 full"),
    ("full_ndcg@10", "NDCG@10 full"),
)
"""RQ7's measures: the sampled protocol (99 negatives, the paper's) and the full ranking over all target items."""


def cold_measure(metric: str) -> str:
    """The key of `metric` on the cold-target rows, as `finetune` writes it: `cold_hr@10`, `full_cold_hr@10`."""
    return metric.replace("full_", "full_cold_") if metric.startswith("full_") else f"cold_{metric}"


def _optional_aggregate(by_seed: dict[str, dict[str, float]] | None, metric: str) -> str:
    """`_seeds_aggregate`, or "–" when a seed lacks the measure (no cold row: no `cold_` measures)."""
    if by_seed is None or any(metric not in by_seed[seed] for seed in by_seed):
        return "–"
    return _seeds_aggregate(by_seed, metric)


def text_items_title(configuration: Configuration) -> str:
    """`text: PeterRec, item encoder (LoRA)`: the item representation and the method of an RQ7 configuration."""
    representation = SOURCE_BACKBONES[configuration.objective].item_representation
    method = METHODS[configuration.method].title
    if METHODS[configuration.method].adds_patches:
        target = PATCH_TARGETS[configuration.patch_target]
        patches = [PATCH_TYPES[configuration.patch_type].title] if target.user_encoder else []
        if target.item_encoder:
            patches.append(ITEM_PATCH_TYPES[configuration.item_patch_type].title)
        method = f"{method}, {target.title} ({' + '.join(patches)})"
    return f"{representation}: {method}"


def _text_items_section(
    section: Any, results: dict[str, dict[str, Any]], classical: dict[str, Any], tasks: Sequence[str]
) -> None:
    """RQ7's table (TransRec, docs/text_items.md): each configuration and each ColdRec baseline on every test row and
    on the cold-target rows, with the trainable share and the seconds per step."""
    if not tasks:
        return
    (task,) = tasks
    configurations = text_items_plan(tasks)["rq7_text_items"]
    counts = {
        run["cold_rows"]
        for c in configurations
        if c.name in results
        for run in results[c.name]["test"].values()
        if "cold_rows" in run
    }
    cold = f"{counts.pop()} test rows" if len(counts) == 1 else "test rows"
    header = [
        "Items: method",
        *(title for _, title in RQ7_MEASURES),
        *(f"cold {title}" for _, title in RQ7_MEASURES),
        "Trainable",
        "s/step",
    ]

    def measures(by_seed: dict[str, dict[str, float]] | None) -> list[str]:
        return [_optional_aggregate(by_seed, key) for key, _ in RQ7_MEASURES] + [
            _optional_aggregate(by_seed, cold_measure(key)) for key, _ in RQ7_MEASURES
        ]

    rows = []
    for configuration in configurations:
        result = results.get(configuration.name)
        step = None if result is None else result.get("seconds_per_step")
        rows.append(
            [
                text_items_title(configuration),
                *measures(None if result is None else result["test"]),
                _share(result),
                "–" if step is None else f"{step:.3f}",
            ]
        )
    baselines = classical.get(task, {})
    rows += [
        [f"baseline: {BASELINES[name].title}", *measures(by_seed), "–", "–"]
        for name, by_seed in baselines.items()
    ]
    backbones = "; ".join(f"`{b}` {SOURCE_BACKBONES[b].title}" for b in RQ7_BACKBONES)
    section(
        f"RQ7: items from their text (TransRec) on {TASK_TITLES[task]}, all target items and the cold ones",
        markdown_table(header, rows),
        f"Cold: the {cold} whose target item occurs in no training pair of the task; an ID model has only a "
        "random row for such an item, a text model its text. Backbones: "
        f"{backbones}; the text encoder is the small offline one (a word vocabulary over the catalogue's texts and a "
        "2-layer BERT of width 64, trained only by next-item prediction on the source domain; no pretrained language "
        "model). Every configuration reads users with the "
        f"{TRANSFER_READOUT} pooling. Every backbone and every fine-tuning run trains with the preset's batch size "
        "and epochs, texts or IDs; a run that trains the item encoder (FineAll, and PeterRec with an adapter in the "
        "item encoder) encodes its batches' items at every step, the others encode a frozen item encoder once. "
        "s/step: training time per "
        "optimizer step of the first seed, evaluations included. The baselines score the same rows and candidates; "
        "on the cold rows none of them has anything learned for the true item (popularity, item-kNN and EASE give "
        "it 0, and ties count against it), so what they score there is what ranking it last (or, for EASE, above "
        "the candidates it scores below zero) gives.",
    )


def _tuning_sentence(preset: dict[str, Any]) -> str:
    tune = {key: list(values) for key, values in preset["tune"].items()}
    if not any(len(values) > 1 for values in tune.values()):
        return "no hyperparameter selection."
    where = (
        f"{preset['folds']}-fold cross-validation inside the training users"
        if preset["selection"] == "cv"
        else "the validation split"
    )
    return f"candidates {tune} chosen by {where}."


def selection_table(selected: dict[str, dict[str, Any]]) -> str:
    """Rows: (configuration, candidate) with the candidate's mean ± std over the held-out sets, the chosen one
    in bold; `selected` maps configuration names to their `Selection.as_dict()` records."""
    rows = []
    for name, selection in selected.items():
        for label, candidate in selection["candidates"].items():
            cell = str(Aggregate(candidate["mean"], candidate["std"]))
            if label == selection["chosen"]:
                label, cell = f"**{label}**", f"**{cell}**"
            rows.append(
                [
                    name,
                    label,
                    f"{selection['scheme']} ({selection['held_out_sets']})",
                    selection["metric"],
                    cell,
                ]
            )
    return markdown_table(
        ["Configuration", "Candidate", "Scheme (held-out sets)", "Measure", "Mean ± std"], rows
    )


def write_plots(report: dict[str, Any], output_dir: Path) -> list[str]:
    """The learning-curve figures of RQ1, RQ2 and the few-label study; returns their file names."""
    results, plan, written = report["configurations"], report["plan"], []

    def panel(labelled: dict[str, Configuration]) -> dict[str, list]:
        return {
            label: list(results[configuration.name]["curves"].values())
            for label, configuration in labelled.items()
            if configuration.name in results
        }

    figures = {}
    tasks = [task for task in ALL_TASKS if task in report["tasks"]]
    if "rq1" in plan:
        figures["rq1_curves.png"] = {
            TASK_TITLES[task]: panel({METHODS[m].title: Configuration(task, m) for m in RQ1_METHODS})
            for task in tasks
        }
    if "rq2" in plan:
        figures["rq2_curves.png"] = {
            TASK_TITLES[task]: panel(
                {
                    **{METHODS[m].title: Configuration(task, m, "masked") for m in RQ2_METHODS},
                    **{
                        f"PeterRec {INSERTIONS[i].figure[1:]}": Configuration(task, "peterrec", "masked", i)
                        for i in ("serial_two", "parallel_before_ln")
                    },
                },
            )
            for task in tasks
            if task in RQ2_TASKS
        }
    few_label_titles = {
        fraction: f"{TASK_TITLES[FEW_LABEL_TASK]}, {round(100 * fraction)}% of users"
        for fraction in FEW_LABEL_FRACTIONS
    }
    if "rq4_few_labels" in plan:
        figures["rq4_few_labels.png"] = {
            title: panel(
                {
                    METHODS[m].title: Configuration(FEW_LABEL_TASK, m, train_fraction=fraction)
                    for m in ("peterrec", "fine_all")
                },
            )
            for fraction, title in few_label_titles.items()
        }
    ylabels = {
        **{TASK_TITLES[task]: f"validation {task_kind(task).selection_title}" for task in ALL_TASKS},
        **{
            title: f"validation {task_kind(FEW_LABEL_TASK).selection_title}"
            for title in few_label_titles.values()
        },
    }
    for name, panels in figures.items():
        panels = {title: lines for title, lines in panels.items() if lines}
        if panels:
            plot_curves(panels, output_dir / name, ylabels)
            written.append(name)
    if "rq6_types" in plan:
        written += _adapter_plots(results, [task for task in tasks if task in RQ6_TASKS], output_dir)
    return written


def _adapter_plots(results: dict[str, dict[str, Any]], tasks: Sequence[str], output_dir: Path) -> list[str]:
    """RQ6's figures: each configuration's test measure per task (`rq6_types.png`) and the measure against the share
    of training users (`rq6_scaling.png`)."""
    study, written = adapter_study_plan(tasks), []
    ylabels = {TASK_TITLES[task]: f"test {task_kind(task).selection_title}" for task in tasks}
    bars = {
        TASK_TITLES[task]: {
            f"{c.objective}: {c.patch_type if METHODS[c.method].adds_patches else METHODS[c.method].title}": Aggregate.of(
                [run[task_kind(task).selection_metric] for run in results[c.name]["test"].values()]
            ).mean
            for c in study["rq6_types"]
            if c.task == task and c.name in results
        }
        for task in tasks
    }
    bars = {title: values for title, values in bars.items() if values}
    if bars:
        plot_comparison(bars, output_dir / "rq6_types.png", ylabels)
        written.append("rq6_types.png")
    lines = {
        TASK_TITLES[task]: {
            label: [
                [
                    (c.train_fraction, results[c.name]["test"][seed][task_kind(task).selection_metric])
                    for c in group
                ]
                for seed in results[group[0].name]["test"]
            ]
            for label, group in _scaling_lines(study["rq6_scaling"], task).items()
            if all(c.name in results for c in group)
        }
        for task in tasks
    }
    lines = {title: curves for title, curves in lines.items() if curves}
    if lines:
        plot_curves(lines, output_dir / "rq6_scaling.png", ylabels, xlabel="share of the training users")
        written.append("rq6_scaling.png")
    return written


def _scaling_lines(configurations: Sequence[Configuration], task: str) -> dict[str, list[Configuration]]:
    """RQ6's scaling configurations of `task` by line (backbone and method), in order of the share of users."""
    lines: dict[str, list[Configuration]] = {}
    for c in configurations:
        if c.task == task:
            method = c.patch_type if METHODS[c.method].adds_patches else METHODS[c.method].title
            lines.setdefault(f"{c.objective}: {method}", []).append(c)
    return {label: sorted(group, key=lambda c: c.train_fraction) for label, group in lines.items()}


def write_report(report: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Writes the plots, `reproduction.json` and `reproduction.md` into `output_dir`; returns the report with its
    plot names."""
    report["plots"] = write_plots(report, output_dir)
    write_json(output_dir / "reproduction.json", report)
    (output_dir / "reproduction.md").write_text(render_report(report))
    return report
