"""Selection inside the training users: the folds hold training users only and partition them, stratified by
label; the best mean candidate is chosen; the test split is read once per configuration and seed; the smoke preset
still runs end to end."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from datasets import load_from_disk
from test_reproduce import synthetic_root

from modeling_peterrec.reproduction import (
    PRESETS,
    Configuration,
    Reproduction,
    candidates,
    choose_candidate,
    fold_indices,
    main,
    run_plan,
    user_folds,
)
from modeling_peterrec.reproduction.baselines import stratified_folds


def imbalanced_root(tmp_path: Path) -> Path:
    """The synthetic tasks with 101 users, so that the classes are unequal (51 against 50) and nothing divides by 3."""
    return synthetic_root(tmp_path / "data", num_users=101)


@pytest.mark.parametrize("task", ["genest", "coldrec"])
def test_folds_partition_the_training_users_and_validate_on_the_validation_split(tmp_path, task):
    splits = load_from_disk(str(imbalanced_root(tmp_path) / task))
    train_users = set(splits["train"]["user_id"])
    test_users = set(splits["test"]["user_id"])
    folds = user_folds(splits, 3, seed=0)
    held_out = Counter(user for fold in folds for user in fold["test"]["user_id"])
    assert set(held_out) == train_users and set(held_out.values()) == {1}
    for fold in folds:
        # The checkpoint is chosen on the task's validation users, never on the users the fold scores.
        assert fold["validation"]["user_id"] == splits["validation"]["user_id"]
        assert set(fold["train"]["user_id"]).isdisjoint(fold["test"]["user_id"])
        assert set(fold["train"]["user_id"]) | set(fold["test"]["user_id"]) == train_users
        for split in fold.values():
            assert set(split["user_id"]).isdisjoint(test_users)


def test_folds_keep_each_class_share_within_one_user():
    labels = [0] * 40 + [1] * 17 + [2] * 5
    folds = fold_indices(len(labels), 3, seed=1, labels=labels)
    for label, count in Counter(labels).items():
        per_fold = [sum(labels[index] == label for index in held_out) for _, held_out in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count
    sizes = [len(held_out) for _, held_out in folds]
    assert max(sizes) - min(sizes) <= 1


def test_fold_helper_is_seeded_and_shared_with_the_baselines():
    labels = [0, 1] * 10
    assert [held.tolist() for _, held in stratified_folds(labels, seed=4)] == [
        held.tolist() for _, held in fold_indices(len(labels), 5, 4, labels)
    ]
    assert [h.tolist() for _, h in fold_indices(20, 4, 4)] != [h.tolist() for _, h in fold_indices(20, 4, 5)]
    with pytest.raises(ValueError, match="k must be"):
        fold_indices(3, 4, 0)


def test_choose_candidate_picks_the_best_mean_not_the_best_single_fold():
    known = {0.1: [0.9, 0.5, 0.5], 0.01: [0.7, 0.7, 0.7], 0.001: [0.6, 0.6, 0.8]}
    grid = candidates({"learning_rate": tuple(known)})
    selection = choose_candidate(
        grid, [0, 1, 2], lambda c, fold: known[c["learning_rate"]][fold], "cv", "accuracy"
    )
    assert selection.chosen == "lr0.01"
    record = selection.as_dict()["candidates"]
    assert record["lr0.1"]["mean"] == pytest.approx(19 / 30) and record["lr0.1"]["scores"] == known[0.1]
    assert record["lr0.001"]["std"] == pytest.approx(0.11547, abs=1e-5)


def test_candidates_are_the_grid_product_and_reject_unknown_keys():
    grid = candidates({"learning_rate": (1e-3, 1e-2), "readout": ("tcl", "mean")})
    assert len(grid) == 4 and grid[1] == {"learning_rate": 1e-3, "readout": "mean"}
    assert candidates({}) == [{}]
    with pytest.raises(ValueError, match="Cannot tune"):
        candidates({"momentum": (0.9,)})


class StubPipeline:
    """Stands in for `finetune`: returns known held-out accuracies per (candidate, fold) and counts every run by
    the users it is tested on (`real_test`, `real_validation`, or a fold of the training users)."""

    scores = {(1e-3, "tcl"): 0.70, (1e-3, "sum"): 0.80, (1e-2, "tcl"): 0.75, (1e-2, "sum"): 0.60}

    def __init__(self, splits):
        self.real_test = splits["test"]["user_id"]
        self.real_validation = splits["validation"]["user_id"]
        self.train_users = set(splits["train"]["user_id"])
        self.reads = Counter()

    def finetune(self, args, training_args):
        tested = load_from_disk(args.data_dir)["test"]["user_id"]
        readout = args.readout or "tcl"
        rate = training_args.learning_rate
        if tested == self.real_test:
            where = "real_test"
        elif tested == self.real_validation:
            where = "real_validation"
        else:
            assert set(tested) <= self.train_users and set(
                load_from_disk(args.data_dir)["train"]["user_id"]
            ) <= (self.train_users)
            where = "fold"
        self.reads[(where, rate, readout, training_args.seed)] += 1
        accuracy = self.scores[(rate, readout)]
        summary = {
            "task_kind": "classification",
            "trainable_parameters": 1,
            "total_parameters": 4,
            "validation": {"accuracy": accuracy},
            "test": {"accuracy": accuracy},
            "log_history": [{"epoch": 1.0, "eval_accuracy": accuracy}],
        }
        self._write(training_args, summary)
        return summary

    @staticmethod
    def _write(training_args, summary):
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(training_args.output_dir) / "metrics.json").write_text(json.dumps(summary))


@pytest.fixture
def stub_run(tmp_path):
    root = imbalanced_root(tmp_path)
    stub = StubPipeline(load_from_disk(str(root / "genest")))
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "config.json").write_text(json.dumps({"readout": "tcl"}))
    preset = replace(
        PRESETS["smoke"], seeds=(0, 1), tune={"learning_rate": (1e-3, 1e-2), "readout": ("tcl", "sum")}
    )
    runner = Reproduction(
        preset, tmp_path / "runs", data_dir=root, cache_dir=tmp_path / "cache", finetune_fn=stub.finetune
    )
    summary = {"backbone": str(backbone), "num_parameters": 1, "train_runtime_s": 1.0}
    runner.backbone = lambda objective: {**summary, "test": {"mrr@5": 0.1, "hr@5": 0.2}}
    configurations = [Configuration("genest", "peterrec"), Configuration("genest", "fine_all")]
    plan = {"rq1": configurations}
    report = run_plan(runner, plan, ["genest"], tmp_path / "results", "test")
    return stub, report, tmp_path, runner, plan


def test_cv_selection_runs_every_candidate_on_every_fold_and_reads_test_once_per_seed(stub_run):
    stub, report, *_ = stub_run
    # Two configurations x four candidates x three folds, on the first seed only; no real validation read.
    folds = {key: count for key, count in stub.reads.items() if key[0] == "fold"}
    assert sum(folds.values()) == 2 * 4 * 3 and {key[3] for key in folds} == {0}
    assert not any(key[0] == "real_validation" for key in stub.reads)
    tests = {key: count for key, count in stub.reads.items() if key[0] == "real_test"}
    assert tests == {("real_test", 1e-3, "sum", 0): 2, ("real_test", 1e-3, "sum", 1): 2}
    result = report["configurations"]["causal-genest-peterrec-serial_two"]
    assert result["selection"]["chosen"] == "lr0.001-readout_sum"
    assert result["selection"]["scheme"] == "cv" and result["selection"]["held_out_sets"] == 3
    assert result["configuration"]["readout"] == "sum" and result["learning_rate"] == 1e-3
    assert result["selection"]["candidates"]["lr0.01-readout_tcl"]["mean"] == pytest.approx(0.75)


def test_selection_table_is_in_the_report(stub_run):
    _, _, tmp_path, *_ = stub_run
    markdown = (tmp_path / "results" / "reproduction.md").read_text()
    assert "## Hyperparameter selection" in markdown
    assert (
        "| causal-genest-fine_all | **lr0.001-readout_sum** | cv (3) | accuracy | **0.8000 ± 0.0000** |"
        in markdown
    )
    assert "3-fold cross-validation inside the training users" in markdown


def test_rerun_resumes_tuning_and_final_runs_from_disk(stub_run):
    stub, _, tmp_path, runner, plan = stub_run
    before = sum(stub.reads.values())
    assert before == 2 * (4 * 3 + 2)
    run_plan(runner, plan, ["genest"], tmp_path / "again", "again")
    assert sum(stub.reads.values()) == before


@pytest.mark.slow
def test_smoke_preset_with_cv_selection_runs_end_to_end(tmp_path):
    root = synthetic_root(tmp_path / "data")
    report = main(
        ["--preset", "smoke", "--rq", "3", "--tasks", "genest", "--data_dir", str(root)]
        + ["--learning_rates", "1e-3", "3e-3", "--folds", "2"]
        + ["--output_dir", str(tmp_path / "results"), "--cache_dir", str(tmp_path / "cache")]
    )
    selection = report["configurations"]["causal-genest-peterrec-serial_two"]["selection"]
    assert selection["scheme"] == "cv" and set(selection["candidates"]) == {"lr0.001", "lr0.003"}
    assert all(len(candidate["scores"]) == 2 for candidate in selection["candidates"].values())
    assert "## Hyperparameter selection" in (tmp_path / "results" / "reproduction.md").read_text()


def test_history_length_is_a_candidate_that_reaches_the_runs_and_the_folders(tmp_path):
    """`max_length` candidates: every fold run reads its candidate's number of items, the chosen one alone reads the
    test split, and the runs' folders name the length."""
    root = imbalanced_root(tmp_path)
    stub = StubPipeline(load_from_disk(str(root / "genest")))
    lengths = []

    def finetune(args, training_args):
        lengths.append((args.max_length, stub.real_test == load_from_disk(args.data_dir)["test"]["user_id"]))
        summary = stub.finetune(args, training_args)
        summary["validation"]["accuracy"] = summary["test"]["accuracy"] = (
            0.9 if args.max_length == 12 else 0.7
        )
        stub._write(training_args, summary)
        return summary

    preset = replace(PRESETS["smoke"], seeds=(0,), tune={"max_length": (20, 12)}, selection="cv")
    runner = Reproduction(
        preset, tmp_path / "runs", data_dir=root, cache_dir=tmp_path / "cache", finetune_fn=finetune
    )
    backbone = {"backbone": str(tmp_path / "backbone"), "num_parameters": 1, "train_runtime_s": 1.0}
    runner.backbone = lambda objective: backbone
    result = runner.configuration_result(Configuration("genest", "peterrec"))
    assert sorted(lengths) == [(12, False)] * 3 + [(12, True)] + [(20, False)] * 3
    assert result["selection"]["chosen"] == "length12" and result["chosen"] == {"max_length": 12}
    assert (
        tmp_path / "runs" / "tuning" / "causal-genest-peterrec-serial_two" / "length20" / "cv2of3"
    ).is_dir()
    assert (tmp_path / "runs" / "causal-genest-peterrec-serial_two" / "length12" / "seed0").is_dir()
