"""Saved folders go to the Hub as written, over real HTTP to the local Hub (SPEC §4, §6).

A patch folder written by fine-tuning on a local backbone names it by path; the Hub refuses such a card, so pushing
names the backbone's repo id instead, and the patch then loads by repo id with the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, hf_hub_download, model_info, snapshot_download, upload_folder
from huggingface_hub.errors import HfHubHTTPError

from modeling_peterrec import (
    PeterRecConfig,
    PeterRecForNextItemPrediction,
    PeterRecModel,
    load_patch,
    prepare_for_transfer,
    push_folder_to_hub,
    push_patch_to_hub,
    save_patch,
)
from modeling_peterrec.patch_config import PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME
from modeling_peterrec.saving import save_backbone
from tokenization import ItemTokenizer

SEQUENCES = [["a", "b", "c"], ["c", "d"], ["b", "e", "a"]]
METRICS = {"accuracy": 0.75, "macro_f1": 0.5}


@pytest.fixture
def backbone_folder(tmp_path: Path) -> Path:
    """A backbone folder as pretraining writes it."""
    tokenizer = ItemTokenizer.from_sequences(SEQUENCES)
    torch.manual_seed(0)
    config = PeterRecConfig(vocab_size=len(tokenizer), hidden_size=8, dilations=[1, 2, 1, 2])
    model = PeterRecForNextItemPrediction(config).eval()
    return save_backbone(model, tokenizer, tmp_path / "backbone", {"mrr@5": 0.5}, "tiny-items", "1 step")


def trained_patch(backbone: PeterRecModel):
    """A classification patch on `backbone` whose weights differ from their initial values."""
    model, _ = prepare_for_transfer(
        backbone, method="peterrec", task="gender", head="classification", label_names=["f", "m"]
    )
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def logits(model, tokenizer_folder: Path | str) -> torch.Tensor:
    tokenizer = ItemTokenizer.from_pretrained(tokenizer_folder)
    batch = tokenizer([["a", "b", "c"], ["e", "unseen"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def local_patch_folder(backbone_folder: Path, tmp_path: Path) -> Path:
    """A patch folder as fine-tuning writes it from a backbone loaded from a local folder."""
    model = trained_patch(PeterRecModel.from_pretrained(backbone_folder))
    return save_patch(model, tmp_path / "gender", metrics=METRICS, dataset="tiny-profiles")


def test_backbone_folder_pushes_as_written_and_loads_by_repo_id(local_hub, backbone_folder):
    push_folder_to_hub(backbone_folder, "team/backbone")
    pulled = Path(snapshot_download("team/backbone"))
    for name in ("model.safetensors", "config.json"):
        assert (pulled / name).read_bytes() == (backbone_folder / name).read_bytes()
    card = ModelCard.load(pulled / "README.md")
    assert card.text.startswith("\n# team/backbone\n")
    assert 'from_pretrained("team/backbone", trust_remote_code=True)' in card.text
    assert card.data.datasets == ["tiny-items"]
    with torch.no_grad():
        inputs = torch.tensor([[1, 2, 3]])
        expected = PeterRecModel.from_pretrained(backbone_folder)(inputs).last_hidden_state
        assert torch.equal(PeterRecModel.from_pretrained("team/backbone")(inputs).last_hidden_state, expected)


def test_hub_refuses_a_patch_card_naming_a_local_backbone(local_hub, local_patch_folder, backbone_folder):
    assert ModelCard.load(local_patch_folder / "README.md").data.base_model == str(backbone_folder)
    # huggingface_hub checks a README with the Hub's validate-yaml before committing (ValueError); the Hub's commit
    # endpoint refuses it too (HTTP 400).
    with pytest.raises((ValueError, HfHubHTTPError), match="base_model"):
        upload_folder(repo_id="team/gender", folder_path=local_patch_folder, repo_type="model")


def test_patch_of_a_local_backbone_needs_base_model_id(local_hub, local_patch_folder):
    with pytest.raises(ValueError, match="--base_model_id"):
        push_folder_to_hub(local_patch_folder, "team/gender")


def test_patch_folder_pushes_with_base_model_id_and_loads_by_repo_id(
    local_hub, local_patch_folder, backbone_folder
):
    push_folder_to_hub(backbone_folder, "team/backbone")
    written = json.loads((local_patch_folder / PATCH_CONFIG_NAME).read_text())
    push_folder_to_hub(local_patch_folder, "team/gender", base_model_id="team/backbone")

    pulled = Path(snapshot_download("team/gender"))
    assert (pulled / PATCH_WEIGHTS_NAME).read_bytes() == (
        local_patch_folder / PATCH_WEIGHTS_NAME
    ).read_bytes()
    record = json.loads((pulled / PATCH_CONFIG_NAME).read_text())
    assert record == {**written, "backbone_repo_id": "team/backbone"}
    assert (
        json.loads((local_patch_folder / PATCH_CONFIG_NAME).read_text()) == written
    )  # the folder stays as is

    card = model_info("team/gender").card_data
    assert card.base_model == "team/backbone"
    assert card.base_model_relation == "adapter"
    assert card.datasets == ["tiny-profiles"]
    assert {result.metric_type: result.metric_value for result in card.eval_results} == METRICS
    text = ModelCard.load(pulled / "README.md").text
    assert str(local_patch_folder.parent) not in text
    assert 'load_patch("team/gender", backbone)' in text

    expected = load_patch(local_patch_folder, PeterRecModel.from_pretrained(backbone_folder))
    loaded = load_patch("team/gender", PeterRecModel.from_pretrained("team/backbone"))
    assert torch.equal(logits(loaded, backbone_folder), logits(expected, backbone_folder))


def test_patch_on_a_hub_backbone_pushes_without_base_model_id_to_a_branch(
    local_hub, backbone_folder, tmp_path
):
    push_folder_to_hub(backbone_folder, "team/backbone")
    model = trained_patch(PeterRecModel.from_pretrained("team/backbone"))
    folder = save_patch(model, tmp_path / "gender", metrics=METRICS)
    push_folder_to_hub(folder, "team/gender", revision="v1")
    card = ModelCard.load(hf_hub_download("team/gender", "README.md", revision="v1"))
    assert card.data.base_model == "team/backbone"
    assert card.data.datasets is None
    loaded = load_patch("team/gender", PeterRecModel.from_pretrained("team/backbone"), revision="v1")
    assert torch.equal(logits(loaded, backbone_folder), logits(model, backbone_folder))


def test_damaged_patch_folder_is_not_pushed(local_hub, local_patch_folder):
    weights = local_patch_folder / PATCH_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="checksum"):
        push_folder_to_hub(local_patch_folder, "team/gender", base_model_id="team/backbone")


def test_push_patch_to_hub_without_dataset_writes_no_datasets(local_hub, backbone_folder):
    push_folder_to_hub(backbone_folder, "team/backbone")
    model = trained_patch(PeterRecModel.from_pretrained("team/backbone"))
    push_patch_to_hub(model, "team/gender", metrics=METRICS)
    readme = Path(hf_hub_download("team/gender", "README.md")).read_text()
    assert "datasets:" not in readme and "custom" not in readme
    card = model_info("team/gender").card_data
    assert card.base_model == "team/backbone"
    assert card.base_model_relation == "adapter"
    loaded = load_patch("team/gender", PeterRecModel.from_pretrained("team/backbone"))
    assert torch.equal(logits(loaded, backbone_folder), logits(model, backbone_folder))


def repo_files(repo_id: str) -> set[str]:
    return {sibling.rfilename for sibling in model_info(repo_id).siblings}


def test_push_command_uploads_a_patch_folder_naming_its_backbone(local_hub, backbone_folder, tmp_path):
    from modeling_peterrec.cli import main

    folder = save_patch(trained_patch(PeterRecModel.from_pretrained(backbone_folder)), tmp_path / "gender")
    main(["push", "--folder", str(folder), "--repo_id", "team/gender", "--base_model_id", "team/backbone"])
    assert {PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME, "README.md"} <= repo_files("team/gender")
    pushed = json.loads(Path(hf_hub_download("team/gender", PATCH_CONFIG_NAME)).read_text())
    assert pushed["backbone_repo_id"] == "team/backbone"


@pytest.mark.slow
def test_finetune_push_to_hub_pushes_the_patch_folder_not_a_full_model(local_hub, tmp_path):
    from modeling_peterrec.cli import main
    from tests.test_training import QUICK_TRAINING, TINY_BACKBONE, synthetic_tasks

    data = synthetic_tasks(tmp_path / "data")
    main(
        ["pretrain", "--data_dir", data["pretrain"], *TINY_BACKBONE, "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "pretrain"), *QUICK_TRAINING]
    )
    main(
        ["finetune", "--backbone", str(tmp_path / "pretrain" / "backbone"), "--max_length", "12"]
        + ["--data_dir", data["classification"], "--task", "gender", "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "gender"), "--push_to_hub", "--hub_model_id", "team/gender"]
        + ["--base_model_id", "team/backbone", *QUICK_TRAINING]
    )
    files = repo_files("team/gender")
    assert {PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME, "README.md"} <= files
    assert not any(
        name.endswith(("model.safetensors", "config.json")) and name != PATCH_CONFIG_NAME for name in files
    )
    card = ModelCard.load("team/gender")
    assert card.data.base_model == "team/backbone"
