"""Dilated causal convolution layouts, forward and backward, at the paper's scale (batch 512, length 100, 256).

`model`: the model's `DilatedConv1d` (transpose to channels-first, pad, `nn.Conv1d`, transpose back), then
LayerNorm and ReLU as in a residual block. `shifted_matmul`: the same function on the (batch, length, channels)
layout with no transposes and no padded copy: one matmul against the three kernel taps stacked, then the taps'
outputs added with their causal shifts. Both are also timed under `torch.compile`.

    python -m benchmarks.conv_layout --device cuda
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from modeling_peterrec.modeling_peterrec import DilatedConv1d

from .common import environment, format_table, time_call, write_results


def shifted_matmul(hidden: torch.Tensor, conv: torch.nn.Conv1d, dilation: int) -> torch.Tensor:
    """Causal dilated convolution as x @ [W_0; W_1; ...; W_{k-1}]^T with tap j shifted by (k - 1 - j) * d."""
    channels, kernel_size = conv.out_channels, conv.kernel_size[0]
    taps = F.linear(hidden, conv.weight.permute(2, 0, 1).reshape(kernel_size * channels, channels))
    out = taps[..., (kernel_size - 1) * channels :] + conv.bias
    length = hidden.shape[1]
    for tap in range(kernel_size - 1):
        shift = (kernel_size - 1 - tap) * dilation
        if shift < length:
            shifted = F.pad(
                taps[:, : length - shift, tap * channels : (tap + 1) * channels], (0, 0, shift, 0)
            )
            out = out + shifted
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--dilation", type=int, default=4)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    layer = DilatedConv1d(256, 3, args.dilation, is_causal=True).to(device)
    norm = torch.nn.LayerNorm(256, eps=1e-8).to(device)
    hidden = torch.randn(args.batch_size, 100, 256, device=device, requires_grad=True)
    with torch.no_grad():
        error = (shifted_matmul(hidden, layer.conv, args.dilation) - layer(hidden)).abs().max().item()
    print(f"max |shifted_matmul - DilatedConv1d| in fp32: {error:.2e}")

    variants = {
        "model": lambda x: torch.relu(norm(layer(x))),
        "shifted_matmul": lambda x: torch.relu(norm(shifted_matmul(x, layer.conv, args.dilation))),
    }
    variants.update({f"{name}, compiled": torch.compile(fn) for name, fn in list(variants.items())})
    rows = []
    for name, fn in variants.items():

        def step(fn=fn) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = fn(hidden)
            out.float().square().mean().backward()

        seconds = time_call(step, device, warmup=3, repeats=20)
        rows.append({"variant": name, "forward_backward_ms": 1e3 * seconds})
    print(format_table(rows, ["variant", "forward_backward_ms"]))
    payload = {"environment": environment(device), "max_abs_difference_fp32": error, "results": rows}
    print(f"written to {write_results('conv_layout', device, payload)}")


if __name__ == "__main__":
    main()
