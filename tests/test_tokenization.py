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
