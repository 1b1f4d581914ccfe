"""Parameter counts, trainable shares and file sizes at the paper's example scale (SPEC §3 defaults).

Backbone: hidden 256, dilations [1, 2, 4, 8] x 4, kernel 3, 645,980 items (+4 special tokens). Saves the backbone
and two patches (a 2-class profile task and a 350-item cold-start ranking task) to a temporary folder and reports
their sizes on disk, then the trainable share of every fine-tuning method.

    python benchmarks/parameter_counts.py
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

import torch
import transformers

from modeling_peterrec import (
    METHODS,
    PeterRecConfig,
    PeterRecForNextItemPrediction,
    PeterRecModel,
    prepare_for_transfer,
    save_patch,
)

ITEMS = 645_980
RESULTS = Path(__file__).parent / "results" / "parameter_counts.json"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".safetensors")


def main() -> None:
    torch.manual_seed(0)
    config = PeterRecConfig(vocab_size=ITEMS + 4)
    pretraining = PeterRecForNextItemPrediction(config)
    backbone = pretraining.peterrec
    patched = PeterRecModel(PeterRecConfig(vocab_size=ITEMS + 4, patch_insertion="serial_two"))
    block = backbone.blocks[0]
    one_patch = patched.blocks[0].patches["default"]["conv1"]
    results = {
        "config": {"items": ITEMS, "hidden_size": 256, "dilations": config.dilations, "bottleneck": 32},
        "backbone_parameters": count(backbone),
        "pretraining_model_parameters": count(pretraining),
        "backbone_with_serial_two_patches": count(patched),
        "patch_parameters_serial_two": count(patched) - count(backbone),
        "one_conv_layer_parameters": count(block.conv1),
        "one_patch_parameters": count(one_patch),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone.save_pretrained(tmp / "backbone")
        results["backbone_file_bytes"] = folder_size(tmp / "backbone")
        tasks = {
            "genest": dict(head="classification", label_names=["F", "M"]),
            "coldrec": dict(head="ranking", num_target_items=350),
        }
        results["patch_file_bytes"] = {}
        for task, kwargs in tasks.items():
            model, _ = prepare_for_transfer(backbone, "peterrec", task, **kwargs)
            save_patch(model, tmp / task)
            results["patch_file_bytes"][task] = folder_size(tmp / task)
            backbone.remove_patch(task)
    shares = {}
    for method in METHODS:
        model, report = prepare_for_transfer(
            backbone, method, "genest", "classification", label_names=["F", "M"]
        )
        shares[method] = {
            "trainable": report.trainable_parameters,
            "total": report.total_parameters,
            "share": report.trainable_share,
        }
        if METHODS[method].adds_patches and "genest" in backbone.patch_insertions:
            backbone.remove_patch("genest")
    results["methods_genest"] = shares

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"backbone parameters              {results['backbone_parameters']:>14,}")
    print(f"pretraining model (with softmax) {results['pretraining_model_parameters']:>14,}")
    print(f"backbone + serial_two patches    {results['backbone_with_serial_two_patches']:>14,}")
    print(
        f"one conv layer / one patch       {results['one_conv_layer_parameters']:>14,} / "
        f"{results['one_patch_parameters']:,} ({results['one_patch_parameters'] / results['one_conv_layer_parameters']:.1%})"
    )
    print(f"backbone file                    {results['backbone_file_bytes'] / 2**20:>11.1f} MiB")
    for task, size in results["patch_file_bytes"].items():
        print(
            f"patch file ({task:8s})            {size / 2**20:>11.2f} MiB "
            f"({size / results['backbone_file_bytes']:.3%} of the backbone)"
        )
    print("\nmethod       trainable        total      share (GenEst head)")
    for method, row in shares.items():
        print(f"{method:11s} {row['trainable']:>11,} {row['total']:>13,} {row['share']:>9.3%}")


if __name__ == "__main__":
    main()
