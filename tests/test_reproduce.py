"""The reproduction runner's bookkeeping: aggregation over seeds, tables, validation-only tuning, one read of the
test split per configuration and seed, resuming, the rule baselines, and one real run of the `smoke` preset."""

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from modeling_peterrec.data import classification_dataset, coldrec_dataset, pretraining_dataset
from modeling_peterrec.registry import patch_types_of
from modeling_peterrec.reproduction import (
    DEFAULT_RESEARCH_QUESTIONS,
    PRESETS,
    Aggregate,
    Configuration,
    Reproduction,
    derived_task,
    item_popularity,
    main,
    majority_label,
    markdown_table,
    mean_curve,
    popularity_metrics,
    research_plan,
    run_plan,
    unique_configurations,
    validation_curve,
)
from modeling_peterrec.reproduction.baselines import ranking_metrics_of_scores
from modeling_peterrec.reproduction.workers import map_in_stages

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_root(folder: Path, num_users: int = 60, seed: int = 0) -> Path:
    """`pretrain_source`, `genest` and `coldrec` DatasetDicts under `folder`: class-0 users watch i0-i9, class-1
    users i10-i19; each user likes two of 12 target items."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(num_users)]
    labels = [i % 2 for i in range(num_users)]
    histories = [
        [f"i{rng.randrange(10) + 10 * label}" for _ in range(rng.randint(4, 15))] for label in labels
    ]
    targets = [[f"t{rng.randrange(6) + 6 * label}" for _ in range(2)] for label in labels]
    pretraining_dataset(users, histories).save_to_disk(str(folder / "pretrain_source"))
    classification_dataset(users, histories, labels, ["female", "male"]).save_to_disk(str(folder / "genest"))
    coldrec_dataset(users, histories, targets).save_to_disk(str(folder / "coldrec"))
    return folder


class FakePipeline:
    """Stands in for `training.pretrain` / `training.finetune`: writes `metrics.json` like them and records, for
    every fine-tuning call, its learning rate, seed and whether the split it will test on is the real test split.

    Validation users prefer learning rate 1e-3 and test users 1e-2, so choosing on the test split would show."""

    def __init__(self, real_test_users: list[str]):
        self.real_test_users = real_test_users
        self.calls: list[dict] = []

    def pretrain(self, args, training_args):
        self.pretrained = [*getattr(self, "pretrained", []), (args.model_type, args.objective)]
        self.pretrain_calls = [
            *getattr(self, "pretrain_calls", []),
            {
                "backbone": Path(training_args.output_dir).name,
                "item_representation": args.item_representation,
                "item_texts": args.item_texts,
                "batch_size": training_args.per_device_train_batch_size,
                "config_overrides": args.config_overrides,
                "windows": (args.max_length, args.pretraining_window, args.window_stride),
            },
        ]
        backbone = str(Path(training_args.output_dir) / "backbone")
        summary = {"backbone": backbone, "num_parameters": 123, "train_runtime_s": 60.0}
        summary["test"] = {"mrr@5": 0.25, "hr@5": 0.5}
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(training_args.output_dir) / "metrics.json").write_text(json.dumps(summary))
        return summary

    def finetune(self, args, training_args):
        test_users = load_from_disk(args.data_dir)["test"]["user_id"]
        rate, seed = training_args.learning_rate, training_args.seed
        self.calls.append(
            {
                "rate": rate,
                "seed": seed,
                "reads_test": test_users == self.real_test_users,
                "backbone": Path(args.backbone).parent.name,
                "patch_type": args.patch_type,
                "blocks": args.blocks,
                "train_layer_norms": list(args.train_layer_norms),
                "patch_target": args.patch_target,
                "item_patch_type": args.item_patch_type,
                "item_texts": args.item_texts,
                "method": args.method,
                "batch_size": training_args.per_device_train_batch_size,
                "epochs": training_args.num_train_epochs,
            }
        )
        if args.task == "coldrec":
            return self._ranking_run(training_args, seed)
        validation = {"accuracy": 0.9 if rate == 1e-3 else 0.6}
        # A tuning run's test split holds validation users (or a fold of the training users): it scores as they do.
        test = (
            ((0.5 + 0.1 * seed) if rate == 1e-3 else 0.99)
            if self.calls[-1]["reads_test"]
            else validation["accuracy"]
        )
        summary = {
            "task_kind": "classification",
            "trainable_parameters": 25,
            "total_parameters": 100,
            "validation": validation,
            "test": {"accuracy": test, "loss": 0.1},
            "log_history": [
                {"epoch": 0.5, "eval_accuracy": 0.6 + seed},
                {"epoch": 1.0, "eval_accuracy": 0.8 + seed},
                {"epoch": 1.0, "eval_accuracy": 0.8 + seed},
            ],
        }
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(training_args.output_dir) / "metrics.json").write_text(json.dumps(summary))
        return summary

    @staticmethod
    def _ranking_run(training_args, seed: int) -> dict:
        """A ColdRec summary as `finetune` writes it: sampled measures with their cold-row ones in `test`, the full
        ranking's in `test_full_ranking` (`hr@10` is 0.2 + 0.1 * seed, its cold one half of it; 3 cold rows)."""
        measures = {"mrr@5": 0.1, "hr@10": 0.2 + 0.1 * seed, "ndcg@10": 0.15}
        cold = {"cold_rows": 3, **{f"cold_{key}": value / 2 for key, value in measures.items()}}
        summary = {
            "task_kind": "ranking",
            "trainable_parameters": 25,
            "total_parameters": 100,
            "patch_size_bytes": 2048,
            "validation": {"mrr@5": 0.1},
            "test": {**measures, **cold, "loss": 0.1},
            "test_full_ranking": {**measures, **cold},
            "log_history": [{"epoch": 1.0, "eval_mrr@5": 0.1}, {"train_runtime": 10.0, "step": 20}],
        }
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(training_args.output_dir) / "metrics.json").write_text(json.dumps(summary))
        return summary


