"""Patch format: version-1 files still load, names are relative to the task, damaged or foreign files are refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_peterrec import MultiTaskPeterRec, PeterRecModel, load_patch, save_patch
from modeling_peterrec.patch_config import PATCH_CONFIG_NAME, PATCH_FORMAT_VERSION, PATCH_WEIGHTS_NAME
from tests.test_patching import batch, classification, pretrained_backbone, train_steps

FIXTURE = Path(__file__).parent / "fixtures" / "patch_v1"
FIXTURE_INPUTS = torch.tensor([[0, 5, 6, 7, 3], [4, 5, 9, 10, 3]])


def trained_patch(folder: Path, seed: int = 0, task: str = "gender") -> Path:
    model, _ = classification(pretrained_backbone(), task=task, train_layer_norms=["norm2"], seed=seed)
    train_steps(model)
    return save_patch(model, folder)


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / PATCH_CONFIG_NAME).read_text())
    config.update(changes)
    (folder / PATCH_CONFIG_NAME).write_text(json.dumps(config))


def test_version_1_patch_loads_with_its_recorded_outputs():
    backbone = PeterRecModel.from_pretrained(FIXTURE / "backbone")
    model = load_patch(FIXTURE / "patch", backbone)
    expected = torch.tensor(json.loads((FIXTURE / "expected_logits.json").read_text()))
    with torch.no_grad():
        logits = model(input_ids=FIXTURE_INPUTS, attention_mask=FIXTURE_INPUTS.ne(0).long()).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    assert model.patch_config.format_version == 1
    assert json.loads((FIXTURE / "patch" / PATCH_CONFIG_NAME).read_text())["format_version"] == 1


def test_version_1_patch_loads_under_another_task_name():
    backbone = PeterRecModel.from_pretrained(FIXTURE / "backbone")
    model = load_patch(FIXTURE / "patch", backbone, task="sex")
    assert set(backbone.patch_kinds) == {"sex"} and "sex" in backbone.tcl_embeddings
    expected = torch.tensor(json.loads((FIXTURE / "expected_logits.json").read_text()))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=FIXTURE_INPUTS).logits, expected, rtol=0, atol=1e-6)


def test_saved_tensor_names_are_relative_to_the_task(tmp_path):
    folder = trained_patch(tmp_path / "patch")
    names = set(load_file(folder / PATCH_WEIGHTS_NAME))
    assert "peterrec.blocks.0.patches.conv1.down.weight" in names
    assert "peterrec.blocks.0.patches.norm2.weight" in names
    assert not any("gender" in name for name in names)
    config = json.loads((folder / PATCH_CONFIG_NAME).read_text())
    assert config["format_version"] == PATCH_FORMAT_VERSION == 6
    assert config["patch_target"] == "user_encoder" and config["item_patch_type"] is None
    assert config["patch_type"] == "model_patch" and config["places"] == ["conv1", "conv2"]
    assert set(config["trainable_parameters"]) == names


def test_patch_loads_under_another_task_name_with_identical_outputs(tmp_path):
    folder = trained_patch(tmp_path / "patch")
    original = load_patch(folder, pretrained_backbone())
    renamed = load_patch(folder, pretrained_backbone(), task="sex")
    assert renamed.patch_config.task == "sex" and renamed.patch_name == "sex"
    inputs = batch(3)
    with torch.no_grad():
        assert torch.equal(original(**inputs).logits, renamed(**inputs).logits)


def test_two_patches_trained_under_one_name_serve_side_by_side(tmp_path):
    first = trained_patch(tmp_path / "first", seed=1)
    second = trained_patch(tmp_path / "second", seed=2)
    server = MultiTaskPeterRec(pretrained_backbone())
    assert server.load_patch(first) == "gender"
    with pytest.raises(ValueError, match="already loaded"):
        server.load_patch(second)
    assert server.load_patch(second, task="gender_v2") == "gender_v2"
    inputs = batch(5)
    alone = {
        "gender": load_patch(first, pretrained_backbone()),
        "gender_v2": load_patch(second, pretrained_backbone(), task="gender_v2"),
    }
    rows = ["gender", "gender_v2", "gender_v2", "gender", "gender", "gender_v2"]
    mixed = server(inputs["input_ids"], inputs["attention_mask"], task=rows)
    with torch.no_grad():
        for row, task in enumerate(rows):
            expected = alone[task](input_ids=inputs["input_ids"][row : row + 1]).logits[0]
            torch.testing.assert_close(mixed[row], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mixed[0], mixed[1])


def test_flipped_byte_in_the_weights_is_refused(tmp_path):
    folder = trained_patch(tmp_path / "patch")
    data = bytearray((folder / PATCH_WEIGHTS_NAME).read_bytes())
    data[-3] ^= 0x01  # one bit of a weight: the file still parses
    (folder / PATCH_WEIGHTS_NAME).write_bytes(bytes(data))
    load_file(folder / PATCH_WEIGHTS_NAME)
    with pytest.raises(ValueError, match="checksum"):
        load_patch(folder, pretrained_backbone())


def test_non_finite_patch_weights_are_refused(tmp_path):
    folder = trained_patch(tmp_path / "patch")
    tensors = load_file(folder / PATCH_WEIGHTS_NAME)
    tensors["classifier.bias"][0] = float("nan")
    save_file(tensors, folder / PATCH_WEIGHTS_NAME)
    edit_config(folder, weights_sha256=None)
    backbone = pretrained_backbone()
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_patch(folder, backbone)
    assert backbone.patch_kinds == {}


def test_unknown_config_keys_are_ignored_with_a_warning(tmp_path, caplog):
    folder = trained_patch(tmp_path / "patch")
    edit_config(folder, added_by_a_newer_writer=True)
    with caplog.at_level(logging.WARNING, logger="modeling_peterrec.patch_config"):
        model = load_patch(folder, pretrained_backbone())
    assert model.patch_config.task == "gender"
    assert "added_by_a_newer_writer" in caplog.text


def test_newer_format_version_is_refused(tmp_path):
    folder = trained_patch(tmp_path / "patch")
    edit_config(folder, format_version=PATCH_FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="newer than this version"):
        load_patch(folder, pretrained_backbone())


def test_server_refuses_inputs_without_tcl(tmp_path):
    server = MultiTaskPeterRec(pretrained_backbone())
    server.load_patch(trained_patch(tmp_path / "patch"))
    inputs = batch(1)
    no_tcl = inputs["input_ids"].clone()
    no_tcl[:, -1] = 5
    with pytest.raises(ValueError, match=r"\[TCL\]"):
        server(no_tcl)
    with pytest.raises(ValueError, match=r"\[TCL\]"):
        server(no_tcl, task=["gender"] * no_tcl.shape[0])


def test_fine_tuning_length_is_recorded_and_checked(tmp_path):
    folder = trained_patch(tmp_path / "patch")
    assert (
        load_patch(folder, pretrained_backbone()).patch_config.max_length is None
    )  # unrecorded: tokenizer's
    edit_config(folder, max_length=400)
    assert load_patch(folder, pretrained_backbone()).patch_config.max_length == 400
    for wrong in (1, "400", 12.5):
        edit_config(folder, max_length=wrong)
        with pytest.raises(ValueError, match="max_length must be an integer of at least 2"):
            load_patch(folder, pretrained_backbone())
