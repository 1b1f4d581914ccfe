"""What each patch type costs (Adapter4Rec's comparison, issue of the adapter families): for every model type and
every patch type that fits it (`registry.patch_types_of`), the trainable parameters and their share of the task
model, the size of the saved patch file, and the time of one fine-tuning step (forward, backward, Adam) of
user-profile classification, beside FineCLS (the head alone) and FineAll (everything trains).

The backbones are randomly initialised at the reproduction's `cpu` size (hidden 64 over 200 items, 3,708 items):
PeterRec's 12 dilated conv layers, SASRec's 2 blocks of 2 heads, CmnRec's LSTM controller with 4 memory slots.
Weights do not change the cost, so no pretraining is needed. Every task reads users with the attention pooling of
the transfer study (docs/transfer.md).

    python -m benchmarks.patch_types --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from modeling_peterrec import prepare_for_transfer, save_patch
from modeling_peterrec.model_types import backbone_class, config_class
from modeling_peterrec.registry import MODEL_TYPES, patch_types_of

from .common import environment, format_table, time_call, write_results

VOCAB_SIZE, LENGTH, BATCH_SIZE = 3708, 200, 64
LABELS = ["female", "male"]
BACKBONES = {
    "peterrec": {"hidden_size": 64, "dilations": [1, 2, 4, 8] * 3},
    "sasrec": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 201,
    },
    "cmnrec": {"hidden_size": 64, "memory_slots": 4, "chunking": "tsc"},
}
"""The `cpu` sizes of the reproduction for PeterRec; SASRec and CmnRec as in docs/sasrec.md and docs/cmnrec.md."""
COLUMNS = ["model type", "patch", "trainable", "share %", "patch KiB", "step ms", "vs FineAll"]


def make_backbone(model_type: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = config_class(MODEL_TYPES[model_type])(vocab_size=VOCAB_SIZE, **BACKBONES[model_type])
    return backbone_class(MODEL_TYPES[model_type])(config).eval()


def make_batch(config) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, VOCAB_SIZE, (BATCH_SIZE, LENGTH), generator=generator)
    labels = torch.randint(len(LABELS), (BATCH_SIZE,), generator=generator)
    return input_ids, labels


def measure(model_type: str, method: str, patch_type: str | None, repeats: int) -> dict:
    """One task model's counts, patch size and median step time."""
    backbone = make_backbone(model_type)
    options = {"patch_type": patch_type} if patch_type else {}
    model, report = prepare_for_transfer(
        backbone,
        method,
        task="bench",
        head="classification",
        label_names=LABELS,
        readout="attention",
        **options,
    )
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    input_ids, labels = make_batch(backbone.config)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(input_ids, labels=labels).loss.backward()
        optimizer.step()

    seconds = time_call(step, torch.device("cpu"), warmup=1, repeats=repeats)
    with tempfile.TemporaryDirectory() as folder:
        size = (save_patch(model, Path(folder) / "patch") / "patch.safetensors").stat().st_size
    return {
        "model type": model_type,
        "patch": patch_type or method,
        "trainable": report.trainable_parameters,
        "share %": 100 * report.trainable_share,
        "patch KiB": size / 1024,
        "step ms": 1000 * seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-types", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5, help="Timed steps per configuration (median).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for model_type in args.model_types:
        runs = [("fine_cls", None), ("fine_all", None)]
        runs += [("peterrec", name) for name in patch_types_of(model_type)]
        measured = [measure(model_type, method, patch_type, args.repeats) for method, patch_type in runs]
        fine_all = measured[1]["step ms"]
        for row in measured:
            row["vs FineAll"] = row["step ms"] / fine_all
        rows += measured
        print(format_table(measured, COLUMNS), flush=True)
    path = write_results(
        "patch_types",
        torch.device("cpu"),
        {
            "batch_size": BATCH_SIZE,
            "length": LENGTH,
            "vocab_size": VOCAB_SIZE,
            "backbones": BACKBONES,
            "rows": rows,
            "environment": environment(torch.device("cpu")),
        },
    )
    print(f"\n{format_table(rows, COLUMNS)}\n\nwritten to {path}")


if __name__ == "__main__":
    main()
