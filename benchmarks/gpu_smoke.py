"""A few bf16 training steps of `PeterRecForNextItemPrediction` on one repeated batch: the loss must fall.

python -m benchmarks.gpu_smoke
"""

from __future__ import annotations

import torch

from modeling_peterrec.configuration_peterrec import PeterRecConfig
from modeling_peterrec.modeling_peterrec import PeterRecForNextItemPrediction


def main() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    config = PeterRecConfig(vocab_size=20_004, hidden_size=256)
    model = PeterRecForNextItemPrediction(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    input_ids = torch.randint(4, config.vocab_size, (64, 100), device=device)
    input_ids[:8, :30] = config.pad_token_id
    labels = input_ids.masked_fill(input_ids == config.pad_token_id, -100)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    print("losses:", [round(value, 3) for value in losses[::5]], "last", round(losses[-1], 3))
    if not losses[-1] < 0.5 * losses[0]:
        raise SystemExit(f"loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}")
    print("ok: bf16 training on CUDA lowers the loss")


if __name__ == "__main__":
    main()
