"""Reproduction of the paper's experiments (Section 4, RQ1-RQ4) on MovieLens-1M: `peterrec reproduce`.

Every number in `results/` comes from one command. The runner pretrains one backbone per objective (causal
NextItNet, masked GRec encoder) on the ColdRec source domain (`pretrain_source`), fine-tunes every configuration
that the chosen research questions need with `training.finetune` (three seeds each), computes the rule-based
baselines with the same metric functions, and writes a markdown report, a JSON file and learning-curve plots:

- RQ1 (Table 2, Figure 4): PeterRec vs PeterZero and FineAll vs FineZero, causal backbone, serial insertion (c).
- RQ2 (Table 3, Figure 5): FineCLS, FineLast1, FineLast2, FineAll and PeterRec with serial (c) and parallel (d)
  insertion on the non-causal backbone, with the trainable share of each method.
- RQ3 (Tables 4, 5): the majority-class rule (LabelCS) for user profiles and item popularity for ColdRec.
- RQ4 (Tables 6, 7, Figure 6): causal vs non-causal pretraining, insertions (b)-(e), and PeterRec vs FineAll
  with 10% and 30% of the training users.

Honest tuning: when a preset lists several learning rates, each configuration picks one by its validation metric,
using the first seed on a copy of the task whose `test` split *is* the validation split; the real test split is
read exactly once per (configuration, seed), by the final run. Runs whose `metrics.json` exists are skipped, so
an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as transformers_logging

from tokenization import ItemTokenizer

from ..data import default_cache_dir, load_task
from ..metrics import classification_metrics, exclusion_mask, full_ranking_metrics, sampled_ranking_metrics
from ..patching import PATCHED_METHODS
from ..training import (
    METRICS_FILE,
    FinetuneArguments,
    PeterRecTrainingArguments,
    PretrainArguments,
    finetune,
    pretrain,
    ranking_datasets,
    write_json,
)

logger = transformers_logging.get_logger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Presets and configurations
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Model size and training budget of one reproduction. `learning_rates` is the grid searched on validation
    for every configuration (one value: no search)."""

    name: str
    hidden_size: int
    dilations: tuple[int, ...]
    max_length: int
    pretrain_epochs: float
    finetune_epochs: float
    coldrec_epochs: float
    pretrain_batch_size: int
    finetune_batch_size: int
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    evaluations_per_run: int = 6
    num_eval_negatives: int = 99


PRESETS = {
    "smoke": Preset(
        "smoke",
        16,
        (1, 2),
        20,
        1,
        1,
        1,
        64,
        64,
        (1e-3,),
        seeds=(0,),
        evaluations_per_run=2,
        num_eval_negatives=5,
    ),
    "cpu": Preset("cpu", 64, (1, 2, 4, 8) * 2, 50, 1, 2, 1, 64, 64, (1e-3,)),
    "paper": Preset("paper", 256, (1, 2, 4, 8) * 4, 100, 10, 20, 10, 32, 64, (1e-3, 1e-4)),
}
"""`cpu`: 8 conv layers of width 64 over the 50 most recent items, sized to run on two CPU cores (see
docs/reproduction.md for its wall time). `paper`: the paper's backbone (hidden 256, dilations [1, 2, 4, 8] x 4,
Section 4.1) and its learning-rate range 1e-3 to 1e-4, for a GPU. `smoke`: a seconds-long check of the plumbing."""

PROFILE_TASKS = ("genest", "ageest", "lifestatus")
TASKS = (*PROFILE_TASKS, "coldrec")
ALL_TASKS = ("genest", "ageest", "lifeest", "lifestatus", "coldrec")
TASK_TITLES = {
    "genest": "GenEst",
    "ageest": "AgeEst",
    "lifeest": "LifeEst (occupation)",
    "lifestatus": "LifeEst (life status)",
    "coldrec": "ColdRec",
}
DATASET_TITLES = {"ml-1m": "MovieLens-1M", "ml-100k": "MovieLens-100K"}
RQ2_TASKS = ("ageest", "coldrec")
"""The tasks of the paper's Figure 5 (and of Table 6, for RQ4's causal vs non-causal comparison)."""
INSERTION_TASK = "ageest"
"""Table 7 compares the insertions on AgeEst."""
FEW_LABEL_TASK = "lifestatus"
FEW_LABEL_FRACTIONS = (0.1, 0.3)
"""Figure 6: LifeEst with a fraction of the training users."""