@pytest.fixture
def fake_run(tmp_path):
    root = synthetic_root(tmp_path / "data")
    fake = FakePipeline(load_from_disk(str(root / "genest"))["test"]["user_id"])
    preset = replace(
        PRESETS["smoke"], seeds=(0, 1, 2), tune={"learning_rate": (1e-2, 1e-3)}, selection="validation"
    )
    runner = Reproduction(
        preset,
        tmp_path / "runs",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        finetune_fn=fake.finetune,
        pretrain_fn=fake.pretrain,
    )
    plan = {"rq1": [Configuration("genest", "peterrec")], "rq3": [Configuration("genest", "peterrec")]}
    report = run_plan(runner, plan, ["genest"], tmp_path / "results", "peterrec reproduce --test")
    return fake, runner, plan, report, tmp_path


def test_aggregate_is_mean_and_sample_std_over_seeds():
    aggregate = Aggregate.of([0.5, 0.7, 0.9])
    assert aggregate.mean == pytest.approx(0.7)
    assert aggregate.std == pytest.approx(0.2)
    assert str(aggregate) == "0.7000 ± 0.2000"
    assert Aggregate.of([0.25]).std == 0.0 and str(Aggregate.of([0.25])) == "0.2500"
    with pytest.raises(ValueError, match="empty"):
        Aggregate.of([])


def test_markdown_table_aligns_first_column_left_and_others_right():
    assert markdown_table(["Task", "A"], [["x", "1"], ["y", "2"]]) == (
        "| Task | A |\n| :-- | --: |\n| x | 1 |\n| y | 2 |"
    )


def test_configuration_name_drops_patch_options_of_methods_without_patches():
    assert (
        Configuration("genest", "fine_all", insertion="parallel_after_act").name == "causal-genest-fine_all"
    )
    assert Configuration("genest", "fine_all") == Configuration("genest", "fine_all", bottleneck_size=4)
    assert (
        Configuration("ageest", "peterrec", "masked", "serial_one", 0.1, 4, ("norm2",), True).name
        == "masked-ageest-peterrec-serial_one-bottleneck4-train_norm2-train_tcl-train10pct"
    )
    assert (
        Configuration("genest", "peterrec", readout="sum").name
        == "causal-genest-peterrec-serial_two-readout_sum"
    )
    with pytest.raises(ValueError, match="train_fraction"):
        Configuration("genest", "peterrec", train_fraction=0)


def test_research_plan_restricts_experiments_to_the_chosen_tasks():
    plan = research_plan([1, 2, 4], ["genest"])
    assert list(plan) == ["rq1"]
    assert [c.method for c in plan["rq1"]] == ["peterrec", "peter_zero", "fine_all", "fine_zero"]
    full = research_plan([1, 2, 3, 4], ["genest", "ageest", "lifestatus", "coldrec"])
    assert len(full["rq2"]) == 12 and len(full["rq4_insertion"]) == 4 and len(full["rq4_few_labels"]) == 6
    assert Configuration("ageest", "peterrec", "masked") in full["rq4_objective"]


