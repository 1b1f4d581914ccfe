"""A saved folder loads with trust_remote_code=True where the peterrec package is not importable."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modeling_peterrec import PeterRecConfig, PeterRecForSequenceClassification
from tokenization import ItemTokenizer

OWN_ENTRIES = ("modeling_peterrec", "tokenization", "hub_cards", "peterrec", "__editable__", "_peterrec")

CLEAN_ENVIRONMENT_SCRIPT = r"""
import sys
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

for name in ("modeling_peterrec", "tokenization"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} is importable: the environment is not clean")

folder = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
batch = tokenizer([["a", "b", "c"], ["c", "unseen"]], padding=True, return_tensors="pt")
expected = load_file(sys.argv[2])
assert torch.equal(batch["input_ids"], expected["input_ids"]), batch["input_ids"]
with torch.no_grad():
    logits = model(**batch).logits
assert torch.equal(logits, expected["logits"]), (logits, expected["logits"])
print("remote code ok")
"""


def clean_site_packages(target: Path) -> Path:
    """A directory with links to every installed distribution except this project (however it was installed)."""
    target.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        if entry.name.startswith(OWN_ENTRIES) or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    folder = tmp_path / "model"
    config = PeterRecConfig(
        vocab_size=12, hidden_size=8, dilations=[1, 2], num_labels=2, patch_insertion="serial_two"
    )
    model = PeterRecForSequenceClassification(config).eval()
    tokenizer = ItemTokenizer.from_sequences([["a", "b", "c"], ["c", "d"]])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    batch = tokenizer([["a", "b", "c"], ["c", "unseen"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    save_file({"input_ids": batch["input_ids"], "logits": logits}, tmp_path / "expected.safetensors")

    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    env.update(PYTHONPATH=str(clean_site_packages(tmp_path / "site")), HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            CLEAN_ENVIRONMENT_SCRIPT,
            str(folder),
            str(tmp_path / "expected.safetensors"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote code ok" in result.stdout
