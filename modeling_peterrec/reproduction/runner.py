"""Runs a reproduction plan (`plan.py`) and resumes it: pretraining, validation-only tuning, one test read per
configuration and seed, the baselines, and the report (`report.py`).

The runner pretrains each source backbone the plan needs (`plan.SOURCE_BACKBONES`: causal NextItNet, masked GRec
encoder, SASRec with items from their ID, text or both) on the ColdRec source domain (`pretrain_source`), fine-tunes
every configuration of the plan with `training.finetune` (once per seed) and computes the baselines (`baselines.py`)
on the same rows. A backbone over item texts trains like the others and reads the items' texts from `item_texts`
(default: MovieLens' own).

Honest tuning: when a preset's grid (`Preset.tune`) has several candidates, each configuration picks one by the mean
of its selection metric over k folds of the training users (`folds.py`, `selection.py`) or, with the `validation`
scheme, on a copy of the task whose `test` split *is* the validation split, using the first seed; the real test
split is read exactly once per (configuration, seed), by the final run. Runs whose `metrics.json` exists are skipped, so
an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from transformers.utils import logging as transformers_logging

from ..data import default_cache_dir, load_task
from ..registry import MODEL_TYPES, TASK_KINDS
from ..training import (
    METRICS_FILE,
    FinetuneArguments,
    PeterRecTrainingArguments,
    PretrainArguments,
    finetune,
    pretrain,
)
from .baselines import RULE_BASELINES, baseline_rows
from .folds import user_folds
from .plan import (
    ALL_TASKS,
    DATASET_TITLES,
    DEFAULT_RESEARCH_QUESTIONS,
    SOURCE_BACKBONES,
    TASKS,
    Configuration,
    Preset,
    research_plan,
    task_kind,
    unique_configurations,
)
from .report import aggregate_runs, write_report
from .selection import (
    TRAINING_KNOBS,
    Selection,
    candidate_label,
    candidates,
    choose_candidate,
    split_candidate,
)
from .workers import map_in_stages

logger = transformers_logging.get_logger(__name__)

HeldOut = int | Literal["validation"] | None
"""What a run holds out (`Reproduction.run`): None, the real splits; `"validation"`; or a fold's index."""


def fold_name(index: int, folds: int) -> str:
    """`cv0of3`: a cross-validation fold's part of its data and run folder names (`folds.user_folds`; the checkpoint
    is chosen on the validation split, the fold is the test split)."""
    return f"cv{index}of{folds}"


# ---------------------------------------------------------------------------------------------------------------
# Data variants: few labels, and the tuning copy whose test split is the validation split
# ---------------------------------------------------------------------------------------------------------------


