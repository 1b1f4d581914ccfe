"""The command line's handling of bad input: usage errors and user errors are one line with exit code 2, bugs keep
their traceback, and options are checked before the pipelines are imported."""

import subprocess
import sys
from pathlib import Path

import pytest

import modeling_peterrec.training.pipelines as pipelines
from modeling_peterrec.cli import DEBUG_VARIABLE, main
from modeling_peterrec.training import FinetuneArguments

REPOSITORY = Path(__file__).resolve().parents[1]


def exit_code_and_stderr(capsys, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_unknown_flag_is_a_usage_error_like_argparse(capsys):
    code, err = exit_code_and_stderr(capsys, ["finetune", "--no_such_option", "1"])
    assert code == 2
    assert err.startswith("usage: peterrec finetune") and err.count("\n") == 2
    assert err.rstrip().endswith("peterrec finetune: error: unrecognized arguments: --no_such_option 1")


def test_evaluate_lists_the_splits_it_can_score(capsys):
    code, err = exit_code_and_stderr(capsys, ["evaluate", "--backbone", "b", "--split", "train"])
    assert code == 2
    assert "argument --split: invalid choice: 'train' (choose from 'validation', 'test')" in err


def test_user_error_is_one_line_naming_the_command(capsys, tmp_path):
    missing = tmp_path / "no-backbone"
    code, err = exit_code_and_stderr(capsys, ["evaluate", "--backbone", str(missing)])
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"peterrec evaluate: error: {missing} is not a backbone folder")


def test_missing_backbone_names_the_flag(capsys):
    code, err = exit_code_and_stderr(capsys, ["finetune", "--task", "genest"])
    assert (code, err) == (
        2,
        "peterrec finetune: error: --backbone is required: the folder written by `peterrec pretrain`.\n",
    )


def test_debug_flag_and_variable_show_the_traceback(tmp_path, monkeypatch):
    argv = ["evaluate", "--backbone", str(tmp_path / "no-backbone")]
    with pytest.raises(FileNotFoundError):
        main(["--debug", *argv])
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    with pytest.raises(FileNotFoundError):
        main(argv)


def test_bugs_keep_their_traceback(monkeypatch):
    def broken(args, training_args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(pipelines, "evaluate", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["evaluate", "--backbone", "b", "--output_dir", "unused"])


def test_finetune_on_own_data_requires_a_task_name(tmp_path):
    with pytest.raises(ValueError, match=r"--task is required with --data_dir.*--task my_labels"):
        FinetuneArguments(backbone="b", data_dir=str(tmp_path / "my_labels"))
    assert FinetuneArguments(backbone="b", data_dir=str(tmp_path), task="gender").task == "gender"
    assert FinetuneArguments(backbone="b").task == "genest"


def test_unknown_method_and_insertion_fail_when_parsed():
    with pytest.raises(ValueError, match="Unknown method 'lora'"):
        FinetuneArguments(backbone="b", method="lora")
    with pytest.raises(ValueError, match="Unknown insertion 'sideways'"):
        FinetuneArguments(backbone="b", insertion="sideways")


def test_options_are_checked_before_the_pipelines_are_imported():
    script = (
        "import sys\n"
        "from modeling_peterrec.cli import main\n"
        "try:\n"
        "    main(['finetune', '--no_such_option', '1'])\n"
        "except SystemExit as exit:\n"
        "    loaded = [name for name in ('datasets', 'modeling_peterrec.training.pipelines') if name in sys.modules]\n"
        "    print(exit.code, loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip() == "2 []", result.stderr
    assert "unrecognized arguments: --no_such_option 1" in result.stderr
