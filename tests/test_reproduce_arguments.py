"""`peterrec reproduce` reads its options as a `ReproduceArguments` dataclass, from the command line or a `.json`."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from modeling_peterrec.reproduction.cli import parse_arguments


def test_json_config_gives_the_same_arguments_as_options(tmp_path):
    options = [
        "--preset",
        "smoke",
        "--rq",
        "1",
        "3",
        "--tasks",
        "genest",
        "--seeds",
        "0",
        "1",
        "--report_only",
    ]
    config = tmp_path / "reproduce.json"
    config.write_text(
        json.dumps(
            {"preset": "smoke", "rq": [1, 3], "tasks": ["genest"], "seeds": [0, 1], "report_only": True}
        )
    )
    from_options, from_json = parse_arguments(options), parse_arguments([str(config)])
    assert from_options == from_json
    assert from_options.rq == [1, 3] and from_options.report_only and from_options.max_length is None


def test_overrides_replace_the_preset_fields():
    preset = parse_arguments(
        ["--preset", "cpu", "--seeds", "4", "--max_length", "200"]
    ).preset_with_overrides()
    assert preset.seeds == (4,) and preset.max_length == 200 and preset.hidden_size == 64
    selected = parse_arguments(
        ["--length_candidates", "200", "400", "--selection", "cv"]
    ).preset_with_overrides()
    assert selected.tune["max_length"] == (200, 400) and selected.selection == "cv"


def test_the_cpu_preset_reads_400_items_and_pretrains_on_windows_of_200(tmp_path):
    """The cpu preset's backbone reads 400 items (90% of ML-1M's users whole) and pretrains on windows of 200 every
    100; a `--max_length` override below the windows shortens them too."""
    calls = []

    def pretrain(args, training_args):
        calls.append((args.max_length, args.pretraining_window, args.window_stride))
        raise InterruptedError

    for argv in (["--preset", "cpu"], ["--preset", "cpu", "--max_length", "50"]):
        args = parse_arguments(argv)
        runner = replace(args.runner(args.preset_with_overrides()), work_dir=tmp_path, pretrain_fn=pretrain)
        with pytest.raises(InterruptedError):
            runner.backbone("causal")
    assert calls == [(400, 200, 100), (50, 50, 50)]


def test_the_preset_sets_how_the_masked_backbone_masks_and_how_long_it_trains(tmp_path):
    from modeling_peterrec.reproduction.plan import PRESETS

    calls = []

    def pretrain(args, training_args):
        calls.append(
            (args.objective, args.mask_probability, args.last_item_rows, training_args.num_train_epochs)
        )
        raise InterruptedError

    cpu = PRESETS["cpu"]
    masked = (cpu.mask_probability, cpu.last_item_rows)
    presets = (
        cpu,
        replace(cpu, mask_probability=0.1, last_item_rows=0.7, masked_pretrain_epochs=None),
        parse_arguments(["--preset", "cpu", "--pretrain_epochs", "3"]).preset_with_overrides(),
    )
    for preset in presets:
        for name in ("masked", "causal"):
            runner = replace(parse_arguments([]).runner(preset), work_dir=tmp_path, pretrain_fn=pretrain)
            with pytest.raises(InterruptedError):
                runner.backbone(name)
    assert calls == [
        ("masked", *masked, cpu.masked_pretrain_epochs),
        ("causal", *masked, cpu.pretrain_epochs),
        ("masked", 0.1, 0.7, cpu.pretrain_epochs),
        ("causal", 0.1, 0.7, cpu.pretrain_epochs),
        ("masked", *masked, 3),
        ("causal", *masked, 3),
    ]
    assert cpu.masked_pretrain_epochs > cpu.pretrain_epochs
    with pytest.raises(ValueError, match="mask_probability must be in"):
        replace(cpu, mask_probability=0.0)
    with pytest.raises(ValueError, match="last_item_rows must be in"):
        replace(cpu, last_item_rows=-0.1)


def test_item_texts_reach_the_runner_of_the_text_items_study():
    args = parse_arguments(["--rq", "7", "--tasks", "coldrec", "--item_texts", "texts.json"])
    runner = args.runner(args.preset_with_overrides())
    assert args.rq == [7] and runner.item_texts == Path("texts.json")


def test_jobs_and_threads_are_checked_before_anything_runs():
    args = parse_arguments(["--jobs", "2", "--threads", "1"])
    assert (args.jobs, args.threads) == (2, 1)
    for argv in (["--jobs", "0"], ["--threads", "0"]):
        with pytest.raises(ValueError, match="--jobs and --threads must be at least 1"):
            parse_arguments(argv)


def test_the_preset_gives_the_wide_term_its_own_learning_rate(tmp_path):
    from modeling_peterrec.reproduction.plan import PRESETS, transfer_configuration

    rates = []

    def finetune(args, training_args):
        rates.append((args.head_terms, training_args.learning_rate, training_args.wide_learning_rate))
        raise InterruptedError

    for preset in (PRESETS["cpu"], replace(PRESETS["cpu"], wide_learning_rate=None)):
        runner = replace(parse_arguments([]).runner(preset), work_dir=tmp_path, finetune_fn=finetune)
        runner.backbone = lambda name: {"backbone": "unused"}
        with pytest.raises(InterruptedError):
            runner.run(
                transfer_configuration("genest", "peterrec", head_terms="wide_deep"), 0, 2e-3, tmp_path
            )
    assert rates == [("wide_deep", 2e-3, PRESETS["cpu"].wide_learning_rate), ("wide_deep", 2e-3, None)]