def derived_task(
    splits,
    folder: Path,
    train_fraction: float = 1.0,
    seed: int = 0,
    for_tuning: bool = False,
    fold: tuple[int, int] | None = None,
) -> Path:
    """Saves (once) a variant of a task's `DatasetDict` and returns its folder.

    `train_fraction` keeps that share of the training rows (a seeded random subset, Figure 6); `for_tuning`
    replaces the test split by the validation split, so that a run made to choose hyperparameters cannot read
    the test split; `fold=(index, k)` splits the (subsampled) training users by `folds.user_folds` with `seed`:
    the other folds train, the validation split chooses the checkpoint and fold `index` is the test.
    """
    if (folder / "dataset_dict.json").is_file():
        return folder
    from datasets import DatasetDict

    if for_tuning and fold is not None:
        raise ValueError("A variant is either a tuning copy or a fold, not both.")
    train = splits["train"]
    if train_fraction < 1:
        train = train.shuffle(seed=seed).select(range(max(1, round(train_fraction * len(train)))))
    if fold is not None:
        index, k = fold
        variant = user_folds({"train": train, "validation": splits["validation"]}, k, seed)[index]
    else:
        variant = DatasetDict(
            {
                "train": train,
                "validation": splits["validation"],
                "test": splits["validation" if for_tuning else "test"],
            }
        )
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    variant.save_to_disk(str(temporary))
    if (folder / "dataset_dict.json").is_file():  # another worker (`workers.py`) saved the same variant first
        shutil.rmtree(temporary)
        return folder
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
    folder per task name (`pretrain_source`, `genest`, ..., saved with `save_to_disk`). `item_texts` is a JSON
    object item id -> text for the backbones over item texts (needed with `data_dir`; MovieLens has its own). Runs go
    to `work_dir`; derived task variants (few labels, tuning copies) to `<cache_dir>/reproduce`.
    """

    preset: Preset
    work_dir: Path
    dataset: str = "ml-1m"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    finetune_fn: Callable[..., dict[str, Any]] = finetune
    pretrain_fn: Callable[..., dict[str, Any]] = pretrain
    run_missing: bool = True
    item_texts: Path | None = None
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
        self, task: str, train_fraction: float, seed: int, held_out: HeldOut, max_length: int | None = None
    ) -> dict[str, Any]:
        """Where `finetune` reads a configuration's task: the original task, or a derived variant (see
        `Reproduction.run` for `held_out`), and the most recent items it reads (default the preset's)."""
        arguments = {
            "task": task,
            "max_length": max_length or self.preset.max_length,
            "cache_dir": self._cache(),
        }
        if train_fraction == 1 and held_out is None:
            if self.data_dir is None:
                return {**arguments, "dataset": self.dataset}
            return {**arguments, "data_dir": str(Path(self.data_dir) / task)}
        name = task
        if train_fraction < 1:
            name += f"-train{round(100 * train_fraction)}pct-seed{seed}"
        fold = None
        if held_out == "validation":
            name += "-tuning"
        elif held_out is not None:
            fold = (held_out, self.preset.folds)
            name += f"-{fold_name(held_out, self.preset.folds)}-seed{seed}"
        folder = derived_task(
            self.splits(task), self.derived_dir / name, train_fraction, seed, held_out == "validation", fold
        )
        return {**arguments, "data_dir": str(folder)}

    def _cache(self) -> str | None:
        return None if self.cache_dir is None else str(self.cache_dir)

    def _item_texts(self, backbone: str) -> dict[str, str]:
        """`item_texts` for the pipelines' arguments of a run on `backbone`: the texts file for a backbone over item
        texts, when one is given."""
        if self.item_texts is None or SOURCE_BACKBONES[backbone].item_representation == "id":
            return {}
        return {"item_texts": str(self.item_texts)}

    # Pretraining ---------------------------------------------------------------------------------------------

    def backbone(self, name: str) -> dict[str, Any]:
        """Pretrains (or finds) one source backbone (`plan.SOURCE_BACKBONES`) on the source domain; returns its
        summary."""
        run_dir = self.work_dir / "backbones" / name
        if (run_dir / METRICS_FILE).is_file():
            return json.loads((run_dir / METRICS_FILE).read_text())
        if not self.run_missing:
            raise FileNotFoundError(
                f"No {name} backbone in {run_dir}; run the reproduction without --report_only first."
            )
        preset, source = self.preset, SOURCE_BACKBONES[name]
        epochs = preset.pretrain_epochs_of(source.objective)
        logger.info(f"Pretraining the {name} backbone ({preset.name} preset)")
        window = (
            preset.max_length
            if MODEL_TYPES[source.model_type].learned_positions
            else min(preset.window_length or preset.max_length, preset.max_length)
        )
        data = (
            {"data_dir": str(Path(self.data_dir) / "pretrain_source")}
            if self.data_dir is not None
            else {"dataset": self.dataset}
        )
        summary = self.pretrain_fn(
            PretrainArguments(
                task="pretrain_source",
                model_type=source.model_type,
                objective=source.objective,
                item_representation=source.item_representation,
                config_overrides=source.config_overrides,
                **self._item_texts(name),
                hidden_size=preset.hidden_size,
                dilations=list(preset.dilations),
                max_length=preset.max_length,
                window_length=window,
                window_stride=min(preset.window_stride or window, window),
                mask_probability=preset.mask_probability,
                last_item_rows=preset.last_item_rows,
                cache_dir=self._cache(),
                **data,
            ),
            self._training_arguments(
                run_dir,
                epochs,
                preset.pretrain_batch_size,
                preset.pretrain_learning_rate,
                0,
                evaluations=max(1, round(epochs)),
                lr_scheduler_type=preset.pretrain_lr_scheduler_type,
                warmup_steps=preset.pretrain_warmup_steps,
            ),
        )
        _remove_checkpoints(run_dir)
        return summary

    # Fine-tuning ---------------------------------------------------------------------------------------------

    def _training_arguments(
        self,
        output_dir: Path,
        epochs: float,
        batch_size: int,
        learning_rate: float,
        seed: int,
        evaluations: int | None = None,
        **schedule: Any,
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
            early_stopping_patience=self.preset.early_stopping_patience,
            **schedule,
        )

    def run(
        self,
        configuration: Configuration,
        seed: int,
        learning_rate: float,
        output_dir: Path,
        held_out: HeldOut = None,
        epochs: float | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """One `finetune` run of a configuration (skipped when its `metrics.json` exists).

        `held_out` says what the run may read: None, the real splits (a final run, the only reads of the test
        split); `"validation"`, a tuning copy whose test split is the validation split; a fold index, fold `i` of
        `folds.user_folds` over the training users (that fold is the test split). `epochs` and `max_length`
        override the preset's."""
        if (output_dir / METRICS_FILE).is_file():
            return json.loads((output_dir / METRICS_FILE).read_text())
        if not self.run_missing:
            raise MissingRunError(output_dir)
        preset = self.preset
        arguments = FinetuneArguments(
            backbone=self.backbone(configuration.objective)["backbone"],
            readout=configuration.readout,
            head_terms=configuration.head_terms,
            method=configuration.method,
            insertion=configuration.insertion,
            patch_type=configuration.patch_type,
            patch_target=configuration.patch_target,
            item_patch_type=configuration.item_patch_type,
            blocks=configuration.blocks,
            bottleneck_size=configuration.bottleneck_size,
            train_layer_norms=list(configuration.train_layer_norms),
            train_tcl_embedding=configuration.train_tcl_embedding,
            num_eval_negatives=preset.num_eval_negatives,
            **self._item_texts(configuration.objective),
            **self._data_arguments(
                configuration.task, configuration.train_fraction, seed, held_out, max_length
            ),
        )
        if epochs is None:
            epochs = preset.coldrec_epochs if configuration.task == "coldrec" else preset.finetune_epochs
        started = time.perf_counter()
        summary = self.finetune_fn(
            arguments,
            self._training_arguments(
                output_dir,
                epochs,
                preset.finetune_batch_size,
                learning_rate,
                seed,
                wide_learning_rate=preset.wide_learning_rate,
            ),
        )
        _remove_checkpoints(output_dir)
        logger.info(f"{output_dir.relative_to(self.work_dir)}: {time.perf_counter() - started:.0f}s")
        return summary

    # Selection -----------------------------------------------------------------------------------------------

    def grid(self, configuration: Configuration) -> list[dict[str, Any]]:
        """The preset's candidates for a configuration, without the values it ignores (a bottleneck for a method
        without patches) and so without duplicates."""
        grid = {}
        for candidate in candidates(self.preset.tune):
            tuned, _ = self.tuned(configuration, candidate)
            kept = {
                key: value
                for key, value in candidate.items()
                if key in TRAINING_KNOBS or getattr(tuned, key) == value
            }
            grid.setdefault(candidate_label(kept), kept)
        return list(grid.values())

    def tuned(
        self, configuration: Configuration, candidate: dict[str, Any]
    ) -> tuple[Configuration, dict[str, Any]]:
        """The configuration with a candidate's fields, and the candidate's training arguments with the preset's
        defaults (`learning_rate`; `epochs` and `max_length`: None for the preset's)."""
        fields_of_configuration, training = split_candidate(candidate)
        return replace(configuration, **fields_of_configuration), {
            "learning_rate": training.get("learning_rate", self.preset.learning_rate),
            "epochs": training.get("num_train_epochs"),
            "max_length": training.get("max_length"),
        }

    def select(self, configuration: Configuration, grid: list[dict[str, Any]]) -> Selection:
        """Runs every candidate of `grid` on each held-out set of the preset's scheme (the folds of the training
        users, or the validation split) with the first seed, and chooses the best mean of the task kind's selection
        metric. Never reads the test split."""
        seed, preset = self.preset.seeds[0], self.preset
        held_out_sets: list[HeldOut] = (
            ["validation"] if preset.selection == "validation" else list(range(preset.folds))
        )
        metric = task_kind(configuration.task).selection_metric

        def score(candidate: dict[str, Any], held_out: HeldOut) -> float:
            tuned, training = self.tuned(configuration, candidate)
            where = "validation" if held_out == "validation" else fold_name(held_out, preset.folds)
            output_dir = self.work_dir / "tuning" / configuration.name / candidate_label(candidate) / where
            summary = self.run(tuned, seed, output_dir=output_dir, held_out=held_out, **training)
            return summary["test"][metric]  # the held-out set is the run's test split (never the real one)

        return choose_candidate(grid, held_out_sets, score, preset.selection, metric)

    def result_if_run(self, configuration: Configuration) -> dict[str, Any] | None:
        """`configuration_result`, or None (with a warning) when a run is missing and the runner may not run it."""
        logger.info(f"Configuration {configuration.name}")
        try:
            return self.configuration_result(configuration)
        except MissingRunError as missing:
            logger.warning(f"Left out of the report, not run yet: {missing}")
            return None

    def configuration_result(self, configuration: Configuration) -> dict[str, Any]:
        """Chooses the configuration's hyperparameters (`select`, when the preset's grid has several candidates),
        runs every seed once with them (the only reads of the test split) and aggregates the test measures."""
        grid = self.grid(configuration)
        selection = self.select(configuration, grid) if len(grid) > 1 else None
        chosen = grid[0] if selection is None else selection.values[selection.chosen]
        tuned, training = self.tuned(configuration, chosen)
        run_dir = self.work_dir / configuration.name
        if selection is not None:
            run_dir /= selection.chosen
        summaries = {
            seed: self.run(tuned, seed, output_dir=run_dir / f"seed{seed}", **training)
            for seed in self.preset.seeds
        }
        first = summaries[self.preset.seeds[0]]
        kind = first["task_kind"]
        return {
            "configuration": asdict(tuned),
            "task_kind": kind,
            "learning_rate": training["learning_rate"],
            "chosen": chosen,
            "selection": None if selection is None else selection.as_dict(),
            "trainable_parameters": first["trainable_parameters"],
            "total_parameters": first["total_parameters"],
            "trainable_share": first["trainable_parameters"] / first["total_parameters"],
            "patch_size_bytes": first.get("patch_size_bytes"),
            "seconds_per_step": seconds_per_step(first["log_history"]),
            "test": {seed: flat_test_metrics(summary) for seed, summary in summaries.items()},
            "validation": {seed: summary["validation"] for seed, summary in summaries.items()},
            "curves": {
                seed: validation_curve(summary["log_history"], TASK_KINDS[kind].selection_metric)
                for seed, summary in summaries.items()
            },
            "wall_time_s": sum(summary.get("wall_time_s", 0.0) for summary in summaries.values()),
        }

    # Baselines (RQ3) -----------------------------------------------------------------------------------------

    def baselines(self, task: str, split: str = "test") -> dict[str, dict[int, dict[str, float]]]:
        """Every baseline of the task on `split`, by name then seed (each seed draws its own ColdRec candidates,
        as the models do, and its own cross-validation folds)."""
        by_seed = {
            seed: baseline_rows(
                self.splits(task), self.preset.max_length, self.preset.num_eval_negatives, seed, split
            )
            for seed in self.preset.seeds
        }
        names = by_seed[self.preset.seeds[0]]
        return {name: {seed: rows[name] for seed, rows in by_seed.items()} for name in names}


class MissingRunError(RuntimeError):
    """A run that a report-only pass needs has not been made yet."""


def _remove_checkpoints(run_dir: Path) -> None:
    """Drops the Trainer's checkpoint folders of a finished run (the metrics, curve, patch or backbone stay)."""
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def validation_curve(log_history: list[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    """(epoch, validation `metric`) at every evaluation during training (the final re-evaluation excluded)."""
    points = [(entry["epoch"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    seen, curve = set(), []
    for epoch, value in points:
        if epoch not in seen:
            seen.add(epoch)
            curve.append((epoch, value))
    return curve


def seconds_per_step(log_history: list[dict[str, Any]]) -> float | None:
    """Training time per optimizer step of a run (the Trainer's `train_runtime` over its steps; the evaluations during
    training included), or None when the history lacks it."""
    final = next((entry for entry in reversed(log_history) if "train_runtime" in entry), None)
    return final["train_runtime"] / final["step"] if final and final.get("step") else None


def flat_test_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The test measures of a `finetune` summary, full-ranking ones prefixed `full_`, without the loss."""
    metrics = {key: value for key, value in summary["test"].items() if key != "loss"}
    metrics.update({f"full_{key}": value for key, value in summary.get("test_full_ranking", {}).items()})
    return metrics


def reproduce(
    preset: Preset,
    output_dir: str | Path = "results",
    rqs: Iterable[int] = DEFAULT_RESEARCH_QUESTIONS,
    tasks: Sequence[str] = TASKS,
    dataset: str = "ml-1m",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    command: str = "peterrec reproduce",
    report_only: bool = False,
    item_texts: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Runs the research questions `rqs` on `tasks` with `preset` and writes `reproduction.json`,
    `reproduction.md` and the learning-curve PNGs into `output_dir` (runs into `work_dir`, default
    `<output_dir>/runs`). With `report_only`, runs nothing and reports the configurations whose runs all exist.
    `item_texts`: the items' texts for the backbones over item texts (`Reproduction`). `jobs` worker processes of
    `threads` threads each run the backbones, then the configurations, side by side (`run_plan`). Returns the JSON
    report."""
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
        item_texts=None if item_texts is None else Path(item_texts),
    )
    return run_plan(runner, research_plan(rqs, tasks), tasks, output_dir, command, jobs, threads)


def run_plan(
    runner: Reproduction,
    plan: dict[str, list[Configuration]],
    tasks: Sequence[str],
    output_dir: Path,
    command: str,
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Runs every configuration of `plan` with `runner`, the RQ3 baselines, and writes the report files.

    With `jobs` > 1 the backbones and the configurations (each once its backbone is ready) run in that many worker
    processes (`workers.py`) of `threads` intra-op threads each (default: this process's threads shared out among
    the workers)."""
    if not plan:
        raise ValueError(
            "Nothing to run: the chosen research questions have no experiment on the chosen tasks."
        )
    started = time.perf_counter()
    configurations = unique_configurations(plan)
    names = sorted({configuration.objective for configuration in configurations})
    if not runner.run_missing:
        jobs = 1
    if jobs > 1:  # the parent builds each data cache, so that no two workers write one at once
        cached = [] if runner.data_dir is not None else ["pretrain_source"]
        for task in {*cached, *(configuration.task for configuration in configurations)}:
            runner.splits(task)
    threads = threads or max(1, torch.get_num_threads() // jobs)
    logger.info(f"{len(names)} backbones and {len(configurations)} configurations, {jobs} at a time")
    backbone_summaries, outcomes = map_in_stages(
        runner,
        "backbone",
        names,
        "result_if_run",
        [(configuration.objective, configuration) for configuration in configurations],
        jobs,
        threads,
    )
    backbones = dict(zip(names, backbone_summaries, strict=True))
    results = {
        configuration.name: result
        for configuration, result in zip(configurations, outcomes, strict=True)
        if result is not None
    }
    baselines, classical = {}, {}
    if {"rq3", "rq5_transfer", "rq6_types", "rq7_text_items"} & set(plan):
        for task in tasks:
            classical[task] = runner.baselines(task)
            baselines[task] = classical[task][RULE_BASELINES[task_kind(task).name]]
    report = {
        "command": command,
        "data": DATASET_TITLES.get(runner.dataset, runner.dataset)
        if runner.data_dir is None
        else str(runner.data_dir),
        "preset": asdict(runner.preset),
        "tasks": list(tasks),
        "plan": {key: [configuration.name for configuration in group] for key, group in plan.items()},
        "backbones": {
            name: {key: value for key, value in summary.items() if key != "log_history"}
            for name, summary in backbones.items()
        },
        "configurations": results,
        "baselines": baselines,
        "classical_baselines": classical,
        "wall_time_s": time.perf_counter() - started,
        "run_time_s": sum(summary.get("wall_time_s", 0.0) for summary in backbones.values())
        + sum(result["wall_time_s"] for result in results.values()),
    }
    report["aggregates"] = {
        name: {metric: asdict(value) for metric, value in aggregate_runs(result["test"]).items()}
        for name, result in results.items()
    }
    report = json.loads(json.dumps(report))
    report = write_report(report, output_dir)
    logger.info(f"Wrote {output_dir / 'reproduction.md'} in {report['wall_time_s'] / 60:.1f} min")
    return report
