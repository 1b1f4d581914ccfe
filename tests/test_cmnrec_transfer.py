"""CmnRec as a backbone for the downstream tasks: the user vector, the transfer methods that apply to it, its patches
on the controller output and the memory read, and the one patch format (save, fingerprint, load)."""

from __future__ import annotations

import json

import pytest
import torch

from modeling_peterrec import (
    METHODS,
    MODEL_TYPES,
    CmnRecConfig,
    CmnRecForItemRanking,
    CmnRecForNextItemPrediction,
    CmnRecForSequenceClassification,
    CmnRecModel,
    load_patch,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.cli import main
from modeling_peterrec.training import PretrainArguments, load_backbone
from modeling_peterrec.transfer import backbone_fingerprint
from tests.test_training import QUICK_TRAINING, synthetic_tasks

VOCAB = 30
APPLICABLE = MODEL_TYPES["cmnrec"].methods


def pretrained(chunking: str = "tsc", seed: int = 0) -> CmnRecForNextItemPrediction:
    torch.manual_seed(seed)
    config = CmnRecConfig(
        vocab_size=VOCAB,
        embedding_size=8,
        controller_size=16,
        memory_slots=3,
        memory_width=6,
        num_read_heads=2,
        attention_size=5,
        hidden_size=10,
        chunking=chunking,
    )
    return CmnRecForNextItemPrediction(config).eval()


def batch(seed: int = 0, size: int = 6, length: int = 9) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (size, length), generator=generator)
    input_ids[0, :4] = 0  # a shorter user, left-padded
    input_ids[1, :2] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": input_ids.ne(0).long(),
        "labels": torch.randint(0, 3, (size,), generator=generator),
    }


def classification(backbone, method: str = "peterrec", task: str = "gender", **kwargs):
    return prepare_for_transfer(
        backbone, method=method, task=task, head="classification", label_names=["a", "b", "c"], **kwargs
    )


def train_steps(model, steps: int = 3) -> None:
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model(**batch(step)).loss.backward()
        optimizer.step()
    model.eval()


def test_user_vector_is_the_last_output_and_ignores_left_padding():
    backbone = pretrained()
    model, _ = classification(backbone, "fine_cls")
    ids = batch()["input_ids"][2:3]
    users = model.user_vectors(ids)
    encoded = backbone.cmnrec(ids)
    torch.testing.assert_close(users, encoded.pooler_output)
    torch.testing.assert_close(users, encoded.last_hidden_state[:, -1])
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    torch.testing.assert_close(model.user_vectors(padded), users, rtol=0, atol=1e-6)


@pytest.mark.parametrize("insertion", [None, "controller_read"])
def test_patches_start_as_the_identity(insertion):
    backbone = pretrained()
    data = batch()
    reference = CmnRecForSequenceClassification(backbone.config)
    reference.cmnrec = backbone.cmnrec
    expected = reference.cmnrec(data["input_ids"], data["attention_mask"]).last_hidden_state
    model, _ = classification(backbone, insertion=insertion)
    patched = model.cmnrec(data["input_ids"], data["attention_mask"], patch="gender").last_hidden_state
    torch.testing.assert_close(patched, expected, rtol=0, atol=0)
    # With a non-zero up-projection the patches change the outputs: they sit on the path.
    for slot in ("controller", "read"):
        with torch.no_grad():
            model.cmnrec.patches["gender"][slot].up.bias.fill_(0.3)
        changed = model.cmnrec(data["input_ids"], data["attention_mask"], patch="gender").last_hidden_state
        assert not torch.allclose(changed, expected)
        with torch.no_grad():
            model.cmnrec.patches["gender"][slot].up.bias.zero_()


def expected_trainable(model, method: str) -> set[str]:
    names = {name for name, _ in model.named_parameters()}
    head = {name for name in names if not name.startswith("cmnrec.")}
    if method in ("peterrec", "peter_zero"):
        return head | {name for name in names if name.startswith("cmnrec.patches.gender.")}
    if method == "fine_cls":
        return head
    return {name for name in names if ".patches." not in name}


@pytest.mark.parametrize("method", APPLICABLE)
def test_exact_trainable_parameters_and_frozen_backbone_bit_identical(method):
    backbone = pretrained()
    before = {name: tensor.clone() for name, tensor in backbone.cmnrec.state_dict().items()}
    model, report = classification(backbone, method)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(model, method)
    if method in ("peterrec", "peter_zero"):
        assert {name.split(".")[3] for name in trainable if ".patches." in name} == {"controller", "read"}
    assert report.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, initial[name])}
    # Every frozen weight stays bit-identical; what trains moves (a few weights deep in the memory get gradients
    # too small at initialisation for Adam to move them in float32, so not all of them).
    assert changed <= trainable
    assert {name for name in trainable if "classifier" in name or ".patches." in name} <= changed
    # The pretrained backbone: bit-identical unless the method trains it in place (fine_all); the random-backbone
    # methods build their own.
    after = backbone.cmnrec.state_dict()
    unchanged = all(torch.equal(after[name], before[name]) for name in before)
    assert unchanged == (method != "fine_all")
    assert (model.cmnrec is backbone.cmnrec) != METHODS[method].random_backbone


@pytest.mark.parametrize("method", APPLICABLE)
def test_save_load_gives_identical_outputs(method, tmp_path):
    check_save_load(pretrained, method, tmp_path, CmnRecForSequenceClassification)


