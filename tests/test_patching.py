"""Parameter-efficient transfer: methods freeze exactly what they declare, patch files round-trip, many tasks share
one backbone."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from modeling_peterrec import (
    METHODS,
    MultiTaskPeterRec,
    PeterRecConfig,
    PeterRecForNextItemPrediction,
    PeterRecModel,
    load_patch,
    prepare_for_transfer,
    push_patch_to_hub,
    save_patch,
)
from modeling_peterrec.patch_config import PATCH_WEIGHTS_NAME, task_name
from modeling_peterrec.transfer import backbone_fingerprint

VOCAB = 30
LABELS = ["F", "M", "X"]


def pretrained_backbone(seed: int = 0) -> PeterRecModel:
    torch.manual_seed(seed)
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2, 1, 2], patch_bottleneck_size=4)
    return PeterRecForNextItemPrediction(config).peterrec


def batch(seed: int = 0, size: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (size, 9), generator=generator)
    ids[:, -1] = 3  # [TCL] appended (causal readout)
    ids[0, :3] = 0
    labels = torch.randint(0, 3, (size,), generator=generator)
    return {"input_ids": ids, "attention_mask": ids.ne(0).long(), "labels": labels}


def classification(backbone, method="peterrec", task="gender", **kwargs):
    return prepare_for_transfer(backbone, method, task, "classification", label_names=LABELS, **kwargs)


def train_steps(model, steps: int = 4) -> None:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        model(**batch(step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def declared_sets(model) -> set[str]:
    """The declared trainable parameters, by name in the task model (a patch file stores them relative to the
    task)."""
    return {task_name(name, model.patch_config.task) for name in model.patch_config.trainable_parameters}


EXPECTED_TRAINABLE = {
    "peterrec": lambda name: ".patches.gender." in name or name.startswith("classifier."),
    "peter_zero": lambda name: ".patches.gender." in name or name.startswith("classifier."),
    "fine_cls": lambda name: name.startswith("classifier."),
    "fine_last1": lambda name: name.startswith(
        ("peterrec.blocks.1.conv2.", "peterrec.blocks.1.norm2.", "classifier.")
    ),
    "fine_last2": lambda name: (
        name.startswith(("peterrec.blocks.1.", "classifier.")) and ".patches." not in name
    ),
    "fine_all": lambda name: ".patches." not in name,
    "fine_zero": lambda name: ".patches." not in name,
}


@pytest.mark.parametrize("method", list(METHODS))
def test_training_changes_exactly_the_declared_parameters(method):
    backbone = pretrained_backbone()
    model, report = classification(backbone, method)
    declared = declared_sets(model)
    names = dict(model.named_parameters())
    assert declared == {name for name in names if EXPECTED_TRAINABLE[method](name)}
    before = {name: p.detach().clone() for name, p in names.items()}
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == declared
    assert report.trainable_parameters == sum(names[n].numel() for n in declared)


def test_peterrec_leaves_every_pretrained_weight_bit_identical():
    backbone = pretrained_backbone()
    pretrained = {name: t.clone() for name, t in backbone.state_dict().items()}
    model, _ = classification(backbone, "peterrec", train_layer_norms=["norm2"], train_tcl_embedding=True)
    train_steps(model)
    state = backbone.state_dict()
    for name, tensor in pretrained.items():
        assert torch.equal(state[name], tensor), name
    assert not torch.equal(state["blocks.0.patches.gender.norm2.weight"], pretrained["blocks.0.norm2.weight"])
    assert not torch.equal(state["tcl_embeddings.gender"], pretrained["embed_items.weight"][3])


def test_trainable_share_is_reported_per_method():
    shares = {}
    for method in METHODS:
        _, report = classification(pretrained_backbone(), method)
        shares[method] = report.trainable_share
    assert (
        shares["fine_cls"]
        < shares["peterrec"]
        < shares["fine_last1"]
        < shares["fine_last2"]
        < shares["fine_all"]
    )
    assert shares["fine_all"] == 1.0


def test_serial_patch_starts_as_identity_in_the_task_model():
    backbone = pretrained_backbone()
    reference, _ = classification(backbone, "fine_cls", task="plain")
    model, _ = classification(backbone, "peterrec", insertion="serial_two")
    inputs = batch()
    with torch.no_grad():
        plain = backbone(inputs["input_ids"], patch=None).last_hidden_state
        patched = backbone(inputs["input_ids"], patch="gender").last_hidden_state
    assert torch.equal(plain, patched)
    assert reference.patch_name is None


@pytest.mark.parametrize("method", ["peterrec", "fine_last1", "peter_zero"])
def test_patch_save_load_gives_identical_outputs(method, tmp_path):
    backbone = pretrained_backbone()
    model, report = classification(backbone, method, insertion="parallel_before_ln")
    train_steps(model)
    save_patch(model, tmp_path / "patch", metrics={"accuracy": 0.5})
    fresh = pretrained_backbone()
    loaded = load_patch(tmp_path / "patch", fresh)
    inputs = batch(7)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    config = json.loads((tmp_path / "patch" / "patch_config.json").read_text())
    assert config["method"] == method and config["task"] == "gender"
    assert (tmp_path / "patch" / "README.md").read_text().count("base_model_relation: adapter") == 1


def test_patch_file_holds_no_backbone_tensor(tmp_path):
    model, report = classification(pretrained_backbone(), "peterrec")
    save_patch(model, tmp_path / "patch")
    with safe_open(tmp_path / "patch" / PATCH_WEIGHTS_NAME, "pt") as handle:
        keys = list(handle.keys())
        sizes = sum(handle.get_tensor(key).numel() for key in keys)
    assert all(".patches." in key or key.startswith("classifier.") for key in keys)
    assert not any("gender" in key for key in keys)  # names relative to the task (format 2)
    assert sizes == report.trainable_parameters


def test_fingerprint_rejects_a_backbone_with_one_changed_weight(tmp_path):
    model, _ = classification(pretrained_backbone(), "peterrec")
    save_patch(model, tmp_path / "patch")
    other = pretrained_backbone()
    with torch.no_grad():
        other.blocks[1].conv1.conv.weight[0, 0, 0] += 1e-3
    assert backbone_fingerprint(other) != backbone_fingerprint(pretrained_backbone())
    with pytest.raises(ValueError, match="fingerprint"):
        load_patch(tmp_path / "patch", other)


def test_damaged_patch_files_are_clear_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    model, _ = classification(pretrained_backbone(), "peterrec")
    folder = save_patch(model, tmp_path / "patch")
    weights = folder / PATCH_WEIGHTS_NAME
    original = load_file(weights)
    backbone = pretrained_backbone()

    def rewrite(tensors=None, data=None):
        """Replaces the weights file and records its checksum, as a writer of a bad file would."""
        if tensors is not None:
            save_file(tensors, weights)
        else:
            weights.write_bytes(data)
        config = json.loads((folder / "patch_config.json").read_text())
        config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (folder / "patch_config.json").write_text(json.dumps(config))

    rewrite({k: v for k, v in original.items() if not k.startswith("classifier.")})
    with pytest.raises(ValueError, match="missing"):
        load_patch(folder, backbone)
    rewrite({**original, "peterrec.embed_items.weight": torch.zeros(VOCAB, 16)})
    with pytest.raises(ValueError, match="extra"):
        load_patch(folder, backbone)
    rewrite({**original, "classifier.bias": torch.zeros(5)})
    with pytest.raises(ValueError, match="shape"):
        load_patch(folder, backbone)
    rewrite(original)
    rewrite(data=weights.read_bytes()[:-40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_patch(folder, backbone)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=PATCH_WEIGHTS_NAME):
        load_patch(folder, backbone)
    assert backbone.patch_kinds == {}  # no failed load left a half-attached patch behind


def test_unknown_method_and_insertion_are_rejected():
    with pytest.raises(ValueError, match="Unknown method"):
        classification(pretrained_backbone(), "fine_some")
    with pytest.raises(ValueError, match="insertion"):
        classification(pretrained_backbone(), "peterrec", insertion="diagonal")


def test_save_is_atomic(tmp_path, monkeypatch):
    model, _ = classification(pretrained_backbone(), "peterrec")
    folder = save_patch(model, tmp_path / "patch")
    before = sorted(p.name for p in folder.iterdir())

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("modeling_peterrec.saving.render_patch_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_patch(model, tmp_path / "patch")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["patch"]


def test_patch_round_trip_through_the_local_hub(local_hub):
    pretrained_backbone().push_to_hub("team/backbone")
    backbone = PeterRecModel.from_pretrained("team/backbone")
    model, _ = classification(backbone, "peterrec", insertion="serial_one")
    train_steps(model)
    revision = push_patch_to_hub(model, "team/gender-patch", metrics={"accuracy": 0.7})
    fresh = PeterRecModel.from_pretrained("team/backbone")
    inputs = batch(3)
    model.eval()
    for rev in (None, revision):
        loaded = load_patch("team/gender-patch", fresh, revision=rev)
        assert loaded.patch_config.backbone_repo_id == "team/backbone"
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
        fresh.remove_patch("gender")


def test_push_needs_the_backbone_repo_id(local_hub):
    model, _ = classification(pretrained_backbone(), "peterrec")
    with pytest.raises(ValueError, match="backbone's Hub repo id"):
        push_patch_to_hub(model, "team/gender-patch")


def test_backbone_push_and_pull_through_the_local_hub(local_hub):
    backbone = pretrained_backbone()
    backbone.push_to_hub("team/backbone")
    pulled = PeterRecModel.from_pretrained("team/backbone")
    assert backbone_fingerprint(pulled) == backbone_fingerprint(backbone)


def test_mixed_task_batch_equals_each_task_alone(tmp_path):
    backbone = pretrained_backbone()
    tasks = {
        "gender": dict(head="classification", label_names=LABELS, insertion="serial_two"),
        "age": dict(head="classification", label_names=["a", "b"], insertion="parallel_before_ln"),
        "coldrec": dict(head="ranking", num_target_items=7, insertion="serial_one"),
    }
    for task, kwargs in tasks.items():
        model, _ = prepare_for_transfer(pretrained_backbone(), "peterrec", task, **kwargs)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(std=0.2)
        save_patch(model, tmp_path / task)
    server = MultiTaskPeterRec(backbone)
    for task in tasks:
        server.load_patch(tmp_path / task)
    assert server.active_task == "coldrec"
    ids = batch(5)["input_ids"]
    per_row = ["age", "gender", "coldrec", "gender", "age", "coldrec"]
    mixed = server(ids, task=per_row)
    for row, task in enumerate(per_row):
        alone = server(ids[row : row + 1], task=task)[0]
        torch.testing.assert_close(mixed[row], alone, rtol=1e-6, atol=1e-6)
    server.set_active_task("gender")
    torch.testing.assert_close(server(ids), server(ids, task="gender"))
    assert server(ids).shape == (6, 3)
