"""Saved folders load with trust_remote_code=True where the peterrec package is not importable (SPEC §4).

Every Auto class is tried on every folder kind the project writes: a backbone folder (`save_backbone`) from each
pretraining objective, and a patch folder with its backbone. Each folder kind runs in one `python -S` subprocess
whose `sys.path` holds the installed distributions but not this project; outputs must equal the in-process ones
bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from modeling_peterrec import (
    PeterRecConfig,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecForSequenceClassification,
    PeterRecModel,
    load_patch,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.saving import save_backbone
from tokenization import ItemTokenizer

OWN_ENTRIES = ("modeling_peterrec", "tokenization", "hub_cards", "peterrec", "__editable__", "_peterrec")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = [["a", "b", "c"], ["c", "d"], ["b", "e", "a"]]
BATCH = [["a", "b", "c"], ["c", "unseen"]]
HEAD_SEED = 1234
BACKBONE_AUTO_CLASSES = {
    True: ["AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"],
    False: ["AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"],
}
IN_PROCESS_CLASSES = {
    "AutoModel": PeterRecModel,
    "AutoModelForCausalLM": PeterRecForNextItemPrediction,
    "AutoModelForMaskedLM": PeterRecForMaskedItemPrediction,
    "AutoModelForSequenceClassification": PeterRecForSequenceClassification,
}

# Shared by both scripts: the checks of AutoConfig and AutoTokenizer, and each Auto model's output.
_PRELUDE = r"""
import json
import sys

import torch
import transformers
from safetensors.torch import load_file

folder, expected_path, classes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
expected = load_file(expected_path)
setting = json.loads(sys.argv[4])


def remote(obj):
    module = type(obj).__module__
    assert module.startswith("transformers_modules"), f"{type(obj).__name__} comes from {module}, not the folder"
    return obj


def output(model, batch):
    with torch.no_grad():
        result = model(**batch)
    return result.last_hidden_state if "last_hidden_state" in result else result.logits


config = remote(transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True))
seen = {key: getattr(config, key) for key in setting["config"]}
assert seen == setting["config"], (seen, setting["config"])
tokenizer = remote(transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True))
batch = tokenizer(setting["batch"], padding=True, return_tensors="pt")
assert torch.equal(batch["input_ids"], expected["input_ids"]), batch["input_ids"]
"""

BACKBONE_SCRIPT = (
    _PRELUDE
    + r"""
for name in ("modeling_peterrec", "tokenization"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} is importable: the environment is not clean")

for name in classes:
    torch.manual_seed(setting["seed"])
    model = remote(getattr(transformers, name).from_pretrained(folder, trust_remote_code=True)).eval()
    got = output(model, batch)
    assert torch.equal(got, expected[name]), (name, got, expected[name])
    print("remote code ok:", name)
"""
)

# The patch's backbone comes from the folder's code; only `load_patch` comes from the project, imported after.
PATCH_SCRIPT = (
    _PRELUDE
    + r"""
backbones = {
    name: remote(getattr(transformers, name).from_pretrained(folder, trust_remote_code=True)).eval()
    for name in classes
}
sys.path.insert(0, sys.argv[6])
from modeling_peterrec import load_patch

for name, backbone in backbones.items():
    model = load_patch(sys.argv[5], backbone)
    got = output(model, batch)
    assert torch.equal(got, expected["patch"]), (name, got, expected["patch"])
    print("remote code ok:", name)
"""
)


def clean_site_packages(target: Path) -> Path:
    """A directory with links to every installed distribution except this project (however it was installed)."""
    target.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        if entry.name.startswith(OWN_ENTRIES) or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)
    return target


def run_clean(tmp_path: Path, script: str, *args: str) -> str:
    """Runs `script` in a `python -S` subprocess that sees the installed distributions but not this project, with
    a fresh HF_HOME; returns its stdout after checking that it succeeded."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    env.update(PYTHONPATH=str(clean_site_packages(tmp_path / "site")), HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_classifier_folder_loads_remotely(
    tmp_path: Path, model: torch.nn.Module, backbone_class: type, config_fields: tuple[str, ...]
) -> None:
    """Saves a sequence classifier of one model type with its tokenizer, and checks in a clean environment that
    `AutoModel` (the backbone) and `AutoModelForSequenceClassification` load it through `trust_remote_code` alone
    and give this package's outputs; `config_fields` are checked too."""
    folder = tmp_path / "model"
    model.eval()
    tokenizer = ItemTokenizer.from_sequences([["a", "b", "c"], ["c", "d"]])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model_type = model.config.model_type
    assert (folder / f"modeling_{model_type}.py").exists() and (
        folder / f"configuration_{model_type}.py"
    ).exists()
    batch = tokenizer(BATCH, padding=True, return_tensors="pt")
    classes = ["AutoModel", "AutoModelForSequenceClassification"]
    expected = {"input_ids": batch["input_ids"], "AutoModelForSequenceClassification": output(model, batch)}
    torch.manual_seed(HEAD_SEED)
    expected["AutoModel"] = output(backbone_class.from_pretrained(folder).eval(), batch)
    save_file(expected, tmp_path / "expected.safetensors")
    fields = {key: getattr(model.config, key) for key in config_fields}
    stdout = run_clean(
        tmp_path,
        BACKBONE_SCRIPT,
        str(folder),
        str(tmp_path / "expected.safetensors"),
        ",".join(classes),
        json.dumps({"config": fields, "batch": BATCH, "seed": HEAD_SEED}),
    )
    assert stdout.count("remote code ok") == len(classes)