def test_learning_rate_is_chosen_on_validation_and_test_is_read_once_per_seed(fake_run):
    fake, _, _, report, _ = fake_run
    tuning = [call for call in fake.calls if not call["reads_test"]]
    final = [call for call in fake.calls if call["reads_test"]]
    assert sorted(call["rate"] for call in tuning) == [1e-3, 1e-2]
    assert all(call["seed"] == 0 for call in tuning)
    assert sorted((call["seed"], call["rate"]) for call in final) == [(0, 1e-3), (1, 1e-3), (2, 1e-3)]
    result = report["configurations"]["causal-genest-peterrec-serial_two"]
    assert result["learning_rate"] == 1e-3
    selection = result["selection"]
    assert selection["scheme"] == "validation" and selection["chosen"] == "lr0.001"
    assert {label: c["mean"] for label, c in selection["candidates"].items()} == {
        "lr0.01": 0.6,
        "lr0.001": 0.9,
    }
    aggregate = report["aggregates"]["causal-genest-peterrec-serial_two"]["accuracy"]
    assert aggregate["mean"] == pytest.approx(0.6) and aggregate["std"] == pytest.approx(0.1)
    assert result["trainable_share"] == 0.25


def test_rerun_resumes_from_the_runs_on_disk(fake_run):
    fake, runner, plan, _, tmp_path = fake_run
    before = len(fake.calls)
    run_plan(runner, plan, ["genest"], tmp_path / "results", "again")
    assert len(fake.calls) == before


def test_report_only_pass_runs_nothing_and_leaves_out_missing_configurations(fake_run):
    fake, runner, plan, _, tmp_path = fake_run
    before = len(fake.calls)
    missing = Configuration("genest", "fine_all")
    report_only = replace(runner, run_missing=False)
    report = run_plan(
        report_only, {**plan, "rq1": [*plan["rq1"], missing]}, ["genest"], tmp_path / "out", "x"
    )
    assert len(fake.calls) == before
    assert list(report["configurations"]) == ["causal-genest-peterrec-serial_two"]
    assert (
        "| GenEst Acc | 0.6000 ± 0.1000 | – | – | – |" in (tmp_path / "out" / "reproduction.md").read_text()
    )