INSERTIONS = {
    "serial_one": "(b) serial, one patch per block",
    "serial_two": "(c) serial, two patches per block",
    "parallel_before_ln": "(d) parallel, before LayerNorm",
    "parallel_after_act": "(e) parallel, after ReLU",
}
METHOD_TITLES = {
    "peterrec": "PeterRec",
    "peter_zero": "PeterZero",
    "fine_all": "FineAll",
    "fine_zero": "FineZero",
    "fine_cls": "FineCLS",
    "fine_last1": "FineLast1",
    "fine_last2": "FineLast2",
}
RQ1_METHODS = ("peterrec", "peter_zero", "fine_all", "fine_zero")
RQ2_METHODS = ("fine_cls", "fine_last1", "fine_last2", "fine_all")
RESEARCH_QUESTIONS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Configuration:
    """One fine-tuning setting, run once per seed: a task, a method, the backbone's pretraining objective, and
    the PeterRec patch options (ignored by the methods without patches)."""

    task: str
    method: str
    objective: str = "causal"
    insertion: str | None = "serial_two"
    train_fraction: float = 1.0
    bottleneck_size: int | None = None
    train_layer_norms: tuple[str, ...] = ()
    train_tcl_embedding: bool = False
    readout: str = "tcl"

    def __post_init__(self) -> None:
        if self.method not in PATCHED_METHODS:
            for name in ("insertion", "bottleneck_size"):
                object.__setattr__(self, name, None)
            object.__setattr__(self, "train_layer_norms", ())
            object.__setattr__(self, "train_tcl_embedding", False)
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}.")

    @property
    def name(self) -> str:
        """Folder name of the configuration's runs, unique per setting."""
        parts = [self.objective, self.task, self.method]
        if self.insertion is not None:
            parts.append(self.insertion)
        if self.bottleneck_size is not None:
            parts.append(f"bottleneck{self.bottleneck_size}")
        parts.extend(f"train_{norm}" for norm in self.train_layer_norms)
        if self.train_tcl_embedding:
            parts.append("train_tcl")
        if self.train_fraction < 1:
            parts.append(f"train{round(100 * self.train_fraction)}pct")
        if self.readout != "tcl":
            parts.append(f"readout_{self.readout}")
        return "-".join(parts)


def research_plan(rqs: Iterable[int], tasks: Sequence[str]) -> dict[str, list[Configuration]]:
    """The configurations each experiment needs, keyed `rq1`, `rq2`, `rq3`, `rq4_objective`, `rq4_insertion`,
    `rq4_few_labels`; `tasks` restricts every experiment to those tasks."""
    rqs, chosen = set(rqs), [task for task in ALL_TASKS if task in tasks]
    plan: dict[str, list[Configuration]] = {}
    if 1 in rqs:
        plan["rq1"] = [Configuration(task, method) for task in chosen for method in RQ1_METHODS]
    if 2 in rqs:
        plan["rq2"] = [
            *(
                Configuration(task, method, "masked")
                for task in chosen
                if task in RQ2_TASKS
                for method in RQ2_METHODS
            ),
            *(
                Configuration(task, "peterrec", "masked", insertion)
                for task in chosen
                if task in RQ2_TASKS
                for insertion in ("serial_two", "parallel_before_ln")
            ),
        ]
    if 3 in rqs:
        plan["rq3"] = [Configuration(task, "peterrec") for task in chosen]
    if 4 in rqs:
        plan["rq4_objective"] = [
            Configuration(task, "peterrec", objective)
            for task in chosen
            if task in RQ2_TASKS
            for objective in ("causal", "masked")
        ]
        plan["rq4_insertion"] = [
            Configuration(INSERTION_TASK, "peterrec", "masked", insertion)
            for insertion in INSERTIONS
            if INSERTION_TASK in chosen
        ]
        plan["rq4_few_labels"] = [
            Configuration(FEW_LABEL_TASK, method, train_fraction=fraction)
            for fraction in (*FEW_LABEL_FRACTIONS, 1.0)
            for method in ("peterrec", "fine_all")
            if FEW_LABEL_TASK in chosen
        ]
    return {key: configurations for key, configurations in plan.items() if configurations}


def unique_configurations(plan: dict[str, list[Configuration]]) -> list[Configuration]:
    """Every configuration of the plan once, in first-use order (experiments share runs)."""
    return list(dict.fromkeys(configuration for group in plan.values() for configuration in group))


# ---------------------------------------------------------------------------------------------------------------
# Aggregation and rendering
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Aggregate:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for one value) over seeds."""

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
        return f"{self.mean:.4f} ± {self.std:.4f}"


def flat_test_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The test measures of a `finetune` summary, full-ranking ones prefixed `full_`, without the loss."""
    metrics = {key: value for key, value in summary["test"].items() if key != "loss"}
    metrics.update({f"full_{key}": value for key, value in summary.get("test_full_ranking", {}).items()})
    return metrics


