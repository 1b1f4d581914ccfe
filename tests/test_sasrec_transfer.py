"""SASRec as a backbone for the downstream tasks: the user vector, the transfer methods that apply to it, its patches
after each sub-layer of every block (Houlsby's placement), the one patch format (save, fingerprint, load), serving
several tasks on one backbone, and `peterrec pretrain --model_type sasrec` then `finetune` and `evaluate`."""

from __future__ import annotations

import pytest
import torch

from modeling_peterrec import (
    INSERTIONS,
    METHODS,
    MODEL_TYPES,
    MultiTaskPeterRec,
    SASRecConfig,
    SASRecForItemRanking,
    SASRecForNextItemPrediction,
    SASRecForSequenceClassification,
    SASRecModel,
    load_patch,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.cli import main
from modeling_peterrec.training import load_backbone
from tests.test_cmnrec_transfer import (
    VOCAB,
    batch,
    check_fingerprint,
    check_save_load,
    classification,
    finetune_and_evaluate,
    train_steps,
)
from tests.test_training import QUICK_TRAINING, synthetic_tasks

APPLICABLE = MODEL_TYPES["sasrec"].methods
PATCHING = [name for name in APPLICABLE if METHODS[name].adds_patches]
SUBLAYERS = ("attention", "feed_forward")


def pretrained(seed: int = 0) -> SASRecForNextItemPrediction:
    torch.manual_seed(seed)
    config = SASRecConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    return SASRecForNextItemPrediction(config).eval()


def test_sasrec_record_names_its_heads_insertion_and_methods():
    record = MODEL_TYPES["sasrec"]
    assert record.default_insertion == "sublayers"
    assert INSERTIONS["sublayers"].model_type == "sasrec"
    assert INSERTIONS["sublayers"].slots == SUBLAYERS
    assert "fine_last1" not in record.methods and {"peterrec", "fine_all", "fine_cls"} <= set(record.methods)


def test_user_vector_is_the_last_position_and_ignores_left_padding():
    backbone = pretrained()
    model, _ = classification(backbone, "peterrec")
    with torch.no_grad():  # a patch that is not the identity, so that it is on the path being tested
        for block in model.sasrec.blocks:
            for slot in SUBLAYERS:
                block.patches["gender"][slot].up.weight.normal_()
    ids = batch()["input_ids"][2:3]
    users = model.user_vectors(ids)
    torch.testing.assert_close(
        users, backbone.sasrec(ids, patch="gender").last_hidden_state[:, -1], rtol=0, atol=0
    )
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    torch.testing.assert_close(model.user_vectors(padded), users, rtol=0, atol=1e-6)
    # In a batch with a longer user, too.
    longer = torch.randint(4, VOCAB, (1, ids.shape[1] + 5))
    torch.testing.assert_close(model.user_vectors(torch.cat([padded, longer]))[:1], users, rtol=0, atol=1e-6)


@pytest.mark.parametrize("insertion", [None, "sublayers"])
def test_patches_start_as_the_identity(insertion):
    backbone = pretrained()
    data = batch()
    expected = backbone.sasrec(data["input_ids"], data["attention_mask"]).last_hidden_state
    model, _ = classification(backbone, insertion=insertion)
    for block in model.sasrec.blocks:
        for slot in SUBLAYERS:
            assert not block.patches["gender"][slot].up.weight.any()
    patched = model.sasrec(data["input_ids"], data["attention_mask"], patch="gender").last_hidden_state
    torch.testing.assert_close(patched, expected, rtol=0, atol=0)
    # With a non-zero up-projection every patch changes the outputs: each sits on the path.
    for block in model.sasrec.blocks:
        for slot in SUBLAYERS:
            with torch.no_grad():
                block.patches["gender"][slot].up.bias.fill_(0.3)
            changed = model.sasrec(
                data["input_ids"], data["attention_mask"], patch="gender"
            ).last_hidden_state
            assert not torch.allclose(changed, expected)
            with torch.no_grad():
                block.patches["gender"][slot].up.bias.zero_()


def expected_trainable(model, method: str) -> set[str]:
    names = {name for name, _ in model.named_parameters()}
    head = {name for name in names if not name.startswith("sasrec.")}
    if METHODS[method].adds_patches:
        return head | {name for name in names if ".patches.gender." in name}
    if method == "fine_cls":
        return head
    return {name for name in names if ".patches." not in name}


@pytest.mark.parametrize("method", APPLICABLE)
def test_exact_trainable_parameters_and_frozen_backbone_bit_identical(method):
    backbone = pretrained()
    before = {name: tensor.clone() for name, tensor in backbone.sasrec.state_dict().items()}
    model, report = classification(backbone, method)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(model, method)
    if METHODS[method].adds_patches:
        places = {tuple(name.split(".")[2:6:3]) for name in trainable if ".patches." in name}
        assert places == {(block, slot) for block in ("0", "1") for slot in SUBLAYERS}
    assert report.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, initial[name])}
    assert changed == trainable
    after = backbone.sasrec.state_dict()
    unchanged = all(torch.equal(after[name], before[name]) for name in before)
    assert unchanged == (method != "fine_all")
    assert (model.sasrec is backbone.sasrec) != METHODS[method].random_backbone


