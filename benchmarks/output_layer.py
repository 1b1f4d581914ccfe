"""Output projection + softmax cross-entropy at the paper's pretraining scale: candidates compared.

Forward and backward of `cross_entropy(hidden @ weight.T + bias, labels)` with hidden size 256 and 645,984
output rows (645,980 items and 4 special tokens), for 6,400 and 51,200 tokens (batch 64 and 512 at length 100).
Each candidate's loss and gradients are checked against an fp32 computation at the smaller size, and its time is
given as a share of the measured bf16 matmul peak, counting 6 * tokens * hidden * items FLOPs.

    python -m benchmarks.output_layer --device cuda
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from modeling_peterrec import loss_peterrec
from modeling_peterrec.loss_peterrec import linear_cross_entropy

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


def plain_bf16(hidden, weight, bias, labels):
    logits = hidden @ weight.T + bias
    return F.cross_entropy(logits.float(), labels)


def chunked(chunk_size):
    def loss(hidden, weight, bias, labels):
        return linear_cross_entropy(hidden, weight, bias, labels, chunk_size=chunk_size, backend="torch")

    return loss


def triton_fused(hidden, weight, bias, labels):
    return linear_cross_entropy(hidden, weight, bias, labels, backend="triton")


def liger(hidden, weight, bias, labels):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(hidden.bfloat16(), weight.bfloat16(), labels, bias)


def cut_cross_entropy(filter_eps):
    def loss(hidden, weight, bias, labels):
        from cut_cross_entropy import linear_cross_entropy as cce

        # Version 25.1 has no bias argument: this measures the projection without it.
        return cce(hidden.bfloat16(), weight.bfloat16(), labels, filter_eps=filter_eps)

    return loss


CANDIDATES = {
    "plain_bf16_logits": plain_bf16,
    "torch_chunked_2048": chunked(2048),
    "torch_chunked_8192": chunked(8192),
    "triton_fused": triton_fused,
    "liger_kernel": liger,
    "cut_cross_entropy_exact": cut_cross_entropy(None),
    "cut_cross_entropy_filtered": cut_cross_entropy("high"),
}


def make_inputs(num_tokens, hidden_size, vocab_size, device, seed=0):
    generator = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(num_tokens, hidden_size, device=device, generator=generator).requires_grad_()
    weight = (
        0.05 * torch.randn(vocab_size, hidden_size, device=device, generator=generator)
    ).requires_grad_()
    bias = (0.1 * torch.randn(vocab_size, device=device, generator=generator)).requires_grad_()
    labels = torch.randint(vocab_size, (num_tokens,), device=device, generator=generator)
    return hidden, weight, bias, labels


def run_candidate(fn, inputs, device):
    hidden, weight, bias, labels = inputs
    for tensor in (hidden, weight, bias):
        tensor.grad = None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = fn(hidden, weight, bias, labels)
    loss.backward()
    return loss.detach().float()


def relative_errors(fn, inputs, reference, device):
    loss = run_candidate(fn, inputs, device)
    grads = [t.grad for t in inputs[:3]]
    errors = {"loss": abs(loss.item() - reference[0].item()) / abs(reference[0].item())}
    for name, grad, ref in zip(("hidden", "weight", "bias"), grads, reference[1:], strict=True):
        errors[name] = None if grad is None else ((grad.float() - ref).norm() / ref.norm()).item()
    return errors


def fp32_reference(inputs, chunk_size=2048):
    hidden, weight, bias, labels = inputs
    for tensor in (hidden, weight, bias):
        tensor.grad = None
    loss = linear_cross_entropy(hidden, weight, bias, labels, chunk_size=chunk_size, backend="torch")
    loss.backward()
    return loss.detach(), hidden.grad.clone(), weight.grad.clone(), bias.grad.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, nargs="+", default=[6400, 51200])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=645984)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--triton-blocks", nargs="*", default=[], help="kernel=BN,BV,warps,stages to sweep")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    peak = measure_matmul_peak(device)
    candidates = {name: CANDIDATES[name] for name in args.candidates}
    default_blocks = dict(loss_peterrec.TRITON_BLOCKS)
    for spec in args.triton_blocks:
        kernel, values = spec.split("=")
        blocks = tuple(int(v) for v in values.split(","))

        def variant(*tensors, kernel=kernel, blocks=blocks):
            loss_peterrec.TRITON_BLOCKS.update(default_blocks)
            loss_peterrec.TRITON_BLOCKS[kernel] = blocks
            try:
                return triton_fused(*tensors)
            finally:
                loss_peterrec.TRITON_BLOCKS.update(default_blocks)

        candidates[f"triton_{kernel}_{values}"] = variant

    rows = []
    for num_tokens in args.tokens:
        reset_memory(device)
        inputs = make_inputs(num_tokens, args.hidden_size, args.vocab_size, device)
        reference = fp32_reference(inputs) if num_tokens == min(args.tokens) else None
        flops = 6 * num_tokens * args.hidden_size * args.vocab_size
        for name, fn in candidates.items():
            row = {"candidate": name, "tokens": num_tokens}
            try:
                if reference is not None:
                    row.update(
                        {f"rel_err_{k}": v for k, v in relative_errors(fn, inputs, reference, device).items()}
                    )
                reset_memory(device)
                base = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
                seconds = time_call(
                    lambda fn=fn, inputs=inputs: run_candidate(fn, inputs, device),
                    device,
                    warmup=1,
                    repeats=3,
                )
                row.update(
                    ms=1e3 * seconds,
                    tflops=flops / seconds / 1e12,
                    mfu_pct=100 * flops / seconds / 1e12 / peak["tflops"],
                    extra_memory_gib=(peak_memory_gib(device) or 0.0) - base,
                )
            except Exception as error:  # noqa: BLE001 - a failing candidate is a result, not a crash
                row["error"] = (
                    "out of memory" if is_out_of_memory(error) else f"{type(error).__name__}: {error}"[:200]
                )
            rows.append(row)
            print(row, flush=True)
        del inputs, reference
    columns = [
        "candidate",
        "tokens",
        "ms",
        "mfu_pct",
        "extra_memory_gib",
        "rel_err_loss",
        "rel_err_hidden",
        "rel_err_weight",
        "rel_err_bias",
        "error",
    ]
    print(f"\nmatmul peak: {peak}\n")
    print(format_table(rows, columns))
    path = write_results(
        "output_layer",
        device,
        {
            "environment": environment(device),
            "matmul_peak": peak,
            "hidden_size": args.hidden_size,
            "vocab_size": args.vocab_size,
            "results": rows,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
