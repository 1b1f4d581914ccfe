"""CPU pretraining step, side by side in one run: the project's model against a plain PyTorch NextItNet.

One step = forward, next-item loss, backward and an Adam step, on synthetic item ids (ML-1M-sized vocabularies),
at three sizes, all hidden 64:
- `demo`: the demo's backbone (`demo.DEMO_BACKBONE`: 8 layers, length 50) and loss (`demo.DEMO_PRETRAINING`:
  sampled softmax, 512 candidates), batch 64, 3,504 items (the ColdRec source domain);
- `cpu`: the reproduction's former `cpu` preset (8 layers, length 50, batch 64), full softmax over 3,710 items;
- `long`: the backbone of docs/transfer.md, the reproduction's `cpu` preset since (`plan.PRESETS["cpu"]`: 12
  layers, length 200, batch 64), full softmax over 3,710 items.

Implementations, each timed in the same process, in interleaved rounds so that a busy machine slows all alike:
- `peterrec`: `PeterRecForNextItemPrediction` with its own loss (`model(ids, labels=ids).loss`), fp32;
- `peterrec_bf16`: the same under `torch.autocast("cpu", torch.bfloat16)` (CPUs with bf16 instructions only);
- `plain`: NextItNet as a user writes it: `nn.Conv1d` dilated residual blocks, the logits of every position,
  `F.cross_entropy` (fp32); `plain_bf16`: the same under bf16 autocast;
- `recbole`: RecBole's `NextItNet` (`calculate_loss`, CE loss), when RecBole imports. It predicts the last
  position of each sequence only (RecBole trains on every prefix as its own sequence), so compare it per target;
- `cmnrec-<rule>` (`--cmnrec`): CmnRec of `cmnrec_speed.py`'s demo size with m = 4 slots, for each chunk rule;
- `sasrec` (`--sasrec`): SASRec (`SASRecForNextItemPrediction`) of the size's width and length, 2 blocks of 2
  heads, with the size's loss.
`--compile` adds the `peterrec` rows with the backbone under `torch.compile`.

The run also times the training collator (`NextItemCollator`) on rows of the size's length: the Trainer calls it
in the training loop's process, so its time per batch adds to every step.

    python -m benchmarks.cpu_pretraining --sizes demo cpu long --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modeling_peterrec.configuration_peterrec import PeterRecConfig
from modeling_peterrec.configuration_sasrec import SASRecConfig
from modeling_peterrec.data.collators import NextItemCollator
from modeling_peterrec.demo import DEMO_BACKBONE, DEMO_PRETRAINING
from modeling_peterrec.modeling_peterrec import PeterRecForNextItemPrediction
from modeling_peterrec.modeling_sasrec import SASRecForNextItemPrediction
from modeling_peterrec.reproduction.plan import PRESETS
from tokenization import ItemTokenizer

from .cmnrec_speed import RULES, cmnrec_model
from .common import cpu_model, cpuinfo, environment, format_table, package_version, write_results

ML1M_VOCAB = 3706 + 4
SOURCE_DOMAIN_VOCAB = 3500 + 4
SIZES = {
    "demo": {
        "vocab_size": SOURCE_DOMAIN_VOCAB,
        "hidden_size": DEMO_BACKBONE["hidden_size"],
        "dilations": DEMO_BACKBONE["dilations"],
        "length": DEMO_BACKBONE["max_length"],
        "batch_size": 64,
        **DEMO_PRETRAINING,
    },
    "cpu": {
        "vocab_size": ML1M_VOCAB,
        "hidden_size": 64,
        "dilations": [1, 2, 4, 8] * 2,
        "length": 50,
        "batch_size": 64,
        "pretraining_loss": "full_softmax",
    },
    "long": {
        "vocab_size": ML1M_VOCAB,
        "hidden_size": PRESETS["cpu"].hidden_size,
        "dilations": list(PRESETS["cpu"].dilations),
        "length": PRESETS["cpu"].max_length,
        "batch_size": PRESETS["cpu"].pretrain_batch_size,
        "pretraining_loss": "full_softmax",
    },
}
CMNREC_SLOTS = 4
COLUMNS = [
    "size",
    "implementation",
    "step_ms_min",
    "step_ms_median",
    "cpu_ms_min",
    "tokens_per_s",
    "targets_per_s",
    "speedup_min",
    "speedup_median",
    "collator_share",
    "collator_ms_per_batch",
    "collator_examples_per_s",
]


class PlainResidualBlock(nn.Module):
    """NextItNet's residual block as written from the paper: conv(d), LayerNorm, ReLU, conv(2d), LayerNorm, ReLU."""

    def __init__(self, hidden_size: int, dilation1: int, dilation2: int, kernel_size: int = 3):
        super().__init__()
        self.pads = ((kernel_size - 1) * dilation1, (kernel_size - 1) * dilation2)
        self.conv1 = nn.Conv1d(hidden_size, hidden_size, kernel_size, dilation=dilation1)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.conv2 = nn.Conv1d(hidden_size, hidden_size, kernel_size, dilation=dilation2)
        self.norm2 = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.pad(x.transpose(1, 2), (self.pads[0], 0))).transpose(1, 2)
        out = F.relu(self.norm1(out))
        out = self.conv2(F.pad(out.transpose(1, 2), (self.pads[1], 0))).transpose(1, 2)
        return x + F.relu(self.norm2(out))


