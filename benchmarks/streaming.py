"""Memory and speed of streaming pretraining (`data.streaming`) as the log grows: 1M -> 10M -> 100M events.

For each size a synthetic log (`benchmarks/synthetic_log.py`: Zipf items over a fixed catalogue, log-normal user
lengths, 50 events a user on average) is written under `--work_dir` and deleted afterwards. Each stage runs in a
fresh process that reports its own peak RSS:

- `vocabulary`: `count_log` + `ItemTokenizer.from_counts` (one pass over the log);
- `epoch`: one full pass of the data path (the shuffled `pretraining_stream` of windows through the
  `NextItemCollator` in batches), after `--model_steps` training steps of a small model on its first batches, so
  the peak holds the model, its optimizer and the stream together; events/s of the data path alone;
- `model`: events/s of the training step alone (forward, backward, Adam) of that model on CPU.

    python -m benchmarks.streaming --events 1000000 10000000 100000000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, format_table

MEAN_LENGTH = 50
WINDOW = 50
BATCH_SIZE = 128
SHUFFLE_BUFFER = 10_000
MODEL = {
    "hidden_size": 64,
    "dilations": [1, 2, 4, 8],
    "pretraining_loss": "sampled_softmax",
    "num_sampled": 2048,
}
"""A small causal backbone with the original code's sampled softmax: the full softmax over the catalogue would
measure the output layer (benchmarks/output_layer.py), not the data path."""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vocabulary_stage(folder: str, tokenizer_dir: str) -> dict:
    from modeling_peterrec.data import InteractionLog, count_log
    from modeling_peterrec.tokenization_peterrec import ItemTokenizer

    started = time.perf_counter()
    counts = count_log(InteractionLog.from_patterns([folder]), WINDOW)
    tokenizer = ItemTokenizer.from_counts(counts.item_counts, model_max_length=WINDOW)
    seconds = time.perf_counter() - started
    tokenizer.save_pretrained(tokenizer_dir)
    events = sum(counts.events)
    return {
        "events": events,
        "users": sum(counts.users),
        "items": len(tokenizer) - tokenizer.first_item_id,
        "windows": sum(counts.windows),
        "vocabulary_s": seconds,
        "vocabulary_events_per_s": events / seconds,
        "vocabulary_peak_rss_mib": peak_rss_mib(),
    }


def _model(tokenizer):
    import torch

    from modeling_peterrec.configuration_peterrec import PeterRecConfig
    from modeling_peterrec.model_types import pretraining_model_class

    torch.manual_seed(0)
    config = PeterRecConfig(vocab_size=len(tokenizer), **MODEL)
    model = pretraining_model_class(config)(config)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _train_steps(model, optimizer, batches) -> int:
    """Training steps on `batches`; returns the number of item events they held."""
    events = 0
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        events += int(batch["attention_mask"].sum())
    return events


def _batches(stream, collator, batch_size: int = BATCH_SIZE):
    rows = []
    for row in stream:
        rows.append(row)
        if len(rows) == batch_size:
            yield collator(rows)
            rows = []
    if rows:
        yield collator(rows)


def epoch_stage(folder: str, tokenizer_dir: str, model_steps: int) -> dict:
    from modeling_peterrec.data import InteractionLog, NextItemCollator, pretraining_stream
    from modeling_peterrec.tokenization_peterrec import ItemTokenizer

    tokenizer = ItemTokenizer.from_pretrained(tokenizer_dir)
    collator = NextItemCollator(tokenizer, WINDOW)
    stream = pretraining_stream(
        InteractionLog.from_patterns([folder]), tokenizer, WINDOW, shuffle_buffer_size=SHUFFLE_BUFFER
    )
    model, optimizer = _model(tokenizer)
    batches = _batches(stream, collator)
    _train_steps(model, optimizer, (next(batches) for _ in range(model_steps)))
    started = time.perf_counter()
    events = sum(int(batch["attention_mask"].sum()) for batch in batches)
    seconds = time.perf_counter() - started
    return {
        "epoch_window_events": events,
        "epoch_s": seconds,
        "data_path_events_per_s": events / seconds,
        "epoch_peak_rss_mib": peak_rss_mib(),
    }


def model_stage(folder: str, tokenizer_dir: str, model_steps: int) -> dict:
    from modeling_peterrec.data import InteractionLog, NextItemCollator, pretraining_stream
    from modeling_peterrec.tokenization_peterrec import ItemTokenizer

    tokenizer = ItemTokenizer.from_pretrained(tokenizer_dir)
    stream = pretraining_stream(InteractionLog.from_patterns([folder]), tokenizer, WINDOW)
    batches = list(_batches(stream.take(BATCH_SIZE * (model_steps + 1)), NextItemCollator(tokenizer, WINDOW)))
    model, optimizer = _model(tokenizer)
    _train_steps(model, optimizer, batches[:1])
    started = time.perf_counter()
    events = _train_steps(model, optimizer, batches[1:])
    seconds = time.perf_counter() - started
    return {"model_step_events_per_s": events / seconds, "model_steps": model_steps}


STAGES = {"vocabulary": vocabulary_stage, "epoch": epoch_stage, "model": model_stage}


def run_stage(stage: str, *arguments: str) -> dict:
    """One stage in a fresh interpreter, so that its peak RSS is its own."""
    command = [sys.executable, "-m", "benchmarks.streaming", "--stage", stage, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--num_items", type=int, default=200_000)
    parser.add_argument("--events_per_shard", type=int, default=2_000_000)
    parser.add_argument("--model_steps", type=int, default=5)
    parser.add_argument("--epoch_up_to", type=int, default=None, help="Skip the epoch stage above this size.")
    parser.add_argument("--work_dir", default="/tmp/peterrec-streaming-bench")
    parser.add_argument("--output", default=str(RESULTS_DIR / "streaming_cpu.json"))
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("stage_arguments", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        extra = [int(value) for value in args.stage_arguments[2:]]
        print(json.dumps(STAGES[args.stage](*args.stage_arguments[:2], *extra)))
        return

    from benchmarks.synthetic_log import write_log

    output = Path(args.output)
    # Sizes measured by an earlier run are kept unless measured again, so sizes can be run one at a time.
    earlier = json.loads(output.read_text())["rows"] if output.exists() else []
    rows = [row for row in earlier if row["target_events"] not in args.events]
    for events in args.events:
        folder = Path(args.work_dir) / f"log-{events}"
        tokenizer_dir = Path(args.work_dir) / f"tokenizer-{events}"
        started = time.perf_counter()
        written = write_log(
            folder,
            num_users=events // MEAN_LENGTH,
            num_items=args.num_items,
            mean_length=MEAN_LENGTH,
            num_shards=max(events // args.events_per_shard, 2),
        )
        row = {
            "target_events": events,
            "shards": len(written["files"]),
            "generate_s": time.perf_counter() - started,
            "log_mib": sum(Path(name).stat().st_size for name in written["files"]) / 2**20,
        }
        row.update(run_stage("vocabulary", str(folder), str(tokenizer_dir)))
        if args.epoch_up_to is None or events <= args.epoch_up_to:
            row.update(run_stage("epoch", str(folder), str(tokenizer_dir), str(args.model_steps)))
        row.update(run_stage("model", str(folder), str(tokenizer_dir), str(args.model_steps)))
        rows.append(row)
        shutil.rmtree(folder)
        shutil.rmtree(tokenizer_dir)
        rows.sort(key=lambda measured: measured["target_events"])
        output.write_text(json.dumps({"model": MODEL, "window": WINDOW, "rows": rows}, indent=2) + "\n")
        print(format_table([row], list(row)), flush=True)
    columns = [
        "events", "users", "items", "shards", "vocabulary_peak_rss_mib", "vocabulary_events_per_s",
        "epoch_peak_rss_mib", "data_path_events_per_s", "model_step_events_per_s",
    ]  # fmt: skip
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
