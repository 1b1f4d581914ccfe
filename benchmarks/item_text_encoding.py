"""Encoding ML-1M's catalogue from its texts: one training step's forward and backward pass of the item encoder.

A SASRec backbone over item texts (docs/text_items.md) encodes the whole catalogue at every pretraining step. This
times `ItemTextEncoder.item_matrix()` with gradients, then a backward pass, over ML-1M's 3,883 item texts (title,
year, genres) with the small offline encoder (`small_text_encoder`: a word vocabulary over the texts and a 2-layer
BERT of width 64) projected to width 64, in one chunk (no recomputation), two ways in interleaved rounds:
- `grouped`: the encoder as it is, texts sorted by length, `item_text.TEXT_GROUP_SIZE` a forward pass, each group
  cut to its longest text;
- `padded`: one forward pass over every text padded to the catalogue's longest (`TEXT_GROUP_SIZE` set above the
  catalogue's size for the run).
It also reports the texts' token lengths. Needs MovieLens-1M in the data cache (`peterrec demo` fetches it).

    python -m benchmarks.item_text_encoding --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from unittest import mock

import torch

from modeling_peterrec import SASRecForNextItemPrediction, item_text
from modeling_peterrec.data import movielens_item_texts
from modeling_peterrec.small_text_encoder import build_small_text_encoder
from tokenization import ItemTokenizer

from .common import environment, format_table, write_results

WAYS = {"grouped": item_text.TEXT_GROUP_SIZE, "padded": 1 << 30}


def catalogue_step(encoder: item_text.ItemTextEncoder) -> float:
    """Seconds of one forward and backward pass over the catalogue."""
    start = time.perf_counter()
    encoder.item_matrix().square().sum().backward()
    encoder.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts = movielens_item_texts("ml-1m")
    folder = build_small_text_encoder(texts.values(), tempfile.mkdtemp() + "/encoder")
    model = SASRecForNextItemPrediction.from_item_encoder(
        folder,
        ItemTokenizer.from_sequences([list(texts)]),
        texts,
        item_representation="text",
        hidden_size=64,
        item_encoder_batch_size=len(texts),
    ).train()
    encoder = model.sasrec.item_text
    lengths = encoder.text_attention_mask.sum(1).float()
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for round_ in range(args.rounds + 1):
        for way, group_size in WAYS.items():
            with mock.patch.object(item_text, "TEXT_GROUP_SIZE", group_size):
                seconds = catalogue_step(encoder)
            if round_:  # the first round warms up
                times[way].append(seconds)
    medians = {way: statistics.median(values) for way, values in times.items()}
    rows = [
        {
            "way": way,
            "median s": medians[way],
            "min s": min(times[way]),
            "speedup": medians["padded"] / medians[way],
        }
        for way in WAYS
    ]
    print(f"{len(texts):,} texts, tokens per text: mean {lengths.mean():.1f}, max {int(lengths.max())}")
    print(format_table(rows, ["way", "median s", "min s", "speedup"]))
    path = write_results(
        "item_text_encoding",
        torch.device("cpu"),
        {
            "environment": environment(torch.device("cpu")),
            "texts": len(texts),
            "tokens_mean": round(float(lengths.mean()), 2),
            "tokens_max": int(lengths.max()),
            "group_size": item_text.TEXT_GROUP_SIZE,
            "rounds": args.rounds,
            "seconds": {way: {"median": medians[way], "min": min(times[way])} for way in WAYS},
        },
    )
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
