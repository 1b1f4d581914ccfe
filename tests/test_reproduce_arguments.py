"""`peterrec reproduce` reads its options as a `ReproduceArguments` dataclass, from the command line or a `.json`."""

import json
from pathlib import Path

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


def test_item_texts_reach_the_runner_of_the_text_items_study():
    args = parse_arguments(["--rq", "7", "--tasks", "coldrec", "--item_texts", "texts.json"])
    runner = args.runner(args.preset_with_overrides())
    assert args.rq == [7] and runner.item_texts == Path("texts.json")