@pytest.mark.parametrize("method", APPLICABLE)
def test_save_load_gives_identical_outputs(method, tmp_path):
    check_save_load(pretrained, method, tmp_path, SASRecForSequenceClassification)


def test_patch_is_fingerprint_checked(tmp_path):
    check_fingerprint(pretrained, tmp_path)


def test_ranking_head_on_sasrec(tmp_path):
    model, _ = prepare_for_transfer(
        pretrained(),
        method="peterrec",
        task="coldrec",
        head="ranking",
        num_target_items=7,
        head_terms="wide_deep",
    )
    assert isinstance(model, SASRecForItemRanking)
    data = batch()
    candidates = torch.randint(0, 7, (6, 4))
    loss = model(data["input_ids"], labels=torch.randint(0, 7, (6,)), candidate_ids=candidates).loss
    loss.backward()
    assert model.sasrec.blocks[0].patches["coldrec"]["attention"].up.weight.grad is not None
    assert model.wide.weight.grad is not None
    scores = model.score(data["input_ids"], candidates=candidates)
    save_patch(model, tmp_path / "patch")
    loaded = load_patch(tmp_path / "patch", pretrained())
    torch.testing.assert_close(loaded.score(data["input_ids"], candidates=candidates), scores, rtol=0, atol=0)


def test_tasks_share_one_backbone_and_a_server_answers_mixed_batches(tmp_path):
    backbone = pretrained()
    for task, method in (("gender", "peterrec"), ("age", "fine_cls")):
        model, _ = classification(backbone, method, task=task)
        train_steps(model, steps=1)
        save_patch(model, tmp_path / task)
    server = MultiTaskPeterRec(pretrained())
    for task in ("gender", "age"):
        server.load_patch(tmp_path / task)
    assert set(server.backbone.patch_kinds) == {"gender"}
    data = batch(3)
    rows = ["gender", "age", "age", "gender", "gender", "age"]
    mixed = server(data["input_ids"], data["attention_mask"], task=rows)
    for row, task in enumerate(rows):
        alone = server(data["input_ids"][row : row + 1], data["attention_mask"][row : row + 1], task=task)
        torch.testing.assert_close(mixed[row], alone[0], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one task's patch per call"):
        server.backbone(data["input_ids"], patch=["gender"] * 6)


@pytest.mark.parametrize("method", ["fine_last1", "fine_last2"])
def test_methods_without_a_counterpart_name_method_and_model_type(method):
    with pytest.raises(ValueError, match=f"{method}.*sasrec"):
        classification(pretrained(), method)


def test_other_insertions_and_options_are_rejected_on_sasrec():
    with pytest.raises(ValueError, match="serial_two.*sasrec"):
        classification(pretrained(), insertion="serial_two")
    with pytest.raises(ValueError, match="train_layer_norms"):
        classification(pretrained(), train_layer_norms=["norm2"])


@pytest.mark.parametrize(
    "field, value",
    [("head_terms", "both"), ("ranking_loss", "hinge"), ("patch_activation", "tanh"), ("num_negatives", 0)],
)
def test_task_fields_are_checked(field, value):
    with pytest.raises(ValueError, match=rf"SASRecConfig\.{field}"):
        SASRecConfig(vocab_size=VOCAB, hidden_size=8, **{field: value})


def test_backbone_of_a_bare_user_model():
    backbone = pretrained().sasrec
    assert isinstance(backbone, SASRecModel)
    model, _ = classification(backbone, "fine_cls")
    assert model.sasrec is backbone


@pytest.mark.slow
def test_command_line_pretrains_finetunes_and_evaluates_sasrec(tmp_path):
    """`pretrain --model_type sasrec` writes a SASRec backbone folder whose card offers a patch; `finetune` trains a
    SASRec patch on it (the model type's default insertion) and `evaluate` reproduces its test accuracy."""
    data = synthetic_tasks(tmp_path / "data", num_users=40)
    quick = ["--max_length", "12", "--num_train_epochs", "1", *QUICK_TRAINING]
    main(
        ["pretrain", "--data_dir", data["pretrain"], "--model_type", "sasrec", "--hidden_size", "16"]
        + ["--config_overrides", "num_hidden_layers=1,num_attention_heads=1"]
        + ["--output_dir", str(tmp_path / "pre"), *quick]
    )
    backbone_dir = tmp_path / "pre" / "backbone"
    backbone, _ = load_backbone(backbone_dir)
    assert isinstance(backbone, SASRecForNextItemPrediction)
    assert (backbone.config.num_hidden_layers, backbone.config.num_attention_heads) == (1, 1)
    card = (backbone_dir / "README.md").read_text()
    assert "SASRec" in card and "SASRecModel.from_pretrained" in card and "train a model patch" in card
    patch = finetune_and_evaluate(backbone_dir, data["classification"], tmp_path, quick)
    assert isinstance(patch, SASRecForSequenceClassification)
    assert patch.patch_config.insertion == "sublayers"