def check_save_load(pretrained, method: str, tmp_path, head_class: type) -> None:
    """A trained patch of `method` on `pretrained()`, saved and loaded on a fresh copy of the pretrained backbone
    (same seed: fine_all trained the one it was given in place), gives the same logits bit for bit."""
    model, _ = classification(pretrained(), method)
    train_steps(model)
    data = batch(7)
    expected = model(data["input_ids"], data["attention_mask"]).logits
    save_patch(model, tmp_path / "patch")
    loaded = load_patch(tmp_path / "patch", pretrained())
    assert isinstance(loaded, head_class)
    torch.testing.assert_close(
        loaded(data["input_ids"], data["attention_mask"]).logits, expected, rtol=0, atol=0
    )


def test_patch_is_fingerprint_checked(tmp_path):
    check_fingerprint(pretrained, tmp_path)


def check_fingerprint(pretrained, tmp_path) -> None:
    """A patch refuses to load on a backbone of other weights (`pretrained(seed=1)`)."""
    model, _ = classification(pretrained())
    save_patch(model, tmp_path / "patch")
    other = pretrained(seed=1)
    assert backbone_fingerprint(other.base_model) != backbone_fingerprint(pretrained().base_model)
    with pytest.raises(ValueError, match="fingerprint"):
        load_patch(tmp_path / "patch", other)


def test_ranking_head_on_cmnrec(tmp_path):
    backbone = pretrained()
    model, _ = prepare_for_transfer(
        backbone, method="peterrec", task="coldrec", head="ranking", num_target_items=7
    )
    assert isinstance(model, CmnRecForItemRanking)
    data = batch()
    candidates = torch.randint(0, 7, (6, 4))
    loss = model(data["input_ids"], labels=torch.randint(0, 7, (6,)), candidate_ids=candidates).loss
    loss.backward()
    assert model.cmnrec.patches["coldrec"]["read"].up.weight.grad is not None
    scores = model.score(data["input_ids"], candidates=candidates)
    save_patch(model, tmp_path / "patch")
    loaded = load_patch(tmp_path / "patch", pretrained())
    torch.testing.assert_close(loaded.score(data["input_ids"], candidates=candidates), scores, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["fine_last1", "fine_last2"])
def test_methods_without_a_counterpart_name_method_and_model_type(method):
    with pytest.raises(ValueError, match=f"{method}.*cmnrec"):
        classification(pretrained(), method)


def test_peterrec_insertions_and_options_are_rejected_on_cmnrec():
    with pytest.raises(ValueError, match="serial_two.*cmnrec"):
        classification(pretrained(), insertion="serial_two")
    with pytest.raises(ValueError, match="train_layer_norms"):
        classification(pretrained(), train_layer_norms=["norm2"])


def test_backbone_of_a_bare_user_model():
    backbone = pretrained().cmnrec
    assert isinstance(backbone, CmnRecModel)
    model, _ = classification(backbone, "fine_cls")
    assert model.cmnrec is backbone


def test_command_line_pretrains_and_finetunes_cmnrec(tmp_path):
    """`pretrain --model_type cmnrec` runs the family's pipeline and writes a CmnRec backbone folder with its card;
    `finetune` and `evaluate` read the folder's model type and train and reproduce a CmnRec patch."""
    data = synthetic_tasks(tmp_path / "data", num_users=40)
    quick = ["--max_length", "12", "--num_train_epochs", "1", *QUICK_TRAINING]
    main(
        ["pretrain", "--data_dir", data["pretrain"], "--model_type", "cmnrec", "--hidden_size", "16"]
        + [
            "--memory_slots",
            "3",
            "--chunking",
            "pec",
            "--controller",
            "gru",
            "--output_dir",
            str(tmp_path / "pre"),
        ]
        + quick
    )
    backbone_dir = tmp_path / "pre" / "backbone"
    summary = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert summary["model_type"] == "cmnrec"
    assert summary["config"]["chunking"] == "pec"
    backbone, _ = load_backbone(backbone_dir)
    assert isinstance(backbone, CmnRecForNextItemPrediction)
    assert (backbone.config.controller, backbone.config.memory_slots, backbone.config.controller_size) == (
        "gru",
        3,
        16,
    )
    card = (backbone_dir / "README.md").read_text()
    assert "CmnRec" in card and "3 slots of width 16" in card and "CmnRecModel.from_pretrained" in card
    patch = finetune_and_evaluate(backbone_dir, data["classification"], tmp_path, quick)
    assert isinstance(patch, CmnRecForSequenceClassification)
    assert patch.patch_config.insertion == "controller_read"


def finetune_and_evaluate(backbone_dir, data_dir: str, tmp_path, quick: list[str]):
    """`finetune` a gender patch on a backbone folder, then `evaluate` it: the same test accuracy; returns the
    patch's task model."""
    main(
        ["finetune", "--backbone", str(backbone_dir), "--data_dir", data_dir, "--task", "gender"]
        + ["--output_dir", str(tmp_path / "ft"), *quick]
    )
    patch = load_patch(tmp_path / "ft" / "patch", load_backbone(backbone_dir)[0])
    main(
        ["evaluate", "--backbone", str(backbone_dir), "--patch", str(tmp_path / "ft" / "patch")]
        + ["--data_dir", data_dir, "--max_length", "12", "--output_dir", str(tmp_path / "ev")]
    )
    reproduced = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    tested = json.loads((tmp_path / "ft" / "metrics.json").read_text())["test"]
    assert reproduced["accuracy"] == pytest.approx(tested["accuracy"])
    return patch


def test_masked_pretraining_is_refused_for_cmnrec():
    with pytest.raises(ValueError, match="masked.*cmnrec"):
        PretrainArguments(model_type="cmnrec", objective="masked")