def test_report_renders_tables_baseline_and_curves(fake_run):
    _, _, _, report, tmp_path = fake_run
    markdown = (tmp_path / "results" / "reproduction.md").read_text()
    assert "| GenEst Acc | 0.6000 ± 0.1000 | – | – | – |" in markdown
    splits = load_from_disk(str(tmp_path / "data" / "genest"))
    majority = majority_label(splits["train"]["label"])
    share = sum(label == majority for label in splits["test"]["label"]) / len(splits["test"])
    assert f"| GenEst Acc | {share:.4f} ± 0.0000 | 0.6000 ± 0.1000 |" in markdown.split("## RQ3")[1]
    assert json.loads((tmp_path / "results" / "reproduction.json").read_text())["plots"] == ["rq1_curves.png"]
    assert (tmp_path / "results" / "rq1_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    curve = report["configurations"]["causal-genest-peterrec-serial_two"]["curves"]["2"]
    assert curve == [[0.5, 2.6], [1.0, 2.8]]


def test_tuning_copy_tests_on_validation_and_few_label_copy_subsamples_train(tmp_path):
    splits = load_from_disk(str(synthetic_root(tmp_path / "data") / "genest"))
    tuning = load_from_disk(str(derived_task(splits, tmp_path / "tuning", for_tuning=True)))
    assert tuning["test"]["user_id"] == splits["validation"]["user_id"]
    few = load_from_disk(str(derived_task(splits, tmp_path / "few", train_fraction=0.1, seed=3)))
    assert len(few["train"]) == round(0.1 * len(splits["train"]))
    assert set(few["train"]["user_id"]) <= set(splits["train"]["user_id"])
    assert few["test"]["user_id"] == splits["test"]["user_id"]


def test_majority_label_breaks_ties_toward_the_smallest_id():
    assert majority_label([1, 0, 1, 2, 2, 1]) == 1
    assert majority_label([2, 0, 2, 0]) == 0


def test_popularity_baseline_metrics_by_hand():
    popularity = item_popularity([[0, 3], [0, 0, 1], [0, 3]], 4)
    assert popularity.tolist() == [3.0, 1.0, 0.0, 2.0]
    metrics = popularity_metrics(popularity, [[0, 1, 2], [1, 0, 3]], [0, 1], [[0], [1, 3]], 4)
    # Sampled: ranks 0 and 2 -> MRR@5 (1 + 1/3) / 2. Full: item 3 is the second user's other positive, so the
    # ranks are 0 and 1 -> MRR@5 (1 + 1/2) / 2.
    assert metrics["hr@5"] == 1.0
    assert metrics["mrr@5"] == pytest.approx(2 / 3)
    assert metrics["full_mrr@5"] == pytest.approx(0.75)


def test_mean_curve_and_validation_curve():
    assert mean_curve([[(1, 0.2), (2, 0.4)], [(1, 0.4), (2, 0.6), (3, 0.9)]]) == [
        (1, pytest.approx(0.3)),
        (2, 0.5),
    ]
    history = [
        {"epoch": 1.0, "eval_mrr@5": 0.1},
        {"epoch": 1.0, "loss": 3.0},
        {"epoch": 1.0, "eval_mrr@5": 0.1},
    ]
    assert validation_curve(history, "mrr@5") == [(1.0, 0.1)]


@pytest.mark.slow
def test_smoke_preset_runs_the_real_pipeline_on_synthetic_data(tmp_path):
    root = synthetic_root(tmp_path / "data")
    report = main(
        ["--preset", "smoke", "--rq", "3", "--tasks", "genest", "coldrec", "--data_dir", str(root)]
        + ["--output_dir", str(tmp_path / "results"), "--cache_dir", str(tmp_path / "cache")]
    )
    assert set(report["configurations"]) == {
        "causal-genest-peterrec-serial_two",
        "causal-coldrec-peterrec-serial_two",
    }
    coldrec = report["configurations"]["causal-coldrec-peterrec-serial_two"]["test"]["0"]
    assert 0.0 <= coldrec["mrr@5"] <= coldrec["hr@5"] <= 1.0 and "full_mrr@5" in coldrec
    assert report["baselines"]["coldrec"]["0"]["hr@5"] <= 1.0
    assert "## RQ3" in (tmp_path / "results" / "reproduction.md").read_text()


@pytest.mark.slow
def test_worker_processes_give_the_runs_of_one_process(tmp_path):
    """`--jobs 2`: two backbones pretrain side by side, then configurations that share a derived task (10% of the
    users, same seed) fine-tune side by side; every measure equals the one-process run's, thread for thread."""
    root = synthetic_root(tmp_path / "data")
    few_labels = research_plan([5], ["genest"])["rq5_few_labels"]
    plan = {"rq5_few_labels": [c for c in few_labels if c.head_terms == "deep"]}
    plan["rq4_objective"] = [
        Configuration("genest", "peterrec", objective) for objective in ("causal", "masked")
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reports = [
            run_plan(
                Reproduction(
                    replace(PRESETS["smoke"], seeds=(0,)),
                    tmp_path / f"runs{jobs}",
                    data_dir=root,
                    cache_dir=tmp_path / f"cache{jobs}",
                ),
                plan,
                ["genest"],
                tmp_path / f"results{jobs}",
                "x",
                jobs=jobs,
            )
            for jobs in (1, 2)
        ]
    finally:
        torch.set_num_threads(threads)
    serial, parallel = reports
    assert set(parallel["backbones"]) == {"causal", "masked"}
    assert len(parallel["configurations"]) == len(unique_configurations(plan)) == 8
    for name, result in serial["configurations"].items():
        assert parallel["configurations"][name]["test"] == result["test"], name
    for name, summary in serial["backbones"].items():
        assert parallel["backbones"][name]["test"] == summary["test"], name
    derived = sorted(path.name for path in (tmp_path / "cache2" / "reproduce" / "data").iterdir())
    assert derived == ["genest-train10pct-seed0"]  # saved once, no temporary folder left behind


def test_transfer_plan_compares_methods_with_one_head_and_ablates_the_head_terms():
    plan = research_plan([5], ["genest", "coldrec"])
    assert list(plan) == ["rq5_transfer", "rq5_head_terms", "rq5_few_labels"]
    assert {c.readout for group in plan.values() for c in group} == {"attention"}
    trained_besides_patches = {
        c.method: (c.train_layer_norms, c.train_tcl_embedding) for c in plan["rq5_transfer"]
    }
    assert trained_besides_patches == {
        "peterrec": (("norm2",), True),
        "peter_zero": (("norm2",), True),
        "fine_all": ((), False),
        "fine_cls": ((), False),
    }
    assert [(c.task, c.method) for c in plan["rq5_transfer"]] == [
        (task, method)
        for task in ("genest", "coldrec")
        for method in ("peterrec", "peter_zero", "fine_all", "fine_cls")
    ]
    assert [(c.method, c.head_terms) for c in plan["rq5_head_terms"]][:4] == [
        ("peterrec", "wide_deep"),
        ("peter_zero", "wide_deep"),
        ("fine_all", "wide_deep"),
        ("fine_cls", "wide"),
    ]
    assert {c.task for c in plan["rq5_few_labels"]} == {"genest"}
    assert sorted({c.train_fraction for c in plan["rq5_few_labels"]}) == [0.1, 1.0]
    assert {(c.method, c.head_terms) for c in plan["rq5_few_labels"]} == {
        (method, terms)
        for method in ("peterrec", "peter_zero", "fine_all")
        for terms in ("deep", "wide_deep")
    }


def test_transfer_report_shows_methods_beside_baselines_and_the_ablation(tmp_path):
    root = synthetic_root(tmp_path / "data")
    fake = FakePipeline(load_from_disk(str(root / "genest"))["test"]["user_id"])
    runner = Reproduction(
        replace(PRESETS["smoke"], seeds=(0, 1)),
        tmp_path / "runs",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        finetune_fn=fake.finetune,
        pretrain_fn=fake.pretrain,
    )
    report = run_plan(runner, research_plan([5], ["genest"]), ["genest"], tmp_path / "results", "x")
    assert all(call["reads_test"] for call in fake.calls)  # one candidate: no tuning runs
    # The few-label tables' 100% runs are RQ5's own (deep head) and the head-terms ablation's (wide & deep).
    assert len(report["configurations"]) == 4 + 4 + 3 + 3
    markdown = (tmp_path / "results" / "reproduction.md").read_text()
    transfer = markdown.split("## RQ5: transfer")[1].split("## ")[0]
    assert "| Task | LabelCS |" in transfer and "| PeterRec | PeterZero | FineAll | FineCLS |" in transfer
    assert (
        "| GenEst Acc | 0.5500 ± 0.0707 | 0.5500 ± 0.0707 | 0.5500 ± 0.0707 |"
        in markdown.split("## RQ5: what the deep part adds")[1]
    )
    assert "## RQ5: 10% of the training users, head terms `deep`" in markdown
    assert "## RQ5: 10% of the training users, head terms `wide_deep`" in markdown


def test_adapter_study_plan_runs_every_patch_type_on_both_backbones_and_shares_runs():
    plan = research_plan([6], ["genest", "lifestatus", "coldrec"])
    assert list(plan) == ["rq6_types", "rq6_blocks", "rq6_layer_norms", "rq6_scaling"]
    assert {c.task for group in plan.values() for c in group} == {"genest", "coldrec"}
    assert {c.readout for group in plan.values() for c in group} == {"attention"}
    patched = {(c.objective, c.patch_type) for c in plan["rq6_types"] if c.method == "peterrec"}
    assert patched == {("causal", name) for name in patch_types_of("peterrec")} | {
        ("sasrec", name) for name in patch_types_of("sasrec")
    }
    # Insertions place PeterRec's model patch on the dilated convolutions only.
    assert {
        c.insertion for c in plan["rq6_types"] if c.objective == "sasrec" or c.patch_type != "model_patch"
    } == {None}
    houlsby = Configuration("genest", "peterrec", "sasrec", patch_type="houlsby", readout="attention")
    # Every block, frozen LayerNorms and 100% of the users are the placed type's own run in rq6_types.
    assert houlsby in plan["rq6_types"] and houlsby in plan["rq6_blocks"]
    assert houlsby in plan["rq6_layer_norms"] and houlsby in plan["rq6_scaling"]
    assert Configuration("genest", "peterrec", "sasrec", patch_type="houlsby", blocks="all") == replace(
        houlsby, readout="tcl"
    )
    assert "sasrec-genest-peterrec-houlsby-blocks_last-readout_attention" in {
        c.name for c in plan["rq6_blocks"]
    }
    with pytest.raises(ValueError, match="Unknown patch type .nonexistent."):
        Configuration("genest", "peterrec", "causal", patch_type="nonexistent")
    assert len(unique_configurations(plan)) == 2 * (2 * 2 + 8 + 8 + 2 * 2 + 2 + 2 * 2 * 2)
    assert DEFAULT_RESEARCH_QUESTIONS == (1, 2, 3, 4, 5)  # the study runs when asked for


def test_adapter_study_pretrains_sasrec_passes_patch_settings_and_reports(tmp_path):
    root = synthetic_root(tmp_path / "data")
    fake = FakePipeline(load_from_disk(str(root / "genest"))["test"]["user_id"])
    runner = Reproduction(
        replace(PRESETS["smoke"], seeds=(0,), window_length=10, window_stride=4),
        tmp_path / "runs",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        finetune_fn=fake.finetune,
        pretrain_fn=fake.pretrain,
    )
    report = run_plan(runner, research_plan([6], ["genest"]), ["genest"], tmp_path / "results", "x")
    assert sorted(fake.pretrained) == [("peterrec", "causal"), ("sasrec", "causal")]
    # Both read the preset's 20 items; the convolutions pretrain on its shorter windows, SASRec (learned positions)
    # on windows of all 20, so that every position it reads has trained.
    windows = {call["backbone"]: call["windows"] for call in fake.pretrain_calls}
    assert windows == {"causal": (20, 10, 4), "sasrec": (20, 20, 4)}
    passed = {
        (c["backbone"], c["patch_type"], c["blocks"], tuple(c["train_layer_norms"])) for c in fake.calls
    }
    assert ("sasrec", "lora", None, ()) in passed and ("causal", "k_adapter", None, ()) in passed
    assert ("sasrec", "houlsby", "first", ()) in passed and ("causal", "houlsby", None, ("all",)) in passed
    assert len(fake.calls) == len(report["configurations"]) == 34
    markdown = (tmp_path / "results" / "reproduction.md").read_text()
    types = markdown.split("## RQ6: which patch type")[1].split("## ")[0]
    assert "| sasrec: LoRA | 0.5000 |" in types and "| causal: FineAll | 0.5000 |" in types
    assert "| Task | LabelCS | LR, TF-IDF of the seen items |" in types  # the classical baselines beside
    assert "| causal: Houlsby adapter, last blocks |" in markdown.split("## RQ6: where to insert")[1]
    assert "| sasrec: FineAll, 10% of users | 0.5000 |" in markdown
    assert "sasrec: SASRec" in markdown.split("## Backbones")[1].split("## ")[0]
    assert {"rq6_types.png", "rq6_scaling.png"} <= set(report["plots"])
    assert (tmp_path / "results" / "rq6_types.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_adapter_study_runs_the_real_pipeline_on_sasrec(tmp_path):
    root = synthetic_root(tmp_path / "data")
    runner = Reproduction(
        replace(PRESETS["smoke"], seeds=(0,)), tmp_path / "runs", data_dir=root, cache_dir=tmp_path / "cache"
    )
    chosen = [
        c
        for c in research_plan([6], ["genest"])["rq6_types"]
        if c.objective == "sasrec" and c.patch_type in ("lora", "soft_prompt")
    ]
    report = run_plan(runner, {"rq6_types": chosen}, ["genest"], tmp_path / "results", "x")
    assert report["backbones"]["sasrec"]["test"]["hr@10"] >= 0.0
    lora = report["configurations"]["sasrec-genest-peterrec-lora-readout_attention"]
    config = json.loads(
        (
            tmp_path
            / "runs"
            / "sasrec-genest-peterrec-lora-readout_attention"
            / "seed0"
            / "patch"
            / "patch_config.json"
        ).read_text()
    )
    assert config["patch_type"] == "lora" and lora["patch_size_bytes"] > 0 and lora["seconds_per_step"] > 0
    assert 0.0 <= lora["test"]["0"]["accuracy"] <= 1.0


def test_text_items_plan_compares_representations_and_patch_targets_on_coldrec():
    plan = research_plan([7], ["genest", "coldrec"])
    assert list(plan) == ["rq7_text_items"]
    configurations = plan["rq7_text_items"]
    assert {c.task for c in configurations} == {"coldrec"} and {c.readout for c in configurations} == {
        "attention"
    }
    by_backbone = {
        backbone: {
            (c.method, c.patch_target, c.patch_type, c.item_patch_type)
            for c in configurations
            if c.objective == backbone
        }
        for backbone in ("sasrec", "sasrec_text", "sasrec_text_id")
    }
    references = {
        ("fine_all", "user_encoder", "model_patch", None),
        ("fine_cls", "user_encoder", "model_patch", None),
    }
    user_patch = ("peterrec", "user_encoder", "houlsby", None)
    assert by_backbone["sasrec"] == {user_patch, *references}
    text = {
        user_patch,
        ("peterrec", "item_encoder", "model_patch", "lora"),
        ("peterrec", "both", "houlsby", "lora"),
    }
    assert by_backbone["sasrec_text"] == by_backbone["sasrec_text_id"] == text | references
    # The ID configurations are RQ6's own runs: the new fields change no existing name.
    assert set(c.name for c in configurations if c.objective == "sasrec") < {
        c.name for c in research_plan([6], ["coldrec"])["rq6_types"]
    }
    assert "sasrec_text-coldrec-peterrec-houlsby-both_lora-readout_attention" in {
        c.name for c in configurations
    }
    assert len(unique_configurations(research_plan([6], ["genest", "coldrec"]))) == 2 * 34
    assert Configuration("genest", "peterrec").name == "causal-genest-peterrec-serial_two"
    assert 7 not in DEFAULT_RESEARCH_QUESTIONS


def test_configuration_resets_patch_options_that_its_patch_target_does_not_use():
    item_only = Configuration(
        "coldrec", "peterrec", "sasrec_text", patch_type="houlsby", patch_target="item_encoder"
    )
    assert (item_only.patch_type, item_only.item_patch_type) == ("model_patch", "lora")
    user_only = Configuration("coldrec", "peterrec", "sasrec_text", item_patch_type="prompt_tuning")
    assert user_only.item_patch_type is None and user_only.name == "sasrec_text-coldrec-peterrec"
    fine_all = Configuration(
        "coldrec", "fine_all", "sasrec_text", patch_target="both", item_patch_type="lora"
    )
    assert (fine_all.patch_target, fine_all.item_patch_type) == ("user_encoder", None)
    with pytest.raises(ValueError, match="needs a backbone whose items come from their text"):
        Configuration("coldrec", "peterrec", "sasrec", patch_target="item_encoder")
    with pytest.raises(ValueError, match="Unknown patch target"):
        Configuration("coldrec", "peterrec", "sasrec_text", patch_target="decoder")


def test_text_items_study_pretrains_text_backbones_passes_settings_and_reports_cold_rows(tmp_path):
    root = synthetic_root(tmp_path / "data")
    fake = FakePipeline(load_from_disk(str(root / "coldrec"))["test"]["user_id"])
    preset = replace(PRESETS["quick"], seeds=(0, 1), num_eval_negatives=5)
    runner = Reproduction(
        preset,
        tmp_path / "runs",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        finetune_fn=fake.finetune,
        pretrain_fn=fake.pretrain,
        item_texts=tmp_path / "texts.json",
    )
    report = run_plan(runner, research_plan([7], ["coldrec"]), ["coldrec"], tmp_path / "results", "x")
    pretrained = {call["backbone"]: call for call in fake.pretrain_calls}
    assert {name: call["item_representation"] for name, call in pretrained.items()} == {
        "sasrec": "id",
        "sasrec_text": "text",
        "sasrec_text_id": "text_id",
    }
    # Every backbone pretrains with the preset's budget, whatever its items: representations compared at equal training.
    assert {call["batch_size"] for call in pretrained.values()} == {64}
    assert pretrained["sasrec"]["item_texts"] is None and pretrained["sasrec"]["config_overrides"] is None
    assert pretrained["sasrec_text"]["config_overrides"] == "item_encoder_batch_size=4096"
    assert pretrained["sasrec_text_id"]["item_texts"] == str(tmp_path / "texts.json")
    passed = {(c["backbone"], c["patch_target"], c["item_patch_type"], c["patch_type"]) for c in fake.calls}
    assert ("sasrec_text_id", "both", "lora", "houlsby") in passed
    assert ("sasrec_text", "item_encoder", "lora", "model_patch") in passed
    # Every run keeps the preset's budget, whether it trains the item encoder or not.
    assert {(c["batch_size"], c["epochs"]) for c in fake.calls} == {(64, 5)}
    assert len(fake.calls) == 2 * len(report["configurations"]) == 2 * 13
    result = report["configurations"]["sasrec_text-coldrec-peterrec-item_encoder_lora-readout_attention"]
    assert result["seconds_per_step"] == 0.5 and result["patch_size_bytes"] == 2048
    assert result["test"]["1"]["full_cold_hr@10"] == pytest.approx(0.15)
    section = (tmp_path / "results" / "reproduction.md").read_text().split("## RQ7")[1].split("\n## ")[0]
    assert (
        "| Items: method | MRR@5 | HR@10 | NDCG@10 | HR@10 full | NDCG@10 full | cold MRR@5 | cold HR@10 |"
        in section
    )
    assert "| text: PeterRec, item encoder (LoRA) | 0.1000 ± 0.0000 | 0.2500 ± 0.0707 |" in section
    assert "| text_id: PeterRec, user and item encoders (Houlsby adapter + LoRA) |" in section
    assert "| 0.1250 ± 0.0354 |" in section and "25 (25.00%) | 0.500 |" in section  # cold HR@10; costs
    assert "the 3 test rows whose target item occurs in no training pair" in section
    for baseline in ("Popularity", "Item-kNN", "EASE"):
        assert f"| baseline: {baseline} |" in section
    assert "sasrec_text: SASRec over item texts (small offline text encoder)" in report_markdown_backbones(
        tmp_path
    )


def report_markdown_backbones(tmp_path: Path) -> str:
    return (tmp_path / "results" / "reproduction.md").read_text().split("## Backbones")[1].split("## ")[0]


def test_baseline_measures_on_cold_rows_are_keyed_as_the_models_and_ties_count_against_the_true_item():
    # Three target items; row 1's true item (2) is cold: every baseline scores it 0, as its tied candidates.
    scores = torch.tensor([[5.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    metrics = ranking_metrics_of_scores(scores, [[0, 1], [2, 1]], [0, 2], [[0], [2]], cold=[False, True])
    assert metrics["cold_rows"] == metrics["full_cold_rows"] == 1
    # Row 1 ranks second of its two candidates (the tie counts against it) and third of all three target items.
    assert metrics["mrr@5"] == 0.75 and metrics["cold_mrr@5"] == 0.5
    assert metrics["full_cold_mrr@5"] == pytest.approx(1 / 3) and metrics["full_mrr@5"] == pytest.approx(
        2 / 3
    )
    assert not any(key.startswith("cold_full_") for key in metrics)


@pytest.mark.slow
def test_text_items_study_runs_the_real_pipeline_on_a_text_backbone(tmp_path):
    root = synthetic_root(tmp_path / "data")
    texts = {f"i{i}": f"movie {i} | {'drama' if i < 10 else 'comedy'}" for i in range(20)}
    texts.update({f"t{i}": f"target {i} | {'drama' if i < 6 else 'comedy'}" for i in range(12)})
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    runner = Reproduction(
        replace(PRESETS["smoke"], seeds=(0,)),
        tmp_path / "runs",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        item_texts=tmp_path / "texts.json",
    )
    chosen = [
        c
        for c in research_plan([7], ["coldrec"])["rq7_text_items"]
        if c.objective == "sasrec_text" and (c.patch_target == "both" or c.method == "fine_cls")
    ]
    report = run_plan(runner, {"rq7_text_items": chosen}, ["coldrec"], tmp_path / "results", "x")
    assert report["backbones"]["sasrec_text"]["config"]["item_representation"] == "text"
    both = report["configurations"]["sasrec_text-coldrec-peterrec-houlsby-both_lora-readout_attention"]
    patch = (
        tmp_path
        / "runs"
        / "sasrec_text-coldrec-peterrec-houlsby-both_lora-readout_attention"
        / "seed0"
        / "patch"
    )
    config = json.loads((patch / "patch_config.json").read_text())
    assert (config["patch_target"], config["item_patch_type"], config["patch_type"]) == (
        "both",
        "lora",
        "houlsby",
    )
    assert both["seconds_per_step"] > 0 and "cold_rows" in both["test"]["0"]
    assert "| text: FineCLS |" in (tmp_path / "results" / "reproduction.md").read_text().split("## RQ7")[1]


class StagedRunner:
    """Two stages for `map_in_stages`: the first stage's `slow` call returns only once the second-stage call
    that waits for `fast` has started, so the test finishes only if that call does not wait for `slow`."""

    def __init__(self, folder: Path):
        self.folder = folder

    def first(self, name: str) -> str:
        deadline = time.monotonic() + 60
        while name == "slow" and not (self.folder / "started-a").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the configuration of the fast backbone waited for the slow one")
            time.sleep(0.05)
        return name.upper()

    def then(self, argument: str) -> str:
        (self.folder / f"started-{argument}").touch()
        return argument * 2


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_second_stage_calls_start_as_soon_as_their_own_first_stage_call_is_done(jobs, tmp_path):
    if jobs == 1:  # one process runs the first stage whole before the second
        (tmp_path / "started-a").touch()
    firsts, thens = map_in_stages(
        StagedRunner(tmp_path), "first", ["slow", "fast"], "then", [("slow", "b"), ("fast", "a")], jobs, 1
    )
    assert firsts == ["SLOW", "FAST"] and thens == ["bb", "aa"]


class SleepingRunner:
    """A first-stage call that writes its worker's process id, then sleeps for a minute."""

    def __init__(self, folder: Path):
        self.folder = folder

    def first(self, name: str) -> str:
        (self.folder / f"{name}.pid").write_text(str(os.getpid()))
        time.sleep(60)
        return name


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (an exited, unreaped child is a zombie, state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc (Linux)")
def test_workers_end_when_the_reproduction_is_killed(tmp_path):
    script = (
        "import sys; from pathlib import Path; from tests.test_reproduce import SleepingRunner; "
        "from modeling_peterrec.reproduction.workers import map_in_stages; "
        "map_in_stages(SleepingRunner(Path(sys.argv[1])), 'first', ['a', 'b'], 'first', [], 2, 1)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=Path(__file__).parents[1])
    pid_files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    deadline = time.monotonic() + 120
    while not all(path.exists() and path.read_text() for path in pid_files):
        assert time.monotonic() < deadline and parent.poll() is None, "the workers did not start"
        time.sleep(0.1)
    workers = [int(path.read_text()) for path in pid_files]
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if running(pid)]
    for pid in survivors:
        os.kill(pid, 9)
    assert not survivors, "workers went on after their parent was killed"
