"""Export for serving: the exported program and the ONNX model give eager outputs for two batch sizes and two
lengths; the serving folder holds what a server loads."""

from __future__ import annotations

import json

import pytest
import torch

from modeling_peterrec.export import (
    EXPORTED_PROGRAM_NAME,
    SERVING_CONFIG_NAME,
    export_onnx,
    export_program,
    max_difference,
    save_for_serving,
)
from tests.test_inference import LABELS, classification_model, next_item_model, ranking_model, tokenizer

SHAPES = ((1, 6), (5, 6), (1, 13), (5, 13))
"""Two batch sizes times two lengths, none of them the traced (2, 8)."""

MODELS = {
    "classification_causal": lambda: classification_model(),
    "classification_non_causal": lambda: classification_model(next_item_model(is_causal=False)),
    "ranking": lambda: ranking_model(),
    "next_item": lambda: next_item_model(),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_program_equals_eager_for_two_batch_sizes_and_lengths(name):
    model = MODELS[name]()
    program = export_program(model, tokenizer())
    assert max_difference(model, tokenizer(), program.module(), SHAPES) <= 1e-5


def test_onnx_model_equals_eager(tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime", reason="checking the ONNX model needs onnxruntime")
    for name in ("classification_causal", "next_item"):
        model = MODELS[name]()
        session = onnxruntime.InferenceSession(
            str(export_onnx(model, tokenizer(), tmp_path / f"{name}.onnx"))
        )

        def run(input_ids, attention_mask, session=session):
            feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
            return torch.from_numpy(session.run(None, feed)[0])

        assert max_difference(model, tokenizer(), run, SHAPES) <= 1e-5


def test_serving_folder_loads_without_the_package_model(tmp_path):
    model, tok = classification_model(), tokenizer()
    written = save_for_serving(model, tok, tmp_path / "serve", onnx=False, max_length=20)
    assert written["exported_program"] == EXPORTED_PROGRAM_NAME
    config = json.loads((tmp_path / "serve" / SERVING_CONFIG_NAME).read_text())
    assert config["output_names"] == LABELS
    assert config["suffix_ids"] == [tok.tcl_token_id] and config["prefix_ids"] == []
    vocabulary = json.loads((tmp_path / "serve" / "tokenizer.json").read_text())["model"]["vocab"]
    history = ["item3", "item7", "item1"]
    ids = [vocabulary[item] for item in history] + config["suffix_ids"]
    program = torch.export.load(tmp_path / "serve" / EXPORTED_PROGRAM_NAME).module()
    input_ids = torch.tensor([ids])
    served = program(input_ids, torch.ones_like(input_ids))
    with torch.no_grad():
        torch.testing.assert_close(served, model(input_ids).logits)