def aggregate_runs(runs: dict[int, dict[str, float]]) -> dict[str, Aggregate]:
    """Per-metric `Aggregate` over the seeds' metric dictionaries (metrics that every seed reports)."""
    names = set.intersection(*(set(metrics) for metrics in runs.values()))
    return {name: Aggregate.of([runs[seed][name] for seed in sorted(runs)]) for name in sorted(names)}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    align = [":--", *("--:" for _ in header[1:])]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def selection_metric(task_kind: str) -> str:
    """The validation measure that picks the checkpoint and the learning rate (as `training.finetune` does)."""
    return "accuracy" if task_kind == "classification" else "mrr@5"


def reported_metrics(task: str) -> list[tuple[str, str]]:
    """(metric key, title) pairs a table shows for a task: accuracy, or HR@5 and MRR@5 among 99 sampled
    negatives (the paper's protocol) and MRR@5 of the full ranking over all target items."""
    if task == "coldrec":
        return [("hr@5", "HR@5"), ("mrr@5", "MRR@5"), ("full_mrr@5", "MRR@5 full")]
    return [("accuracy", "Acc")]


# ---------------------------------------------------------------------------------------------------------------
# Data variants: few labels, and the tuning copy whose test split is the validation split
# ---------------------------------------------------------------------------------------------------------------


