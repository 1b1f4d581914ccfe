"""The registries: one record per concept, read by every consumer; a record without code fails loudly."""

from __future__ import annotations

import pytest

import modeling_peterrec
from modeling_peterrec import prepare_for_transfer
from modeling_peterrec.modeling_peterrec import PLACEMENTS, READOUT_FUNCTIONS
from modeling_peterrec.registry import (
    INSERTIONS,
    METHODS,
    READOUTS,
    TASK_KINDS,
    FineTuningMethod,
    InsertionMode,
    Readout,
    require_implemented,
)
from modeling_peterrec.training.arguments import FinetuneArguments
from tests.test_patching import classification, pretrained_backbone


def test_every_consumer_covers_its_registry():
    require_implemented({mode.placement: mode for mode in INSERTIONS.values()}, PLACEMENTS, "PLACEMENTS")
    require_implemented(READOUTS, READOUT_FUNCTIONS, "READOUT_FUNCTIONS")
    for kind in TASK_KINDS.values():
        assert kind.head is None or hasattr(modeling_peterrec, kind.head), kind


def test_an_insertion_without_code_fails_loudly(monkeypatch):
    monkeypatch.setitem(INSERTIONS, "diagonal", InsertionMode("diagonal", "3(x)", "nowhere", "diagonal"))
    with pytest.raises(NotImplementedError, match="diagonal"):
        require_implemented({mode.placement: mode for mode in INSERTIONS.values()}, PLACEMENTS, "PLACEMENTS")


def test_a_readout_without_code_fails_loudly(monkeypatch):
    monkeypatch.setitem(READOUTS, "median", Readout("median", None, "the median state", uses_tcl=False))
    with pytest.raises(NotImplementedError, match="median"):
        require_implemented(READOUTS, READOUT_FUNCTIONS, "READOUT_FUNCTIONS")


def test_a_new_method_is_one_record(monkeypatch):
    """A method that trains the last block's second LayerNorm: no other code than its record."""
    record = FineTuningMethod(
        "fine_norm2",
        "FineNorm2",
        "the last LayerNorm and the head",
        trained_layers="last_block",
        last_block_layers=("norm2",),
    )
    monkeypatch.setitem(METHODS, record.name, record)
    model, report = classification(pretrained_backbone(), record.name)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trained == {
        "peterrec.blocks.1.norm2.weight",
        "peterrec.blocks.1.norm2.bias",
        "classifier.weight",
        "classifier.bias",
    }
    assert report.trainable_parameters == 2 * 16 + 16 * 3 + 3
    assert FinetuneArguments(backbone="b", method=record.name).method == "fine_norm2"


def test_an_unknown_method_names_the_allowed_ones():
    with pytest.raises(ValueError, match="fine_all"):
        prepare_for_transfer(
            pretrained_backbone(), "fine_everything", "gender", "classification", label_names=["a", "b"]
        )