class PlainNextItNet(nn.Module):
    """The reference: embedding, residual blocks, logits of every position, `F.cross_entropy`."""

    def __init__(self, vocab_size: int, hidden_size: int, dilations: list[int]):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.blocks = nn.ModuleList(
            PlainResidualBlock(hidden_size, dilations[i], dilations[i + 1])
            for i in range(0, len(dilations), 2)
        )
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(input_ids)
        for block in self.blocks:
            hidden = block(hidden)
        logits = self.output(hidden[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))


def recbole_loss(size: dict) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None:
    """RecBole's NextItNet at the same size, or None when RecBole does not import. Its residual block has dilations
    (d, 2d), so our pairs (1, 2), (4, 8) are its `dilations=[1, 4]`."""
    try:
        from recbole.model.sequential_recommender.nextitnet import NextItNet
    except ImportError:
        return None
    dilations = size["dilations"]
    config = {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": size["length"],
        "device": torch.device("cpu"),
        "embedding_size": size["hidden_size"],
        "block_num": 1,
        "dilations": dilations[0::2],
        "kernel_size": 3,
        "reg_weight": 0.0,
        "loss_type": "CE",
    }

    class Vocabulary:
        def num(self, field: str) -> int:
            return size["vocab_size"]

    model = NextItNet(config, Vocabulary())

    def loss(input_ids: torch.Tensor) -> torch.Tensor:
        return model.calculate_loss({"item_id_list": input_ids[:, :-1], "item_id": input_ids[:, -1]})

    return model, loss


def implementations(size: dict, bf16: bool, compile_backbone: bool, cmnrec: bool, sasrec: bool) -> dict:
    """name -> (model, loss of a batch of ids, bf16 autocast, predicted targets per row)."""
    length = size["length"]
    config = PeterRecConfig(
        vocab_size=size["vocab_size"],
        hidden_size=size["hidden_size"],
        dilations=size["dilations"],
        pretraining_loss=size["pretraining_loss"],
        num_sampled=size.get("num_sampled", 8192),
    )
    peterrec = PeterRecForNextItemPrediction(config).train()
    plain = PlainNextItNet(size["vocab_size"], size["hidden_size"], size["dilations"]).train()
    runs = {
        "peterrec": (peterrec, lambda ids: peterrec(ids, labels=ids).loss, False, length - 1),
        "plain": (plain, plain, False, length - 1),
    }
    if bf16:
        runs["peterrec_bf16"] = (*runs["peterrec"][:2], True, length - 1)
        runs["plain_bf16"] = (plain, plain, True, length - 1)
    if compile_backbone:
        compiled = PeterRecForNextItemPrediction(config).train()
        compiled.peterrec = torch.compile(compiled.peterrec)
        runs["peterrec_compiled"] = (compiled, lambda ids: compiled(ids, labels=ids).loss, False, length - 1)
        if bf16:
            runs["peterrec_compiled_bf16"] = (*runs["peterrec_compiled"][:2], True, length - 1)
    recbole = recbole_loss(size)
    if recbole is not None:
        runs["recbole"] = (*recbole, False, 1)
    if cmnrec:
        for rule in RULES:
            model = cmnrec_model("demo", rule, CMNREC_SLOTS).train()
            runs[f"cmnrec-{rule}"] = (
                model,
                lambda ids, model=model: model(ids, labels=ids).loss,
                False,
                length - 1,
            )
    if sasrec:
        model = SASRecForNextItemPrediction(
            SASRecConfig(
                vocab_size=size["vocab_size"],
                hidden_size=size["hidden_size"],
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=length,
                pretraining_loss=size["pretraining_loss"],
                num_sampled=size.get("num_sampled", 8192),
            )
        ).train()
        runs["sasrec"] = (model, lambda ids: model(ids, labels=ids).loss, False, length - 1)
    return runs