def derived_task(
    splits, folder: Path, train_fraction: float = 1.0, seed: int = 0, for_tuning: bool = False
) -> Path:
    """Saves (once) a variant of a task's `DatasetDict` and returns its folder.

    `train_fraction` keeps that share of the training rows (a seeded random subset, Figure 6); `for_tuning`
    replaces the test split by the validation split, so that a run made to choose hyperparameters cannot read
    the test split.
    """
    if (folder / "dataset_dict.json").is_file():
        return folder
    from datasets import DatasetDict

    train = splits["train"]
    if train_fraction < 1:
        train = train.shuffle(seed=seed).select(range(max(1, round(train_fraction * len(train)))))
    variant = DatasetDict(
        {
            "train": train,
            "validation": splits["validation"],
            "test": splits["validation" if for_tuning else "test"],
        }
    )
    temporary = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    variant.save_to_disk(str(temporary))
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Reproduction:
    """Runs a research plan with one preset and collects its results.

    `dataset` names a MovieLens release (tasks from the data cache); `data_dir` instead holds one `DatasetDict`
    folder per task name (`pretrain_source`, `genest`, ..., saved with `save_to_disk`). Runs go to `work_dir`;
    derived task variants (few labels, tuning copies) to `<cache_dir>/reproduce`.
    """

    preset: Preset
    work_dir: Path
    dataset: str = "ml-1m"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    finetune_fn: Callable[..., dict[str, Any]] = finetune
    pretrain_fn: Callable[..., dict[str, Any]] = pretrain
    run_missing: bool = True
    _splits: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        source = self.data_dir if self.data_dir is not None else f"{self.dataset}"
        self.derived_dir = default_cache_dir(self.cache_dir) / "reproduce" / Path(str(source)).name

    # Data ----------------------------------------------------------------------------------------------------

    def splits(self, task: str):
        """The `DatasetDict` of a task (loaded once)."""
        if task not in self._splits:
            if self.data_dir is not None:
                from datasets import load_from_disk

                folder = Path(self.data_dir) / task
                if not folder.is_dir():
                    raise FileNotFoundError(
                        f"{folder} does not exist; --data_dir needs one DatasetDict folder per task ({task})."
                    )
                self._splits[task] = load_from_disk(str(folder))
            else:
                self._splits[task] = load_task(self.dataset, task, self.cache_dir)
        return self._splits[task]

    def _data_arguments(
        self, task: str, train_fraction: float, seed: int, for_tuning: bool
    ) -> dict[str, Any]:
        """Where `finetune` reads a configuration's task: the original task, or a derived variant."""
        arguments = {"task": task, "max_length": self.preset.max_length, "cache_dir": self._cache()}
        if train_fraction == 1 and not for_tuning:
            if self.data_dir is None:
                return {**arguments, "dataset": self.dataset}
            return {**arguments, "data_dir": str(Path(self.data_dir) / task)}
        name = task
        if train_fraction < 1:
            name += f"-train{round(100 * train_fraction)}pct-seed{seed}"
        if for_tuning:
            name += "-tuning"
        folder = derived_task(self.splits(task), self.derived_dir / name, train_fraction, seed, for_tuning)
        return {**arguments, "data_dir": str(folder)}

    def _cache(self) -> str | None:
        return None if self.cache_dir is None else str(self.cache_dir)

    # Pretraining ---------------------------------------------------------------------------------------------

    def backbone(self, objective: str) -> dict[str, Any]:
        """Pretrains (or finds) the backbone of one objective on the source domain; returns its summary."""
        run_dir = self.work_dir / "backbones" / objective
        if (run_dir / METRICS_FILE).is_file():
            return json.loads((run_dir / METRICS_FILE).read_text())
        if not self.run_missing:
            raise FileNotFoundError(
                f"No {objective} backbone in {run_dir}; run the reproduction without --report_only first."
            )
        preset = self.preset
        logger.info(f"Pretraining the {objective} backbone ({preset.name} preset)")
        data = (
            {"data_dir": str(Path(self.data_dir) / "pretrain_source")}
            if self.data_dir is not None
            else {"dataset": self.dataset}
        )
        summary = self.pretrain_fn(
            PretrainArguments(
                task="pretrain_source",
                objective=objective,
                hidden_size=preset.hidden_size,
                dilations=list(preset.dilations),
                max_length=preset.max_length,
                window_stride=preset.max_length,
                cache_dir=self._cache(),
                **data,
            ),
            self._training_arguments(
                run_dir, preset.pretrain_epochs, preset.pretrain_batch_size, 1e-3, 0, evaluations=2
            ),
        )
        _remove_checkpoints(run_dir)
        return summary

    def backbone_folder(self, objective: str, readout: str = "tcl") -> str:
        """The backbone folder of an objective; for another readout (Figure 2d), a copy whose config says so (the
        weights, hence the fingerprint that patches check, are the same)."""
        folder = Path(self.backbone(objective)["backbone"])
        if readout == "tcl":
            return str(folder)
        variant = self.work_dir / "backbones" / f"{objective}-readout_{readout}"
        if not (variant / "config.json").is_file():
            shutil.copytree(folder, variant, dirs_exist_ok=True)
            config = json.loads((variant / "config.json").read_text())
            (variant / "config.json").write_text(json.dumps({**config, "readout": readout}, indent=2))
        return str(variant)

    # Fine-tuning ---------------------------------------------------------------------------------------------

    def _training_arguments(
        self,
        output_dir: Path,
        epochs: float,
        batch_size: int,
        learning_rate: float,
        seed: int,
        evaluations: int | None = None,
    ) -> PeterRecTrainingArguments:
        # Evaluating (and checkpointing) a fixed number of times per run gives the learning curves their points
        # (Figures 4-6); the best validation checkpoint is kept either way.
        every = 1 / (evaluations or self.preset.evaluations_per_run)
        return PeterRecTrainingArguments(
            output_dir=str(output_dir),
            num_train_epochs=epochs,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=256,
            eval_strategy="steps",
            save_strategy="steps",
            eval_steps=every,
            save_steps=every,
            logging_steps=every / 2,
            save_total_limit=1,
            seed=seed,
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
        )

    def run(
        self,
        configuration: Configuration,
        seed: int,
        learning_rate: float,
        output_dir: Path,
        for_tuning: bool,
    ) -> dict[str, Any]:
        """One `finetune` run of a configuration (skipped when its `metrics.json` exists)."""
        if (output_dir / METRICS_FILE).is_file():
            return json.loads((output_dir / METRICS_FILE).read_text())
        if not self.run_missing:
            raise MissingRunError(output_dir)
        preset = self.preset
        backbone = self.backbone_folder(configuration.objective, configuration.readout)
        arguments = FinetuneArguments(
            backbone=backbone,
            method=configuration.method,
            insertion=configuration.insertion or "serial_two",
            bottleneck_size=configuration.bottleneck_size,
            train_layer_norms=list(configuration.train_layer_norms),
            train_tcl_embedding=configuration.train_tcl_embedding,
            num_eval_negatives=preset.num_eval_negatives,
            **self._data_arguments(configuration.task, configuration.train_fraction, seed, for_tuning),
        )
        epochs = preset.coldrec_epochs if configuration.task == "coldrec" else preset.finetune_epochs
        started = time.perf_counter()
        summary = self.finetune_fn(
            arguments,
            self._training_arguments(output_dir, epochs, preset.finetune_batch_size, learning_rate, seed),
        )
        _remove_checkpoints(output_dir)
        logger.info(f"{output_dir.relative_to(self.work_dir)}: {time.perf_counter() - started:.0f}s")
        return summary

    def choose_learning_rate(self, configuration: Configuration) -> tuple[float, dict[str, float]]:
        """The preset's learning rate with the best validation measure on the first seed, read from tuning runs
        whose test split is the validation split; returns it and every candidate's validation measure."""
        rates = self.preset.learning_rates
        if len(rates) == 1:
            return rates[0], {}
        seed, scores = self.preset.seeds[0], {}
        for rate in rates:
            output_dir = self.work_dir / "tuning" / configuration.name / f"lr{rate:g}"
            summary = self.run(configuration, seed, rate, output_dir, for_tuning=True)
            scores[f"{rate:g}"] = summary["validation"][selection_metric(summary["task_kind"])]
        best = max(rates, key=lambda rate: scores[f"{rate:g}"])
        return best, scores

    def configuration_result(self, configuration: Configuration) -> dict[str, Any]:
        """Chooses the learning rate on validation, runs every seed once (the only reads of the test split) and
        aggregates the test measures."""
        learning_rate, tuning = self.choose_learning_rate(configuration)
        summaries = {
            seed: self.run(
                configuration,
                seed,
                learning_rate,
                self.work_dir / configuration.name / f"seed{seed}",
                for_tuning=False,
            )
            for seed in self.preset.seeds
        }
        first = summaries[self.preset.seeds[0]]
        kind = first["task_kind"]
        return {
            "configuration": asdict(configuration),
            "task_kind": kind,
            "learning_rate": learning_rate,
            "validation_by_learning_rate": tuning,
            "trainable_parameters": first["trainable_parameters"],
            "total_parameters": first["total_parameters"],
            "trainable_share": first["trainable_parameters"] / first["total_parameters"],
            "test": {seed: flat_test_metrics(summary) for seed, summary in summaries.items()},
            "validation": {seed: summary["validation"] for seed, summary in summaries.items()},
            "curves": {
                seed: validation_curve(summary["log_history"], selection_metric(kind))
                for seed, summary in summaries.items()
            },
            "wall_time_s": sum(summary.get("wall_time_s", 0.0) for summary in summaries.values()),
        }

    # Baselines (RQ3) -----------------------------------------------------------------------------------------

    def majority_baseline(self, task: str) -> dict[int, dict[str, float]]:
        """LabelCS: every test user gets the most frequent training label (same value for every seed)."""
        splits = self.splits(task)
        majority = majority_label(splits["train"]["label"])
        labels = splits["test"]["label"]
        metrics = classification_metrics([majority] * len(labels), labels)
        return {seed: metrics for seed in self.preset.seeds}

    def popularity_baseline(self, task: str) -> dict[int, dict[str, float]]:
        """Item popularity for ColdRec: each target item scored by how many training users have it, evaluated on
        each seed's sampled candidates (the ones the models get) and over the full ranking."""
        splits = self.splits(task)
        tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])
        num_items = len(splits["train"].features["targets"].feature.names)
        popularity = item_popularity(splits["train"]["targets"], num_items)
        results = {}
        for seed in self.preset.seeds:
            _, _, test = ranking_datasets(splits, tokenizer, self.preset.num_eval_negatives, seed)
            results[seed] = popularity_metrics(
                popularity, test["candidate_ids"], test["target"], test["positives"], num_items
            )
        return results


