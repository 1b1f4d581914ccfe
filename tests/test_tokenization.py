"""The item tokenizer: special tokens, vocabulary building, padding, truncation, [TCL] placement, round trips."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

import modeling_peterrec  # noqa: F401  (registers the Auto classes)
from modeling_peterrec import PeterRecConfig
from tokenization import ItemTokenizer

SEQUENCES = [["b", "a", "c"], ["a", "b"], ["a", 7], ["rare"]]


@pytest.fixture
def tokenizer() -> ItemTokenizer:
    return ItemTokenizer.from_sequences(SEQUENCES, min_count=2)


def test_special_tokens_have_their_own_ids(tokenizer):
    assert (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.mask_token_id,
        tokenizer.tcl_token_id,
    ) == (
        0,
        1,
        2,
        3,
    )
    assert tokenizer.tcl_token == "[TCL]" and tokenizer.first_item_id == 4


def test_vocabulary_orders_items_by_count_and_applies_min_count(tokenizer):
    vocab = tokenizer.get_vocab()
    assert vocab["a"] == 4 and vocab["b"] == 5  # a: 3 times, b: 2 times
    assert "c" not in vocab and "rare" not in vocab and "7" not in vocab
    assert len(tokenizer) == 6


def test_integers_and_strings_map_to_the_same_item():
    tokenizer = ItemTokenizer.from_sequences([[7, 8], ["7"]])
    assert tokenizer.encode_items([7]) == tokenizer.encode_items(["7"]) == [4]


def test_unknown_items_map_to_unk(tokenizer):
    assert tokenizer.encode_items(["a", "never-seen"]) == [4, tokenizer.unk_token_id]


def test_left_padding_and_causal_tcl(tokenizer):
    batch = tokenizer([["a", "b", "a"], ["b"]], padding=True)
    assert batch["input_ids"] == [[4, 5, 4, 3], [0, 0, 5, 3]]
    assert batch["attention_mask"] == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_non_causal_tcl_wraps_both_ends(tokenizer):
    tokenizer.tcl_position = "both"
    assert tokenizer([["a", "b"]])["input_ids"] == [[3, 4, 5, 3]]


def test_pretraining_sequences_carry_no_special_tokens(tokenizer):
    assert tokenizer(["a", "b"], add_special_tokens=False)["input_ids"] == [4, 5]


def test_truncation_keeps_the_most_recent_items(tokenizer):
    items = ["a", "a", "b", "b"]
    assert tokenizer(items, truncation=True, max_length=3)["input_ids"] == [5, 5, 3]


def test_save_load_round_trip_is_exact(tokenizer, tmp_path):
    tokenizer.tcl_position = "both"
    tokenizer.save_pretrained(tmp_path)
    for loaded in (ItemTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert isinstance(loaded, ItemTokenizer)
        assert loaded.get_vocab() == tokenizer.get_vocab()
        assert loaded.tcl_position == "both" and loaded.tcl_token_id == 3
        assert loaded.all_special_ids == tokenizer.all_special_ids
        assert loaded([["b", "a"], ["x"]], padding=True) == tokenizer([["b", "a"], ["x"]], padding=True)


def test_auto_tokenizer_resolves_through_the_model_config(tokenizer, tmp_path):
    PeterRecConfig(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), ItemTokenizer)


@pytest.mark.parametrize(
    ("sequences", "error", "message"),
    [
        ([], ValueError, "empty"),
        ([["a"], []], ValueError, "Sequence 1 is empty"),
        ("a b c", TypeError, "list of items"),
        ([["a", None]], TypeError, "strings or integers"),
    ],
)
def test_bad_input_is_a_clear_error(tokenizer, sequences, error, message):
    with pytest.raises(error, match=message):
        tokenizer(sequences)


def test_items_named_like_special_tokens_are_rejected():
    with pytest.raises(ValueError, match="collide with special tokens"):
        ItemTokenizer.from_sequences([["[MASK]", "a"]])


def test_unknown_items_are_reported(tokenizer, caplog):
    sequences = [["a", "b", "x"], ["a", "y"], ["b", "a", "x", 7]]  # x twice, y, 7: 4 of 9 unknown
    unknown = tokenizer.unknown_share(sequences)
    assert (unknown.count, unknown.total, unknown.examples) == (4, 9, ("x", "y", "7"))
    assert unknown.share == pytest.approx(4 / 9)

    assert tokenizer.check_unknown_items(sequences, warn_above=0.05, error_above=0.5) == unknown
    assert len(caplog.messages) == 1 and "44.4% of the items" in caplog.messages[0]

    with pytest.raises(ValueError, match=r"44\.4% .*e\.g\. \['x', 'y', '7'\].*allow_unknown_items=True"):
        tokenizer.check_unknown_items(sequences, error_above=0.4)
    assert tokenizer.check_unknown_items(sequences, error_above=0.4, allow_unknown_items=True) == unknown
    assert len(caplog.messages) == 2

    assert tokenizer.check_unknown_items([["a", "b"]]).share == 0.0 and len(caplog.messages) == 2


def test_max_length_is_saved_and_truncates_left_with_one_warning(tokenizer, tmp_path, caplog):
    tokenizer.model_max_length = 4
    tokenizer.save_pretrained(tmp_path)
    loaded = ItemTokenizer.from_pretrained(tmp_path)
    assert loaded.model_max_length == 4
    assert ItemTokenizer.from_sequences(SEQUENCES, model_max_length=6).model_max_length == 6

    # the three most recent items and [TCL]
    assert loaded(["b", "a", "b", "a", "a"])["input_ids"] == [5, 4, 4, 3]
    assert loaded([["a", "b", "b", "b"], ["b"]], padding=True)["input_ids"] == [[5, 5, 5, 3], [0, 0, 5, 3]]
    assert len(caplog.messages) == 1 and "model_max_length=4" in caplog.messages[0]
    assert loaded(["b", "a", "b", "a", "a"], add_special_tokens=False)["input_ids"] == [4, 5, 4, 4]

    with pytest.raises(ValueError, match="model_max_length must be an integer above 2"):
        loaded.model_max_length = 2


def test_missing_tokenizer_file_is_an_error(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    for load in (ItemTokenizer.from_pretrained, AutoTokenizer.from_pretrained):
        with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no tokenizer.json.*save_pretrained"):
            load(tmp_path)
    with pytest.raises(ValueError, match="has no items"):
        ItemTokenizer()


EVERY_MODULE_BESIDE_A_DECOY = """
import importlib, pkgutil
import modeling_peterrec, tokenization
for module in pkgutil.walk_packages(modeling_peterrec.__path__, "modeling_peterrec."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(modeling_peterrec.ItemTokenizer.__module__, tokenization.__file__)
"""


def test_package_imports_beside_an_unrelated_tokenization_module(tmp_path):
    """BERT-era code ships a top-level `tokenization.py`; no module of the package may pick it up."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "tokenization.py").write_text(
        "FullTokenizer = object  # an unrelated module of the same name\n"
    )
    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            EVERY_MODULE_BESIDE_A_DECOY,
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    module, decoy = result.stdout.split()
    assert module == "modeling_peterrec.tokenization_peterrec"
    assert Path(decoy) == tmp_path / "tokenization.py"


def test_no_module_of_the_package_imports_the_top_level_tokenization():
    """Also the imports inside functions, which importing every module does not run."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "modeling_peterrec"
    pattern = re.compile(r"^\s*(from\s+tokenization\b|import\s+tokenization\b)", re.MULTILINE)
    offenders = [str(path) for path in package.rglob("*.py") if pattern.search(path.read_text())]
    assert offenders == []
