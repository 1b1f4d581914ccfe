"""Causal next-item pretraining throughput (forward, backward and Adam step), with a plain reference.

Paper scale (GPU): hidden size 256, dilations [1, 2, 4, 8] x 4, kernel 3, sequence length 100, 645,980 items,
full-softmax next-item loss over every position. Demo scale (CPU): hidden size 64, about 3,500 items, length 50.

Three ways to train the same `PeterRecForNextItemPrediction` in the same process:
- `peterrec`: the model's own loss (the output projection and the cross-entropy fused, logits never
  materialised), bf16 autocast and TF32 on GPU, fused Adam;
- `plain_fp32`: the straightforward PyTorch step: fp32 logits of every position, `F.cross_entropy`, Adam;
- `plain_bf16`: the same with bf16 autocast.
Model FLOPs per step count the 16 convolutions (2 * kernel * hidden^2 per position each, x3 for the backward)
and the output layer (6 * hidden * items per predicted position); utilisation is against the bf16 matmul
rate measured in the same run.

    python -m benchmarks.pretraining --scale paper --device cuda
    python -m benchmarks.pretraining --scale demo --device cpu
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from modeling_peterrec.configuration_peterrec import PeterRecConfig
from modeling_peterrec.modeling_peterrec import PeterRecForNextItemPrediction

from .common import (
    environment,
    format_table,
    is_out_of_memory,
    measure_matmul_peak,
    peak_memory_gib,
    reset_memory,
    time_call,
    write_results,
)

SCALES = {
    "paper": {
        "vocab_size": 645984,
        "hidden_size": 256,
        "length": 100,
        "batch_sizes": [32, 64, 128, 256, 512],
    },
    "demo": {"vocab_size": 3504, "hidden_size": 64, "length": 50, "batch_sizes": [32, 64, 128, 256]},
}
MODES = ("peterrec", "plain_fp32", "plain_bf16")


def step_flops(config: PeterRecConfig, batch_size: int, length: int) -> float:
    convolutions = (
        3 * len(config.dilations) * 2 * config.kernel_size * config.hidden_size**2 * batch_size * length
    )
    output_layer = 6 * config.hidden_size * config.vocab_size * batch_size * (length - 1)
    return float(convolutions + output_layer)


def plain_loss(model: PeterRecForNextItemPrediction, input_ids: torch.Tensor) -> torch.Tensor:
    hidden = model.peterrec(input_ids).last_hidden_state
    logits = model.output_layer(hidden[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1))


def make_step(mode: str, model, optimizer, input_ids: torch.Tensor, device: torch.device):
    use_bf16 = device.type == "cuda" and mode != "plain_fp32"

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if mode == "peterrec":
                loss = model(input_ids, labels=input_ids).loss
            else:
                loss = plain_loss(model, input_ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def benchmark(
    mode: str, config: PeterRecConfig, batch_size: int, length: int, device, peak, compile_backbone
):
    torch.backends.cuda.matmul.allow_tf32 = mode != "plain_fp32"
    torch.backends.cudnn.allow_tf32 = mode != "plain_fp32"
    reset_memory(device)
    model = optimizer = None
    row = {"mode": mode, "batch_size": batch_size}
    try:
        with torch.device(device):  # initialise the 330M parameters where they live
            model = PeterRecForNextItemPrediction(config).train()
        if compile_backbone and mode == "peterrec":
            model.peterrec = torch.compile(model.peterrec)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=1e-4, fused=device.type == "cuda" and mode == "peterrec"
        )
        generator = torch.Generator(device=device).manual_seed(batch_size)
        input_ids = torch.randint(
            4, config.vocab_size, (batch_size, length), device=device, generator=generator
        )
        step = make_step(mode, model, optimizer, input_ids, device)
        seconds = time_call(step, device, warmup=2, repeats=5)
        tokens = batch_size * length
        flops = step_flops(config, batch_size, length)
        row.update(
            step_ms=1e3 * seconds,
            tokens_per_s=tokens / seconds,
            mfu_pct=100 * flops / seconds / 1e12 / peak["tflops"],
            peak_memory_gib=peak_memory_gib(device),
            loss=step().item(),
        )
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        row["error"] = "out of memory"
    del model, optimizer
    reset_memory(device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="defaults to all (no plain_bf16 on CPU)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the backbone of the peterrec mode"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    scale = SCALES[args.scale]
    config = PeterRecConfig(vocab_size=scale["vocab_size"], hidden_size=scale["hidden_size"])
    peak = measure_matmul_peak(device)
    rows = []
    modes = args.modes or [mode for mode in MODES if device.type == "cuda" or mode != "plain_bf16"]
    for mode in modes:
        ran_out = False
        for batch_size in args.batch_sizes or scale["batch_sizes"]:
            if ran_out:
                rows.append(
                    {
                        "mode": mode,
                        "batch_size": batch_size,
                        "error": "not run: a smaller batch was out of memory",
                    }
                )
                continue
            row = benchmark(mode, config, batch_size, scale["length"], device, peak, args.compile)
            ran_out = "error" in row
            rows.append(row)
            print(row, flush=True)
    best = {
        mode: max((r.get("tokens_per_s", 0.0) for r in rows if r["mode"] == mode), default=0.0)
        for mode in MODES
    }
    reference = {r["batch_size"]: r.get("tokens_per_s") for r in rows if r["mode"] == "plain_fp32"}
    for row in rows:
        if row.get("tokens_per_s") and reference.get(row["batch_size"]):
            row["speedup_vs_plain_fp32"] = row["tokens_per_s"] / reference[row["batch_size"]]
    summary = {
        "best_tokens_per_s": best,
        "best_peterrec_over_best_plain_fp32": best["peterrec"] / best["plain_fp32"]
        if best["plain_fp32"]
        else None,
    }
    columns = [
        "mode",
        "batch_size",
        "step_ms",
        "tokens_per_s",
        "mfu_pct",
        "peak_memory_gib",
        "speedup_vs_plain_fp32",
        "loss",
        "error",
    ]
    print(f"\n{args.scale} scale on {device}; matmul peak {peak['tflops']:.4g} TFLOP/s ({peak['dtype']})\n")
    print(format_table(rows, columns))
    print(f"\n{summary}")
    payload = {
        "environment": environment(device),
        "scale": args.scale,
        "settings": scale,
        "compile": args.compile,
        "matmul_peak": peak,
        "results": rows,
        "summary": summary,
    }
    print(
        f"written to {write_results(f'pretraining-{args.scale}' + ('-compiled' * args.compile), device, payload)}"
    )


if __name__ == "__main__":
    main()