def make_step(model: nn.Module, loss_fn, use_bf16: bool, input_ids: torch.Tensor) -> Callable[[], float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(input_ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def time_interleaved(steps: dict[str, Callable[[], float]], rounds: int, per_round: int, warmup: int) -> dict:
    """Wall and process CPU milliseconds of every step, the implementations taking turns round by round."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(per_round):
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                wall[name].append(1e3 * (time.perf_counter() - start))
                cpu[name].append(1e3 * (time.process_time() - start_cpu))
    return {name: (wall[name], cpu[name]) for name in steps}


def collator_throughput(size: dict, batches: int = 20) -> dict:
    """Examples per second of `NextItemCollator` on full-length rows of real item ids."""
    items = [str(i) for i in range(size["vocab_size"] - 4)]
    tokenizer = ItemTokenizer.from_sequences([items])
    collator = NextItemCollator(tokenizer, max_length=size["length"])
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(
        tokenizer.first_item_id, len(tokenizer), (size["batch_size"], size["length"]), generator=generator
    )
    features = [{"input_ids": row} for row in ids.tolist()]
    collator(features)
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        collator(features)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    return {"collator_ms_per_batch": 1e3 * seconds, "collator_examples_per_s": size["batch_size"] / seconds}


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux)."""
    flags = cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def benchmark_size(name: str, args: argparse.Namespace, bf16: bool) -> list[dict]:
    size = SIZES[name]
    torch.manual_seed(0)
    runs = implementations(size, bf16, args.compile, args.cmnrec, args.sasrec)
    input_ids = torch.randint(4, size["vocab_size"], (size["batch_size"], size["length"]))
    steps = {
        label: make_step(model, loss, use_bf16, input_ids)
        for label, (model, loss, use_bf16, _) in runs.items()
    }
    timings = time_interleaved(steps, args.rounds, args.steps_per_round, args.warmup)
    collator = collator_throughput(size)
    rows = []
    for label, (wall, cpu) in timings.items():
        median = statistics.median(wall)
        targets = size["batch_size"] * runs[label][3]
        rows.append(
            {
                "size": name,
                "implementation": label,
                "step_ms_min": min(wall),
                "step_ms_median": median,
                "cpu_ms_min": min(cpu),
                "tokens_per_s": size["batch_size"] * size["length"] / median * 1e3,
                "targets_per_s": targets / median * 1e3,
                "examples_per_s": size["batch_size"] / median * 1e3,
                "steps": len(wall),
            }
        )
    reference = next(row for row in rows if row["implementation"] == "plain")
    for row in rows:
        row["speedup_min"] = reference["step_ms_min"] / row["step_ms_min"]
        row["speedup_median"] = reference["step_ms_median"] / row["step_ms_median"]
        batch_ms = collator["collator_ms_per_batch"]
        row["collator_share"] = batch_ms / (batch_ms + row["step_ms_median"])
    rows.append({"size": name, "implementation": "collator (NextItemCollator)", **collator})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--compile", action="store_true", help="add the peterrec rows with a compiled backbone"
    )
    parser.add_argument("--cmnrec", action="store_true", help="add CmnRec's rows (each chunk rule)")
    parser.add_argument("--sasrec", action="store_true", help="add SASRec's row")
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip the bf16 rows even where the CPU has bf16"
    )
    parser.add_argument(
        "--name", default="cpu_pretraining", help="results file: benchmarks/results/NAME-cpu.json"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    bf16 = cpu_has_bf16() and not args.no_bf16
    rows = []
    for name in args.sizes:
        rows += benchmark_size(name, args, bf16)
        print(format_table([row for row in rows if row["size"] == name], COLUMNS), flush=True)
    print()
    print(format_table(rows, COLUMNS))
    payload = {
        "environment": {
            **environment(device),
            "cpu_bf16": cpu_has_bf16(),
            "recbole": package_version("recbole"),
            "cpu_model": cpu_model(),
        },
        "sizes": {name: SIZES[name] for name in args.sizes},
        "settings": vars(args),
        "results": rows,
    }
    print(f"written to {write_results(args.name, device, payload)}")


if __name__ == "__main__":
    main()
