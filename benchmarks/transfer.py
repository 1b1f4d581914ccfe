"""Fine-tuning and serving speed at the paper's scale: PeterRec vs FineAll steps, and multi-task inference.

(c) Fine-tuning: one step (forward, backward, Adam) of user-profile classification on a pretrained backbone,
    with PeterRec (model patches and the head train, the backbone is frozen) and with FineAll (everything
    trains). (d) Inference: user representations per second (the backbone and its [TCL] readout), task
    predictions per second for one task, and for a mixed batch in which the rows belong to 10 patched tasks.
    Inference runs in bf16 autocast and, as the plain reference in the same process, in fp32.

    python -m benchmarks.transfer --device cuda
"""

from __future__ import annotations

import argparse

import torch

from modeling_peterrec import MultiTaskPeterRec, prepare_for_transfer
from modeling_peterrec.configuration_peterrec import PeterRecConfig
from modeling_peterrec.modeling_peterrec import PeterRecModel

from .common import environment, format_table, peak_memory_gib, reset_memory, time_call, write_results

SCALES = {
    "paper": {"vocab_size": 645984, "hidden_size": 256, "length": 100, "batch_size": 512},
    "demo": {"vocab_size": 3504, "hidden_size": 64, "length": 50, "batch_size": 128},
}
LABELS = ["a", "b", "c", "d", "e"]


def make_backbone(scale: dict, device: torch.device) -> PeterRecModel:
    with torch.device(device):
        return PeterRecModel(PeterRecConfig(vocab_size=scale["vocab_size"], hidden_size=scale["hidden_size"]))


def make_batch(scale: dict, config: PeterRecConfig, device: torch.device):
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (scale["batch_size"], scale["length"])
    input_ids = torch.randint(4, config.vocab_size, shape, device=device, generator=generator)
    input_ids[:, -1] = config.tcl_token_id
    labels = torch.randint(len(LABELS), (shape[0],), device=device, generator=generator)
    return input_ids, torch.ones_like(input_ids), labels


def fine_tuning(method: str, scale: dict, device: torch.device, compile_backbone: bool) -> dict:
    reset_memory(device)
    backbone = make_backbone(scale, device)
    model, _ = prepare_for_transfer(backbone, method, task="bench", head="classification", label_names=LABELS)
    model.to(device).train()
    if compile_backbone:
        backbone.compile()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-4, fused=device.type == "cuda")
    input_ids, attention_mask, labels = make_batch(scale, backbone.config, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_call(step, device, warmup=3, repeats=10)
    row = {
        "benchmark": f"fine-tune step, {method}" + (", compiled" if compile_backbone else ""),
        "ms": 1e3 * seconds,
        "per_s": scale["batch_size"] / seconds,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "peak_memory_gib": peak_memory_gib(device),
    }
    return row


def inference(scale: dict, device: torch.device, num_tasks: int = 10) -> list[dict]:
    reset_memory(device)
    backbone = make_backbone(scale, device)
    server = MultiTaskPeterRec(backbone)
    for index in range(num_tasks):
        task = f"task{index}"
        model, _ = prepare_for_transfer(
            backbone, "peterrec", task=task, head="classification", label_names=LABELS
        )
        server.tasks[task] = model
    server.to(device).eval()
    input_ids, attention_mask, _ = make_batch(scale, backbone.config, device)
    mixed = [f"task{row % num_tasks}" for row in range(input_ids.shape[0])]

    def representations() -> None:
        hidden = backbone(input_ids, attention_mask=attention_mask, patch=None).last_hidden_state
        backbone.user_representation(hidden, attention_mask)

    calls = {
        "user representations (no patch)": representations,
        "task predictions, one task": lambda: server(input_ids, attention_mask, task="task0"),
        f"task predictions, mixed batch of {num_tasks} tasks": lambda: server(
            input_ids, attention_mask, task=mixed
        ),
    }
    rows = []
    for precision in ("bf16", "fp32") if device.type == "cuda" else ("fp32",):
        for name, call in calls.items():
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
            ):
                seconds = time_call(call, device, warmup=3, repeats=10)
            rows.append(
                {"benchmark": f"{name}, {precision}", "ms": 1e3 * seconds, "per_s": len(mixed) / seconds}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--compile", action="store_true", help="also time fine-tuning with a compiled backbone"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scale = SCALES[args.scale]
    rows = [
        fine_tuning(method, scale, device, compiled)
        for compiled in ((False, True) if args.compile else (False,))
        for method in ("peterrec", "fine_all")
    ]
    rows += inference(scale, device)
    by_name = {row["benchmark"]: row for row in rows}
    fast = "bf16" if device.type == "cuda" else "fp32"
    summary = {
        "peterrec_step_over_fine_all_step": by_name["fine-tune step, peterrec"]["ms"]
        / by_name["fine-tune step, fine_all"]["ms"],
        **(
            {
                "compiled_peterrec_step_over_fine_all_step": by_name["fine-tune step, peterrec, compiled"][
                    "ms"
                ]
                / by_name["fine-tune step, fine_all, compiled"]["ms"]
            }
            if args.compile
            else {}
        ),
        f"mixed_over_single_task_throughput_{fast}": by_name[
            f"task predictions, mixed batch of 10 tasks, {fast}"
        ]["per_s"]
        / by_name[f"task predictions, one task, {fast}"]["per_s"],
        f"{fast}_over_fp32_representations": by_name[f"user representations (no patch), {fast}"]["per_s"]
        / by_name["user representations (no patch), fp32"]["per_s"],
    }
    print(f"\n{args.scale} scale on {device}, batch {scale['batch_size']}, length {scale['length']}\n")
    print(format_table(rows, ["benchmark", "ms", "per_s", "trainable_parameters", "peak_memory_gib"]))
    print(f"\n{summary}")
    payload = {
        "environment": environment(device),
        "scale": args.scale,
        "settings": scale,
        "results": rows,
        "summary": summary,
    }
    print(f"written to {write_results(f'transfer-{args.scale}', device, payload)}")


if __name__ == "__main__":
    main()
