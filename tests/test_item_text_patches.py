"""Patches in the item encoder (Adapter4Rec's `adding_adapter_to`; SPEC §9, §10): PEFT adapters on the tiny BERT that
encodes items from their text, beside or instead of the user encoder's patch; saved as PEFT's files inside the patch
folder, reloaded, served in mixed batches, and run from `peterrec finetune`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from modeling_peterrec import (
    ITEM_PATCH_TYPES,
    MultiTaskPeterRec,
    PeterRecConfig,
    PeterRecModel,
    SASRecConfig,
    SASRecForNextItemPrediction,
    SASRecModel,
    load_patch,
    prepare_for_transfer,
    push_folder_to_hub,
    save_patch,
)
from modeling_peterrec.cli import main
from modeling_peterrec.item_text_patches import ITEM_PATCH_FOLDER
from modeling_peterrec.saving import save_backbone
from modeling_peterrec.small_text_encoder import build_small_text_encoder
from modeling_peterrec.transfer import backbone_fingerprint
from tests.test_item_text import ITEM_TEXTS, TARGET_TEXTS, batch_of, item_tokenizer, text_model
from tests.test_training import QUICK_TRAINING, read_metrics, synthetic_tasks
from tokenization import ItemTokenizer

CLASSIFICATION = dict(task="gender", head="classification", label_names=["f", "m"])
RANKING = dict(
    task="coldrec",
    head="ranking",
    num_target_items=3,
    target_names=list(TARGET_TEXTS),
    target_texts=list(TARGET_TEXTS.values()),
)


def tiny_bert(texts, folder, max_length: int = 16):
    """A tiny BERT (one layer of width 16) with a word-level vocabulary of `texts`, as a Hub-style folder."""
    return build_small_text_encoder(
        texts, folder, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, max_length=max_length
    )


@pytest.fixture(scope="module")
def backbone_folder(tmp_path_factory):
    """A SASRec backbone whose items come from their text, over a tiny BERT."""
    root = tmp_path_factory.mktemp("item_patches")
    text_model(tiny_bert(ITEM_TEXTS.values(), root / "bert"), max_text_length=10).save_pretrained(
        root / "backbone"
    )  # + prompts: 16 positions
    return root / "backbone"


def fresh_backbone(folder) -> SASRecModel:
    return SASRecModel.from_pretrained(folder)


def train_steps(model, batch, labels, steps: int = 3) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval()


def outputs(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def trained_groups(model) -> set[str]:
    """Which parts of a task model train: the item encoder's adapter, the user encoder's patch, the head."""
    groups = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if ".item_text.patches.gender." in name and ".lora_" in name:
            groups.add("item_encoder_lora")
        elif ".blocks." in name and ".patches.gender." in name:
            groups.add("user_encoder_patch")
        elif not name.startswith("sasrec."):
            groups.add("head")
        else:
            groups.add(name)
    return groups


def test_lora_in_the_item_encoder_is_the_identity_at_init_and_leaves_the_backbone_bit_identical(
    backbone_folder,
):
    backbone = fresh_backbone(backbone_folder)
    frozen = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    fingerprint = backbone_fingerprint(backbone)
    model, report = prepare_for_transfer(
        backbone, method="peterrec", patch_target="item_encoder", **CLASSIFICATION
    )
    encoder = model.sasrec.item_text
    tokens = encoder.tokenize(list(ITEM_TEXTS.values()))
    with torch.no_grad():
        plain = encoder.encode_tokens(*tokens)
        torch.testing.assert_close(encoder.encode_tokens(*tokens, "gender"), plain, rtol=0, atol=0)  # B = 0
    lora = {name: p for name, p in model.named_parameters() if ".lora_" in name}
    assert len(lora) == 4  # A and B of query and value, PEFT's default for BERT, in its one layer
    assert all(".attention.self.query." in name or ".attention.self.value." in name for name in lora)
    assert report.trainable_parameters == sum(p.numel() for p in lora.values()) + sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("sasrec.")
    )
    batch = batch_of(item_tokenizer())
    train_steps(model, batch, torch.tensor([0, 1]))
    with torch.no_grad():
        assert not torch.allclose(encoder.encode_tokens(*tokens, "gender"), plain)
        torch.testing.assert_close(encoder.encode_tokens(*tokens), plain, rtol=0, atol=0)
    assert all(lora[name].abs().sum() > 0 for name in lora if ".lora_B." in name)
    # The text model's own modules are not PEFT's: its weights keep their names and every byte.
    state = backbone.state_dict()
    for name, tensor in frozen.items():
        assert torch.equal(state[name], tensor), name
    assert type(encoder.text_model.encoder.layer[0].attention.self.query) is torch.nn.Linear
    assert backbone_fingerprint(backbone) == fingerprint == model.patch_config.backbone_fingerprint
    # The shared weights are in the task model's state dict once, under the text model's names (as tied weights),
    # so a Trainer checkpoint saves and loads it strictly.
    state = model.state_dict()
    assert {name for name in state if ".item_text.patches." in name} == set(lora)
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize(
    ("patch_target", "expected"),
    [
        ("user_encoder", {"user_encoder_patch", "head"}),
        ("item_encoder", {"item_encoder_lora", "head"}),
        ("both", {"user_encoder_patch", "item_encoder_lora", "head"}),
    ],
)
def test_the_patch_target_chooses_exactly_which_parameters_train(backbone_folder, patch_target, expected):
    user_patch = {} if patch_target == "item_encoder" else {"patch_type": "lora"}
    model, _ = prepare_for_transfer(
        fresh_backbone(backbone_folder),
        method="peterrec",
        patch_target=patch_target,
        **user_patch,
        **CLASSIFICATION,
    )
    assert trained_groups(model) == expected
    model.train()(**batch_of(item_tokenizer()), labels=torch.tensor([0, 1])).loss.backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == {
        name for name, p in model.named_parameters() if p.requires_grad
    }
    assert model.patch_config.patch_target == patch_target
    assert model.patch_config.item_patch_type == (None if patch_target == "user_encoder" else "lora")


def test_the_item_encoder_is_refused_on_a_backbone_with_id_items(tmp_path):
    sasrec = SASRecModel(
        SASRecConfig(vocab_size=12, hidden_size=8, num_hidden_layers=1, max_position_embeddings=8)
    )
    peterrec = PeterRecModel(PeterRecConfig(vocab_size=12, hidden_size=8, dilations=[1, 2]))
    for backbone in (sasrec, peterrec):
        with pytest.raises(ValueError, match="item encoder over item texts.*'id'"):
            prepare_for_transfer(backbone, method="peterrec", patch_target="item_encoder", **CLASSIFICATION)


def test_the_item_encoder_target_takes_no_user_encoder_settings(backbone_folder):
    with pytest.raises(ValueError, match="needs a patching method"):
        prepare_for_transfer(
            fresh_backbone(backbone_folder), method="fine_all", patch_target="both", **CLASSIFICATION
        )
    with pytest.raises(ValueError, match="no patch into the user encoder"):
        prepare_for_transfer(
            fresh_backbone(backbone_folder),
            method="peterrec",
            patch_target="item_encoder",
            patch_type="houlsby",
            **CLASSIFICATION,
        )
    with pytest.raises(ValueError, match="no adapter into the item encoder"):
        prepare_for_transfer(
            fresh_backbone(backbone_folder), method="peterrec", item_patch_type="lora", **CLASSIFICATION
        )


@pytest.mark.parametrize(
    ("item_patch_type", "settings", "peft_file"),
    [
        ("lora", {"r": 2, "target_modules": ["query", "key", "value"]}, ".lora_"),
        ("prompt_tuning", None, "prompt_embeddings"),
        ("prefix_tuning", {"num_virtual_tokens": 2}, "prompt_embeddings"),
    ],
)
def test_an_item_encoder_adapter_saves_as_peft_files_in_the_patch_folder_and_reloads(
    backbone_folder, tmp_path, item_patch_type, settings, peft_file
):
    model, _ = prepare_for_transfer(
        fresh_backbone(backbone_folder),
        method="peterrec",
        patch_type="houlsby",
        patch_target="both",
        item_patch_type=item_patch_type,
        item_patch_settings=settings,
        **RANKING,
    )
    batch = batch_of(item_tokenizer())
    train_steps(model, batch, torch.tensor([0, 2]))
    expected = outputs(model, batch)
    save_patch(model, tmp_path / "patch")
    files = sorted(str(path.relative_to(tmp_path / "patch")) for path in (tmp_path / "patch").rglob("*"))
    assert files == [
        "README.md",
        ITEM_PATCH_FOLDER,
        f"{ITEM_PATCH_FOLDER}/adapter_config.json",
        f"{ITEM_PATCH_FOLDER}/adapter_model.safetensors",
        "patch.safetensors",
        "patch_config.json",
    ]
    record = json.loads((tmp_path / "patch" / "patch_config.json").read_text())
    assert (record["format_version"], record["patch_target"], record["item_patch_type"]) == (
        6,
        "both",
        item_patch_type,
    )
    assert "item_patch" not in record  # PEFT's adapter_config.json is its one record
    peft_config = json.loads((tmp_path / "patch" / ITEM_PATCH_FOLDER / "adapter_config.json").read_text())
    assert peft_config["peft_type"] == item_patch_type.upper()
    peft_tensors = load_file(tmp_path / "patch" / ITEM_PATCH_FOLDER / "adapter_model.safetensors")
    assert peft_tensors and all(peft_file in name and ".default." not in name for name in peft_tensors)
    ours = load_file(tmp_path / "patch" / "patch.safetensors")
    assert not any("item_text" in name for name in ours)  # the adapter is in PEFT's file only
    assert any(".patches.attention." in name for name in ours) and "target_embeddings.weight" not in ours
    card = (tmp_path / "patch" / "README.md").read_text()
    assert f"`{ITEM_PATCH_FOLDER}/`" in card and "made with PEFT" in card
    reloaded = load_patch(tmp_path / "patch", fresh_backbone(backbone_folder))
    torch.testing.assert_close(outputs(reloaded, batch), expected, rtol=0, atol=0)
    renamed = load_patch(tmp_path / "patch", fresh_backbone(backbone_folder), task="other")
    torch.testing.assert_close(outputs(renamed, batch), expected, rtol=0, atol=0)


def test_a_damaged_item_encoder_adapter_is_refused_and_leaves_the_backbone_as_it_was(
    backbone_folder, tmp_path
):
    model, _ = prepare_for_transfer(
        fresh_backbone(backbone_folder), method="peterrec", patch_target="item_encoder", **CLASSIFICATION
    )
    save_patch(model, tmp_path / "patch")
    adapter = tmp_path / "patch" / ITEM_PATCH_FOLDER
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_patch(tmp_path / "patch", fresh_backbone(backbone_folder))
    (adapter / "adapter_model.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(ValueError, match="checksum"):
        load_patch(tmp_path / "patch", fresh_backbone(backbone_folder))
    (adapter / "adapter_model.safetensors").write_bytes(weights)
    record = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**record, "r": 4}))  # the weights are rank 8
    backbone = fresh_backbone(backbone_folder)
    with pytest.raises(ValueError, match="misshaped"):
        load_patch(tmp_path / "patch", backbone)
    assert backbone.patched_tasks == set() and len(backbone.item_text.patches) == 0


def test_mixed_batches_serve_tasks_with_different_item_encoder_adapters(backbone_folder, tmp_path):
    """Rows of tasks with an item-encoder LoRA, a prompt in the item encoder plus a user-encoder patch, and a
    user-encoder patch alone: each row equals the row run alone on its own task."""
    batch = batch_of(item_tokenizer())
    setups = {
        "gender": dict(patch_target="item_encoder", **CLASSIFICATION),
        "coldrec": dict(
            patch_target="both", item_patch_type="prompt_tuning", patch_type="houlsby", **RANKING
        ),
        "plain": dict(patch_type="lora", **{**CLASSIFICATION, "task": "plain"}),
    }
    for name, setup in setups.items():
        model, _ = prepare_for_transfer(fresh_backbone(backbone_folder), method="peterrec", **setup)
        train_steps(model, batch, torch.tensor([0, 1]), steps=2)
        save_patch(model, tmp_path / name)
    server = MultiTaskPeterRec(fresh_backbone(backbone_folder))
    for name in setups:
        server.load_patch(tmp_path / name)
    server.load_patch(tmp_path / "gender", task="gender_again")
    tokenizer = item_tokenizer()
    sequences = [
        ["toy", "heat", "jumanji"],
        ["casino", "sabrina"],
        ["jumanji"],
        ["toy", "heat", "jumanji"],
        ["heat"],
    ]
    tasks = ["gender", "coldrec", "plain", "gender_again", "coldrec"]
    mixed = tokenizer(sequences, padding=True, return_tensors="pt")
    rows = server(mixed["input_ids"], mixed["attention_mask"], task=tasks)
    for sequence, task, row in zip(sequences, tasks, rows, strict=True):
        alone = tokenizer([sequence], return_tensors="pt")
        torch.testing.assert_close(
            row, server(alone["input_ids"], alone["attention_mask"], task=task)[0], rtol=0, atol=1e-6
        )
    torch.testing.assert_close(rows[0], rows[3], rtol=0, atol=1e-6)  # one patch under two names
    # The adapters differ: the same user gets other class logits through the plain item encoder.
    first = tokenizer([sequences[0]], return_tensors="pt")
    assert not torch.allclose(
        server(first["input_ids"], task="gender"), server(first["input_ids"], task="plain")
    )


def test_finetune_command_patches_the_item_encoder(tmp_path):
    data = synthetic_tasks(tmp_path / "data", num_users=24)
    tokenizer = ItemTokenizer.from_sequences([[f"i{n}" for n in range(40)]])
    texts = {f"i{n}": f"item {n} | {'Comedy' if n < 20 else 'Drama'}" for n in range(40)}
    encoder = tiny_bert(texts.values(), tmp_path / "bert", max_length=8)
    torch.manual_seed(0)
    model = SASRecForNextItemPrediction.from_item_encoder(
        encoder, tokenizer, texts, hidden_size=8, num_hidden_layers=1, max_position_embeddings=16
    )
    save_backbone(model, tokenizer, tmp_path / "backbone", {}, "synthetic", "built for this test")
    main(
        ["finetune", "--backbone", str(tmp_path / "backbone"), "--data_dir", data["classification"]]
        + ["--task", "gender", "--method", "peterrec", "--patch_target", "item_encoder"]
        + ["--item_patch_settings", '{"r": 2}', "--max_length", "12", "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "gender"), *QUICK_TRAINING]
    )
    summary = read_metrics(tmp_path / "gender")
    assert (summary["patch_target"], summary["item_patch_type"]) == ("item_encoder", "lora")
    patch = tmp_path / "gender" / "patch"
    assert json.loads((patch / ITEM_PATCH_FOLDER / "adapter_config.json").read_text())["r"] == 2
    backbone = SASRecModel.from_pretrained(tmp_path / "backbone")
    reloaded = load_patch(patch, backbone)
    assert reloaded.patch_name == "gender" and "gender" in backbone.item_text.patches
    assert summary["trainable_parameters"] == sum(
        p.numel()
        for name, p in reloaded.named_parameters()
        if ".lora_" in name or not name.startswith("sasrec.")
    )


def test_peft_is_imported_only_for_an_item_encoder_adapter_and_its_absence_names_the_extra(
    backbone_folder, monkeypatch
):
    code = "import sys, modeling_peterrec; assert 'peft' not in sys.modules, 'peft imported with the package'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    monkeypatch.setitem(sys.modules, "peft", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'peterrec\[text\]'"):
        prepare_for_transfer(
            fresh_backbone(backbone_folder), method="peterrec", patch_target="item_encoder", **CLASSIFICATION
        )
    prepare_for_transfer(
        fresh_backbone(backbone_folder), method="peterrec", **CLASSIFICATION
    )  # no PEFT needed


def test_an_item_encoder_patch_goes_to_the_hub_and_loads_by_repo_id(local_hub, backbone_folder, tmp_path):
    model, _ = prepare_for_transfer(
        fresh_backbone(backbone_folder), method="peterrec", patch_target="both", patch_type="lora", **RANKING
    )
    batch = batch_of(item_tokenizer())
    train_steps(model, batch, torch.tensor([0, 2]), steps=2)
    save_patch(model, tmp_path / "coldrec")
    push_folder_to_hub(tmp_path / "coldrec", "team/coldrec", base_model_id="team/text-backbone")
    loaded = load_patch("team/coldrec", fresh_backbone(backbone_folder))
    torch.testing.assert_close(outputs(loaded, batch), outputs(model, batch), rtol=0, atol=0)


@pytest.mark.parametrize("item_patch_type", list(ITEM_PATCH_TYPES))
def test_an_item_encoder_adapter_starts_as_the_identity_exactly_when_its_record_says(
    backbone_folder, item_patch_type
):
    model, _ = prepare_for_transfer(
        fresh_backbone(backbone_folder),
        method="peterrec",
        patch_target="item_encoder",
        item_patch_type=item_patch_type,
        **CLASSIFICATION,
    )
    encoder = model.sasrec.item_text
    tokens = encoder.tokenize(list(ITEM_TEXTS.values()))
    with torch.no_grad():
        same = torch.equal(encoder.encode_tokens(*tokens, "gender"), encoder.encode_tokens(*tokens))
    assert same == ITEM_PATCH_TYPES[item_patch_type].identity_at_init
