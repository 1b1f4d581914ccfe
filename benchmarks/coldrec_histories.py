"""One ColdRec training epoch with a user's target rows apart (rows grouped by length) or together (histories
grouped by length, `HistoryGroupedSampler`): the backbone passes each order costs.

ColdRec has one row per target item, so each user's history appears once per target (2.6 times on average on
ML-1M). The heads run the backbone once per distinct history of a batch (`modeling_utils.distinct_rows`); whether
a batch holds repeats depends on the order of the rows. This script trains the `cpu` preset's model shape
(FineAll, 12 conv layers of width 64, the 400 most recent items, batches of 64 rows) for one epoch of the real
ML-1M ColdRec rows in each order, in this process, on one thread, and prints the distinct histories per batch and
the time. The weights start from the same random draw in both orders; the time does not depend on their values.

    python -m benchmarks.coldrec_histories
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from modeling_peterrec import PeterRecConfig, PeterRecModel, keep_freed_memory, prepare_for_transfer
from modeling_peterrec.data import HISTORY_COLUMN, load_task
from modeling_peterrec.reproduction.plan import PRESETS
from modeling_peterrec.tokenization_peterrec import ItemTokenizer
from modeling_peterrec.training.datasets import ranking_datasets, task_collators
from modeling_peterrec.training.samplers import HistoryGroupedSampler

from .common import format_table, write_cpu_results


def orders(train, batch_size: int, seed: int) -> dict[str, list[int]]:
    """The two row orders of one epoch, from generators seeded alike."""
    lengths = [len(ids) for ids in train["input_ids"]]
    rows = LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed))
    histories = HistoryGroupedSampler(
        train[HISTORY_COLUMN], lengths, batch_size, generator=torch.Generator().manual_seed(seed)
    )
    return {"rows grouped by length": list(rows), "histories grouped by length": list(histories)}


def epoch(model, train, collator, order: list[int], batch_size: int) -> dict:
    """Trains one epoch in `order`; the time and the distinct histories of each batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    distinct, started = [], time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = collator([train[row] for row in order[start : start + batch_size]])
        distinct.append(torch.unique(batch["input_ids"], dim=0).shape[0])
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {
        "epoch s": time.perf_counter() - started,
        "batches": len(distinct),
        "distinct histories per batch": statistics.mean(distinct),
        "backbone rows in the epoch": sum(distinct),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    preset = PRESETS["cpu"]
    splits = load_task("ml-1m", "coldrec")
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"], model_max_length=preset.max_length)
    train, _, _ = ranking_datasets(splits, tokenizer, preset.num_eval_negatives, args.seed)
    num_targets = len(splits["train"].features["targets"].feature.names)
    config = PeterRecConfig(
        vocab_size=len(tokenizer), hidden_size=preset.hidden_size, dilations=list(preset.dilations)
    )
    results = []
    for name, order in orders(train, preset.finetune_batch_size, args.seed).items():
        torch.manual_seed(args.seed)
        model, _ = prepare_for_transfer(
            PeterRecModel(config), "fine_all", "coldrec", "ranking", num_target_items=num_targets
        )
        model.train()
        collator, _ = task_collators(tokenizer, model, preset.max_length, "ranking")
        results.append({"order": name, **epoch(model, train, collator, order, preset.finetune_batch_size)})
    speedup = results[0]["epoch s"] / results[1]["epoch s"]
    print(format_table(results, list(results[0])))
    print(f"histories together: {speedup:.2f}x the epoch rate of rows apart ({len(train):,} rows)")
    path = write_cpu_results(
        "coldrec_histories",
        "ML-1M ColdRec training rows, cpu preset shape, FineAll, one epoch per order, one thread",
        {"rows": results, "speedup": speedup},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