def tiny_backbone_folder(folder: Path, is_causal: bool) -> tuple[Path, ItemTokenizer]:
    """A backbone folder as pretraining writes it, from a tiny model of either objective."""
    tokenizer = ItemTokenizer.from_sequences(SEQUENCES)
    config = PeterRecConfig(
        vocab_size=len(tokenizer), hidden_size=8, dilations=[1, 2, 1, 2], is_causal=is_causal
    )
    model_class = PeterRecForNextItemPrediction if is_causal else PeterRecForMaskedItemPrediction
    torch.manual_seed(0)
    model = model_class(config).eval()
    save_backbone(model, tokenizer, folder, {"mrr@5": 0.5}, dataset="tiny", training_summary="1 step")
    return folder, tokenizer


def output(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        result = model(**batch)
    return result.last_hidden_state if "last_hidden_state" in result else result.logits


def setting(folder: Path) -> str:
    """What the scripts check against: the folder's configuration fields, the batch and the heads' seed."""
    config = AutoConfig.from_pretrained(folder)
    fields = {key: getattr(config, key) for key in ("vocab_size", "hidden_size", "dilations", "is_causal")}
    return json.dumps({"config": fields, "batch": BATCH, "seed": HEAD_SEED})


@pytest.mark.slow
@pytest.mark.parametrize("is_causal", [True, False], ids=["causal", "masked"])
def test_backbone_folder_loads_by_every_auto_class_without_the_package(tmp_path, is_causal):
    folder, tokenizer = tiny_backbone_folder(tmp_path / "backbone", is_causal)
    classes = BACKBONE_AUTO_CLASSES[is_causal]
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", *classes} <= set(auto_map)
    batch = tokenizer(BATCH, padding=True, return_tensors="pt")
    expected = {"input_ids": batch["input_ids"]}
    for name in classes:
        torch.manual_seed(HEAD_SEED)
        expected[name] = output(IN_PROCESS_CLASSES[name].from_pretrained(folder).eval(), batch)
    save_file(expected, tmp_path / "expected.safetensors")

    stdout = run_clean(
        tmp_path,
        BACKBONE_SCRIPT,
        str(folder),
        str(tmp_path / "expected.safetensors"),
        ",".join(classes),
        setting(folder),
    )
    assert stdout.count("remote code ok") == len(classes)


@pytest.mark.slow
def test_patch_folder_loads_on_a_backbone_from_every_auto_class(tmp_path):
    folder, tokenizer = tiny_backbone_folder(tmp_path / "backbone", is_causal=True)
    model, _ = prepare_for_transfer(
        PeterRecModel.from_pretrained(folder),
        method="peterrec",
        task="gender",
        head="classification",
        label_names=["f", "m"],
        insertion="serial_two",
        bottleneck_size=4,
    )
    with torch.no_grad():  # the patches start as the identity: make them matter
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    save_patch(model, tmp_path / "patch")
    batch = tokenizer(BATCH, padding=True, return_tensors="pt")
    reloaded = load_patch(tmp_path / "patch", PeterRecModel.from_pretrained(folder))
    expected = {"input_ids": batch["input_ids"], "patch": output(reloaded, batch)}
    assert torch.equal(expected["patch"], output(model.eval(), batch))
    save_file(expected, tmp_path / "expected.safetensors")

    classes = BACKBONE_AUTO_CLASSES[True]
    stdout = run_clean(
        tmp_path,
        PATCH_SCRIPT,
        str(folder),
        str(tmp_path / "expected.safetensors"),
        ",".join(classes),
        setting(folder),
        str(tmp_path / "patch"),
        str(PROJECT_ROOT),
    )
    assert stdout.count("remote code ok") == len(classes)


@pytest.mark.slow
def test_classification_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    folder = tmp_path / "model"
    config = PeterRecConfig(
        vocab_size=12, hidden_size=8, dilations=[1, 2], num_labels=2, patch_insertion="serial_two"
    )
    model = PeterRecForSequenceClassification(config).eval()
    tokenizer = ItemTokenizer.from_sequences([["a", "b", "c"], ["c", "d"]])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    batch = tokenizer(BATCH, padding=True, return_tensors="pt")
    save_file(
        {"input_ids": batch["input_ids"], "AutoModelForSequenceClassification": output(model, batch)},
        tmp_path / "expected.safetensors",
    )
    stdout = run_clean(
        tmp_path,
        BACKBONE_SCRIPT,
        str(folder),
        str(tmp_path / "expected.safetensors"),
        "AutoModelForSequenceClassification",
        setting(folder),
    )
    assert "remote code ok" in stdout