class MissingRunError(RuntimeError):
    """A run that a report-only pass needs has not been made yet."""


def _remove_checkpoints(run_dir: Path) -> None:
    """Drops the Trainer's checkpoint folders of a finished run (the metrics, curve, patch or backbone stay)."""
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def majority_label(labels: Sequence[int]) -> int:
    """The most frequent label (the smallest id among ties)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64)).argmax())


def item_popularity(targets: Sequence[Sequence[int]], num_items: int) -> torch.Tensor:
    """How many training users have each target item."""
    counts = torch.zeros(num_items)
    for items in targets:
        counts[torch.as_tensor(sorted(set(items)), dtype=torch.long)] += 1
    return counts


def popularity_metrics(
    popularity: torch.Tensor,
    candidate_ids: Sequence[Sequence[int]],
    targets: Sequence[int],
    positives: Sequence[Sequence[int]],
    num_items: int,
) -> dict[str, float]:
    """Sampled (true item in column 0 of `candidate_ids`) and full-ranking measures of the popularity scores."""
    candidates = torch.as_tensor(candidate_ids, dtype=torch.long)
    metrics = sampled_ranking_metrics(popularity[candidates])
    scores = popularity.expand(len(targets), num_items)
    full = full_ranking_metrics(scores, targets, exclusion_mask(positives, num_items))
    metrics.update({f"full_{key}": value for key, value in full.items()})
    return metrics


def validation_curve(log_history: list[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    """(epoch, validation `metric`) at every evaluation during training (the final re-evaluation excluded)."""
    points = [(entry["epoch"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    seen, curve = set(), []
    for epoch, value in points:
        if epoch not in seen:
            seen.add(epoch)
            curve.append((epoch, value))
    return curve


# ---------------------------------------------------------------------------------------------------------------
# Report: tables, plots, JSON
# ---------------------------------------------------------------------------------------------------------------


def _cell(result: dict[str, Any] | None, metric: str) -> str:
    if result is None:
        return "–"
    return str(Aggregate.of([result["test"][seed][metric] for seed in sorted(result["test"])]))


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


def render_report(report: dict[str, Any]) -> str:
    """The markdown of results/reproduction.md: one table per experiment, from the JSON report."""
    results, baselines, plan = report["configurations"], report["baselines"], report["plan"]
    preset = report["preset"]
    lines = [
        f"# Reproduction of the paper's findings on {report['data']}",
        "",
        f"Preset `{preset['name']}`: hidden {preset['hidden_size']}, dilations {list(preset['dilations'])}, "
        f"the {preset['max_length']} most recent items, seeds {list(preset['seeds'])}, learning rate(s) "
        f"{list(preset['learning_rates'])} (chosen on validation when several). Cells: test mean ± sample std "
        f"over seeds. The runs took {report['run_time_s'] / 60:.0f} min one after the other (pretraining and "
        f"fine-tuning, as timed by each run); this pass {report['wall_time_s'] / 60:.0f} min. Generated by "
        f"`{report['command']}`.",
        "",
        "## Backbones (pretrained on the ColdRec source domain)",
        "",
        markdown_table(
            ["Objective", "Parameters", "MRR@5", "HR@5", "Pretraining time"],
            [
                [
                    objective,
                    f"{summary['num_parameters']:,}",
                    f"{summary['test']['mrr@5']:.4f}",
                    f"{summary['test']['hr@5']:.4f}",
                    f"{summary['train_runtime_s'] / 60:.1f} min",
                ]
                for objective, summary in report["backbones"].items()
            ],
        ),
        "",
        "MRR@5 / HR@5: the held-out last item of each user ranked over the whole item pool (test split).",
    ]
    tasks = [task for task in ALL_TASKS if task in report["tasks"]]

    def section(title: str, table: str, note: str = "") -> None:
        lines.extend(["", f"## {title}", "", table])
        if note:
            lines.extend(["", note])

    if "rq1" in plan:
        columns = [(METHOD_TITLES[method], Configuration("{task}", method)) for method in RQ1_METHODS]
        section(
            "RQ1: does pretraining help? (causal backbone, serial insertion (c); Table 2)",
            _methods_by_task_table(results, columns, tasks),
            "PeterZero and FineZero train the same parameters as PeterRec and FineAll on a random backbone. "
            "Learning curves: `rq1_curves.png`.",
        )
    if "rq2" in plan:
        rq2_tasks = [task for task in tasks if task in RQ2_TASKS]
        columns = [
            (METHOD_TITLES[method], Configuration("{task}", method, "masked")) for method in RQ2_METHODS
        ]
        columns += [
            (
                f"PeterRec {INSERTIONS[insertion][:3]}",
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
            baseline = baselines.get(task)
            peterrec = results.get(Configuration(task, "peterrec").name)
            for metric, metric_title in reported_metrics(task):
                rule = "–" if baseline is None else str(_baseline_aggregate(baseline, metric))
                rows.append([f"{TASK_TITLES[task]} {metric_title}", rule, _cell(peterrec, metric)])
        section(
            "RQ3: PeterRec against rule baselines (Tables 4, 5)",
            markdown_table(["Task", "LabelCS / popularity", "PeterRec"], rows),
            "LabelCS predicts the most frequent training label; ColdRec's baseline ranks target items by the "
            "number of training users who liked them, on the same sampled candidates as the models.",
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
                INSERTIONS[insertion],
                _cell(
                    results.get(Configuration(INSERTION_TASK, "peterrec", "masked", insertion).name),
                    "accuracy",
                ),
                _share(results.get(Configuration(INSERTION_TASK, "peterrec", "masked", insertion).name)),
            ]
            for insertion in INSERTIONS
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
    return "\n".join(lines) + "\n"


def _share(result: dict[str, Any] | None) -> str:
    if result is None:
        return "–"
    return f"{result['trainable_parameters']:,} ({100 * result['trainable_share']:.2f}%)"


def _baseline_aggregate(baseline: dict[str, dict[str, float]], metric: str) -> Aggregate:
    return Aggregate.of([baseline[seed][metric] for seed in sorted(baseline)])


def plot_curves(
    panels: dict[str, dict[str, list[list[tuple[float, float]]]]], path: Path, ylabels: dict[str, str]
) -> None:
    """One panel per title; one line per label: the validation measure by epoch, averaged over seeds (like the
    paper's Figures 4-6, which plot the measure during fine-tuning)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (title, lines) in zip(axes[0], panels.items(), strict=True):
        for label, curves in lines.items():
            mean = mean_curve(curves)
            if mean:
                axis.plot(*zip(*mean, strict=True), marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabels[title])
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Point-wise mean of curves evaluated at the same epochs (the shortest curve sets the length)."""
    curves = [curve for curve in curves if curve]
    if not curves:
        return []
    length = min(len(curve) for curve in curves)
    return [
        (curves[0][index][0], statistics.fmean(curve[index][1] for curve in curves))
        for index in range(length)
    ]


def write_plots(report: dict[str, Any], output_dir: Path) -> list[str]:
    """The learning-curve figures of RQ1, RQ2 and the few-label study; returns their file names."""
    results, plan, written = report["configurations"], report["plan"], []

    def panel(task: str, labelled: dict[str, Configuration]) -> dict[str, list]:
        return {
            label: list(results[configuration.name]["curves"].values())
            for label, configuration in labelled.items()
            if configuration.name in results
        }

    def ylabel(task: str) -> str:
        return "validation accuracy" if task != "coldrec" else "validation MRR@5"

    figures = {}
    tasks = [task for task in ALL_TASKS if task in report["tasks"]]
    if "rq1" in plan:
        figures["rq1_curves.png"] = {
            TASK_TITLES[task]: panel(task, {METHOD_TITLES[m]: Configuration(task, m) for m in RQ1_METHODS})
            for task in tasks
        }
    if "rq2" in plan:
        figures["rq2_curves.png"] = {
            TASK_TITLES[task]: panel(
                task,
                {
                    **{METHOD_TITLES[m]: Configuration(task, m, "masked") for m in RQ2_METHODS},
                    "PeterRec (c)": Configuration(task, "peterrec", "masked", "serial_two"),
                    "PeterRec (d)": Configuration(task, "peterrec", "masked", "parallel_before_ln"),
                },
            )
            for task in tasks
            if task in RQ2_TASKS
        }
    if "rq4_few_labels" in plan:
        figures["rq4_few_labels.png"] = {
            f"{TASK_TITLES[FEW_LABEL_TASK]}, {round(100 * fraction)}% of users": panel(
                FEW_LABEL_TASK,
                {
                    METHOD_TITLES[m]: Configuration(FEW_LABEL_TASK, m, train_fraction=fraction)
                    for m in ("peterrec", "fine_all")
                },
            )
            for fraction in FEW_LABEL_FRACTIONS
        }
    ylabels = {
        **{TASK_TITLES[task]: ylabel(task) for task in ALL_TASKS},
        **{
            f"{TASK_TITLES[FEW_LABEL_TASK]}, {round(100 * f)}% of users": "validation accuracy"
            for f in FEW_LABEL_FRACTIONS
        },
    }
    for name, panels in figures.items():
        panels = {title: lines for title, lines in panels.items() if lines}
        if panels:
            plot_curves(panels, output_dir / name, ylabels)
            written.append(name)
    return written


def reproduce(
    preset: Preset,
    output_dir: str | Path = "results",
    rqs: Iterable[int] = RESEARCH_QUESTIONS,
    tasks: Sequence[str] = TASKS,
    dataset: str = "ml-1m",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    command: str = "peterrec reproduce",
    report_only: bool = False,
) -> dict[str, Any]:
    """Runs the research questions `rqs` on `tasks` with `preset` and writes `reproduction.json`,
    `reproduction.md` and the learning-curve PNGs into `output_dir` (runs into `work_dir`, default
    `<output_dir>/runs`). With `report_only`, runs nothing and reports the configurations whose runs all exist.
    Returns the JSON report."""
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        raise ValueError(f"Unknown task(s) {unknown}; choose from {list(ALL_TASKS)}.")
    output_dir = Path(output_dir)
    runner = Reproduction(
        preset,
        Path(work_dir) if work_dir is not None else output_dir / "runs",
        dataset,
        None if data_dir is None else Path(data_dir),
        None if cache_dir is None else Path(cache_dir),
        run_missing=not report_only,
    )
    return run_plan(runner, research_plan(rqs, tasks), tasks, output_dir, command)


def run_plan(
    runner: Reproduction,
    plan: dict[str, list[Configuration]],
    tasks: Sequence[str],
    output_dir: Path,
    command: str,
) -> dict[str, Any]:
    """Runs every configuration of `plan` with `runner`, the RQ3 baselines, and writes the report files."""
    if not plan:
        raise ValueError(
            "Nothing to run: the chosen research questions have no experiment on the chosen tasks."
        )
    started = time.perf_counter()
    configurations = unique_configurations(plan)
    objectives = sorted({configuration.objective for configuration in configurations})
    backbones = {objective: runner.backbone(objective) for objective in objectives}
    results = {}
    for position, configuration in enumerate(configurations, 1):
        logger.info(f"[{position}/{len(configurations)}] {configuration.name}")
        try:
            results[configuration.name] = runner.configuration_result(configuration)
        except MissingRunError as missing:
            logger.warning(f"Left out of the report, not run yet: {missing}")
    baselines = {}
    if "rq3" in plan:
        for task in tasks:
            baselines[task] = (
                runner.popularity_baseline(task) if task == "coldrec" else runner.majority_baseline(task)
            )
    report = {
        "command": command,
        "data": DATASET_TITLES.get(runner.dataset, runner.dataset)
        if runner.data_dir is None
        else str(runner.data_dir),
        "preset": asdict(runner.preset),
        "tasks": list(tasks),
        "plan": {key: [configuration.name for configuration in group] for key, group in plan.items()},
        "backbones": {
            objective: {key: value for key, value in summary.items() if key != "log_history"}
            for objective, summary in backbones.items()
        },
        "configurations": results,
        "baselines": baselines,
        "wall_time_s": time.perf_counter() - started,
        "run_time_s": sum(summary.get("wall_time_s", 0.0) for summary in backbones.values())
        + sum(result["wall_time_s"] for result in results.values()),
    }
    report["aggregates"] = {
        name: {metric: asdict(value) for metric, value in aggregate_runs(result["test"]).items()}
        for name, result in results.items()
    }
    report = json.loads(json.dumps(report))
    report["plots"] = write_plots(report, output_dir)
    write_json(output_dir / "reproduction.json", report)
    (output_dir / "reproduction.md").write_text(render_report(report))
    logger.info(f"Wrote {output_dir / 'reproduction.md'} in {report['wall_time_s'] / 60:.1f} min")
    return report


# ---------------------------------------------------------------------------------------------------------------
# Investigation on validation: learning rate and PeterRec's options
# ---------------------------------------------------------------------------------------------------------------

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
        summary = runner.run(configuration, seed, rate, output_dir_of_run, for_tuning=True)
        validation = summary["validation"]
        rows.append(
            {"variant": label, "configuration": configuration.name, "learning_rate": rate, **validation}
        )
        return validation[selection_metric(summary["task_kind"])]

    best = {}
    for method in ("peterrec", "fine_all"):
        scores = {
            rate: score(METHOD_TITLES[method], Configuration(task, method), rate) for rate in learning_rates
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


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peterrec reproduce",
        description="Reproduce the paper's research questions (Section 4) on MovieLens-1M: results/reproduction.md, "
        "results/reproduction.json and learning-curve plots.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="Model size and budget.")
    parser.add_argument(
        "--rq", type=int, nargs="+", choices=RESEARCH_QUESTIONS, default=list(RESEARCH_QUESTIONS)
    )
    parser.add_argument("--tasks", nargs="+", choices=ALL_TASKS, default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Override the preset's seeds.")
    parser.add_argument(
        "--learning_rates",
        type=float,
        nargs="+",
        default=None,
        help="Override the preset's grid (validation).",
    )
    parser.add_argument(
        "--pretrain_epochs", type=float, default=None, help="Override the preset's pretraining."
    )
    parser.add_argument(
        "--finetune_epochs",
        type=float,
        default=None,
        help="Override the preset's fine-tuning (profile tasks).",
    )
    parser.add_argument("--output_dir", default="results", help="Where the report, JSON and plots go.")
    parser.add_argument("--work_dir", default=None, help="Where the runs go (default <output_dir>/runs).")
    parser.add_argument("--dataset", default="ml-1m", help="MovieLens release (ml-1m, ml-100k).")
    parser.add_argument(
        "--data_dir", default=None, help="One DatasetDict folder per task, instead of MovieLens."
    )
    parser.add_argument(
        "--cache_dir", default=None, help="Data cache (default $PETERREC_CACHE or ~/.cache/peterrec)."
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="Run nothing: write the report from the runs already in the work folder (missing ones are left out).",
    )
    parser.add_argument(
        "--investigate",
        choices=ALL_TASKS,
        default=None,
        help="Instead of the research questions: the validation-only study of learning rates and PeterRec's "
        "options on this task (writes investigation.md).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`peterrec reproduce`: parses the options, runs the reproduction and prints where the report is."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    if args.seeds is not None:
        preset = replace(preset, seeds=tuple(args.seeds))
    if args.learning_rates is not None:
        preset = replace(preset, learning_rates=tuple(args.learning_rates))
    if args.pretrain_epochs is not None:
        preset = replace(preset, pretrain_epochs=args.pretrain_epochs)
    if args.finetune_epochs is not None:
        preset = replace(preset, finetune_epochs=args.finetune_epochs)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("modeling_peterrec").setLevel(logging.INFO)
    if args.investigate is not None:
        output_dir = Path(args.output_dir)
        runner = Reproduction(
            preset,
            Path(args.work_dir) if args.work_dir is not None else output_dir / "runs",
            args.dataset,
            None if args.data_dir is None else Path(args.data_dir),
            None if args.cache_dir is None else Path(args.cache_dir),
        )
        report = investigate(runner, args.investigate, preset.learning_rates, output_dir)
        print(output_dir / "investigation.md")
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
        command=" ".join(["peterrec reproduce", *argv]),
        report_only=args.report_only,
    )
    print(Path(args.output_dir) / "reproduction.md")
    return report


__all__ = [
    "PRESETS",
    "Aggregate",
    "Configuration",
    "Preset",
    "Reproduction",
    "investigate",
    "main",
    "render_report",
    "reproduce",
    "research_plan",
    "run_plan",
    "write_plots",
]


if __name__ == "__main__":
    main()
