"""CmnRec speed: training step and inference time of each chunk rule against the per-step memory network (`none`,
the paper's SRMN) and against PeterRec at a matched parameter budget (CmnRec, Section 5.3, Tables 4-5).

Synthetic ML-1M-sized batches: 3,706 items (plus the four special tokens), batch 64, lengths 50 and 100, memory
slots m in {2, 4, 8}. A training step is forward, full-softmax next-item loss at every position (the family's fused
output layer), backward and an Adam step; inference is the forward pass with the logits of the last position only
(scoring every item for each user). Speed-ups are against `none` at the same length and m.

Sizes: `paper` is the paper's (item embedding 128, controller and slots 256, attention 64, 3 read heads);
`demo` halves them for a shared CPU.

    python -m benchmarks.cmnrec_speed --scale demo --repeats 2 --threads 1
    python -m benchmarks.cmnrec_speed --scale paper --device cuda
"""

from __future__ import annotations

import argparse
import json

import torch

from modeling_peterrec import (
    CmnRecConfig,
    CmnRecForNextItemPrediction,
    PeterRecConfig,
    PeterRecForNextItemPrediction,
)

from .common import RESULTS_DIR, environment, format_table, time_call

ITEMS = 3706
"""Items of ML-1M."""
SPECIAL_TOKENS = 4
SCALES = {
    "paper": {"embedding_size": 128, "controller_size": 256, "memory_width": 256, "attention_size": 64},
    "demo": {"embedding_size": 64, "controller_size": 128, "memory_width": 128, "attention_size": 32},
}
RULES = ("none", "pec", "tsc", "exc")


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def cmnrec_model(scale: str, chunking: str, slots: int) -> CmnRecForNextItemPrediction:
    sizes = SCALES[scale]
    config = CmnRecConfig(
        vocab_size=ITEMS + SPECIAL_TOKENS,
        hidden_size=sizes["controller_size"],
        chunking=chunking,
        memory_slots=slots,
        num_read_heads=3,
        **sizes,
    )
    return CmnRecForNextItemPrediction(config)


def matched_peterrec(budget: int, hidden_size: int) -> PeterRecForNextItemPrediction:
    """PeterRec of the same hidden size with the number of residual blocks (dilations 1, 2, 4, 8, ...) whose total
    parameter count is closest to `budget`."""
    best = None
    for blocks in range(1, 17):
        dilations = [2 ** (layer % 4) for layer in range(2 * blocks)]
        config = PeterRecConfig(
            vocab_size=ITEMS + SPECIAL_TOKENS, hidden_size=hidden_size, dilations=dilations
        )
        model = PeterRecForNextItemPrediction(config)
        if best is None or abs(parameter_count(model) - budget) < abs(parameter_count(best) - budget):
            best = model
    return best


def measure(model: torch.nn.Module, length: int, batch_size: int, device: torch.device, repeats: int) -> dict:
    """Median seconds of one training step and of one inference pass, on fixed random item sequences."""
    model.to(device)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(SPECIAL_TOKENS, ITEMS + SPECIAL_TOKENS, (batch_size, length), generator=generator).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        optimizer.step()

    @torch.no_grad()
    def inference() -> None:
        model.eval()
        model(ids, logits_to_keep=1)

    return {
        "train_s": time_call(train_step, device, warmup=1, repeats=repeats),
        "inference_s": time_call(inference, device, warmup=1, repeats=repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--slots", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads; 1 on a shared machine, where the per-step network's many small ops stall on contended "
        "OpenMP threads",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for length in args.lengths:
        for slots in args.slots:
            baseline = None
            for rule in RULES:
                model = cmnrec_model(args.scale, rule, slots)
                row = {
                    "model": f"cmnrec-{rule}",
                    "length": length,
                    "m": slots,
                    "params": parameter_count(model),
                }
                row.update(measure(model, length, args.batch_size, device, args.repeats))
                baseline = baseline or row
                row["train_speedup"] = baseline["train_s"] / row["train_s"]
                row["inference_speedup"] = baseline["inference_s"] / row["inference_s"]
                rows.append(row)
        budget = parameter_count(cmnrec_model(args.scale, "tsc", max(args.slots)))
        peterrec = matched_peterrec(budget, SCALES[args.scale]["controller_size"])
        row = {
            "model": f"peterrec-{len(peterrec.config.dilations)}layers",
            "length": length,
            "m": None,
            "params": parameter_count(peterrec),
        }
        row.update(measure(peterrec, length, args.batch_size, device, args.repeats))
        none_rows = [r for r in rows if r["model"] == "cmnrec-none" and r["length"] == length]
        row["train_speedup"] = min(r["train_s"] for r in none_rows) / row["train_s"]
        row["inference_speedup"] = min(r["inference_s"] for r in none_rows) / row["inference_s"]
        rows.append(row)

    columns = [
        "model",
        "length",
        "m",
        "params",
        "train_s",
        "inference_s",
        "train_speedup",
        "inference_speedup",
    ]
    table = format_table(rows, columns)
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "cmnrec_speed.json"
    payload = {
        "benchmark": "cmnrec_speed",
        "scale": args.scale,
        "sizes": SCALES[args.scale],
        "items": ITEMS,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "environment": environment(device),
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
