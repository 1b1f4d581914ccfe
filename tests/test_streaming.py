"""Streaming pretraining from sorted shard files (`data.streaming`, `training.streaming`) against the in-memory path."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from modeling_peterrec.data import (
    InteractionLog,
    NextItemCollator,
    count_log,
    files_of_process,
    leave_one_out,
    load_interactions,
    pretraining_stream,
)
from modeling_peterrec.tokenization_peterrec import ItemTokenizer
from modeling_peterrec.training.datasets import held_out_datasets, pretraining_windows
from modeling_peterrec.training.streaming import stream_schedule

WINDOW, STRIDE = 8, 3


def write_log(folder: Path, num_users: int = 60, num_shards: int = 3, item_of=None, suffix: str = "parquet"):
    """A small log as `num_shards` files of contiguous numeric users, each sorted by user; a user's rows are in
    shuffled time order with ties (the reader sorts them stably by time). Also returns the rows as one table."""
    rng = random.Random(0)
    item_of = item_of or (lambda user, k: f"i{min(int(rng.paretovariate(1.0)), 40)}")
    rows = {"user": [], "item": [], "timestamp": []}
    for user in range(num_users):
        length = rng.choice([1, 2, 3, 5, 8, 13, 30])
        events = [(rng.randrange(10), item_of(user, k)) for k in range(length)]
        order = list(range(length))
        rng.shuffle(order)
        for position in order:
            rows["user"].append(user)
            rows["item"].append(events[position][1])
            rows["timestamp"].append(events[position][0])
    table = pa.table(rows)
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [round(num_users * shard / num_shards) for shard in range(num_shards + 1)]
    users = table.column("user").to_pylist()
    for shard in range(num_shards):
        start = next(i for i, user in enumerate(users) if user >= bounds[shard])
        stop = next((i for i, user in enumerate(users) if user >= bounds[shard + 1]), len(users))
        part = table.slice(start, stop - start)
        path = folder / f"part-{shard}.{suffix}"
        pq.write_table(part, path) if suffix == "parquet" else pa_csv.write_csv(part, path)
    return table


@pytest.fixture
def log_and_table(tmp_path):
    table = write_log(tmp_path / "log")
    pa_csv.write_csv(table, tmp_path / "whole.csv")
    return InteractionLog.from_patterns([tmp_path / "log"]), load_interactions(tmp_path / "whole.csv")


def stream_rows(stream) -> list[list[int]]:
    return [list(row["input_ids"]) for row in stream]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_stream_yields_the_in_memory_windows_in_the_same_order(tmp_path, suffix):
    table = write_log(tmp_path / "log", suffix=suffix)
    pa_csv.write_csv(table, tmp_path / "whole.csv")
    splits = load_interactions(tmp_path / "whole.csv")
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"], min_count=2)
    expected = pretraining_windows(splits["train"], tokenizer, WINDOW, STRIDE)["input_ids"]
    log = InteractionLog.from_patterns([str(tmp_path / "log" / f"*.{suffix}")])
    found = stream_rows(pretraining_stream(log, tokenizer, WINDOW, STRIDE))
    assert len(expected) > 60 and any(len(row) == WINDOW for row in expected)
    assert found == expected
    assert sum(count_log(log, WINDOW, STRIDE).windows) == len(expected)


@pytest.mark.parametrize(("min_count", "max_items"), [(1, None), (3, None), (1, 10), (2, 5)])
def test_vocabulary_of_one_counting_pass_equals_the_in_memory_one(log_and_table, min_count, max_items):
    log, splits = log_and_table
    in_memory = ItemTokenizer.from_sequences(
        splits["train"]["items"], min_count=min_count, max_items=max_items
    )
    streamed = ItemTokenizer.from_counts(count_log(log, WINDOW).item_counts, min_count, max_items)
    assert streamed.get_vocab() == in_memory.get_vocab()
    assert max_items is None or len(streamed) == max_items + streamed.first_item_id


def test_processes_read_disjoint_files_that_cover_the_log(tmp_path):
    write_log(tmp_path / "log", num_shards=5)
    log = InteractionLog.from_patterns([tmp_path / "log"])
    tokenizer = ItemTokenizer.from_counts(count_log(log, WINDOW).item_counts)
    stream = pretraining_stream(log, tokenizer, WINDOW, STRIDE)
    windows = count_log(log, WINDOW, STRIDE).windows
    seen = []
    for rank in range(2):
        # What accelerate does with a `datasets.IterableDataset` when `dispatch_batches=False`.
        own = stream_rows(stream.shard(num_shards=2, index=rank))
        files = [log.files[index] for index in files_of_process(len(log.files), 2, rank)]
        assert own == stream_rows(pretraining_stream(InteractionLog(tuple(files)), tokenizer, WINDOW, STRIDE))
        assert len(own) == sum(windows[index] for index in files_of_process(len(log.files), 2, rank))
        seen.append(own)
    assert [len(files_of_process(5, 2, rank)) for rank in range(2)] == [3, 2]
    assert seen[0] + seen[1] == stream_rows(stream)
    # Shuffled, the files are dealt out in a seeded order: still disjoint, still covering, still whole files.
    shuffled = pretraining_stream(log, tokenizer, WINDOW, STRIDE, shuffle_buffer_size=16, seed=5)
    parts = [stream_rows(shuffled.shard(num_shards=2, index=rank)) for rank in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(seen[0] + seen[1])
    for path in log.files:
        rows = stream_rows(pretraining_stream(InteractionLog((path,)), tokenizer, WINDOW, STRIDE))
        assert any(all(row in part for row in rows) for part in parts)


def test_stream_state_dict_resumes_at_the_same_window(log_and_table):
    log, splits = log_and_table
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])
    stream = pretraining_stream(log, tokenizer, WINDOW, STRIDE)
    expected = stream_rows(stream)
    rows = iter(stream)
    for _ in range(25):
        next(rows)
    state = stream.state_dict()
    resumed = pretraining_stream(log, tokenizer, WINDOW, STRIDE)
    resumed.load_state_dict(state)
    assert stream_rows(resumed) == expected[25:]


def test_shuffled_stream_is_a_seeded_permutation(log_and_table):
    log, splits = log_and_table
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])
    plain = stream_rows(pretraining_stream(log, tokenizer, WINDOW, STRIDE))
    shuffled = stream_rows(pretraining_stream(log, tokenizer, WINDOW, STRIDE, shuffle_buffer_size=16, seed=1))
    again = stream_rows(pretraining_stream(log, tokenizer, WINDOW, STRIDE, shuffle_buffer_size=16, seed=1))
    assert shuffled == again and shuffled != plain and sorted(shuffled) == sorted(plain)


@pytest.mark.slow
def test_trainer_resume_continues_at_the_same_batch(log_and_table, tmp_path):
    from transformers import Trainer, TrainingArguments

    from modeling_peterrec.configuration_peterrec import PeterRecConfig
    from modeling_peterrec.model_types import pretraining_model_class

    log, splits = log_and_table
    tokenizer = ItemTokenizer.from_sequences(splits["train"]["items"])

    def run(resume: str | None) -> list[list[int]]:
        config = PeterRecConfig(vocab_size=len(tokenizer), hidden_size=8, dilations=[1, 2])
        model = pretraining_model_class(config)(config)
        seen: list[list[int]] = []
        model.register_forward_pre_hook(
            lambda module, args, kwargs: seen.extend(kwargs["input_ids"].tolist()), with_kwargs=True
        )
        arguments = TrainingArguments(
            output_dir=str(tmp_path / "run"), max_steps=6, save_steps=3, per_device_train_batch_size=4,
            report_to="none", disable_tqdm=True, seed=3, use_cpu=True,
        )  # fmt: skip
        stream = pretraining_stream(log, tokenizer, WINDOW, STRIDE, shuffle_buffer_size=16, seed=3)
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=stream,
            data_collator=NextItemCollator(tokenizer, WINDOW),
        )
        trainer.train(resume_from_checkpoint=resume)
        return seen

    uninterrupted = run(None)
    resumed = run(str(tmp_path / "run" / "checkpoint-3"))
    assert len(uninterrupted) == 24 and resumed == uninterrupted[12:]


def test_stream_schedule_counts_epochs_from_the_counted_windows():
    from transformers import TrainingArguments

    arguments = TrainingArguments(
        output_dir="unused",
        per_device_train_batch_size=4,
        num_train_epochs=2.0,
        use_cpu=True,
        eval_strategy="epoch",
        save_strategy="epoch",
    )
    schedule = stream_schedule(arguments, 20)
    assert schedule.max_steps == 2 * 5  # one process: 20 windows in batches of 4
    assert schedule.eval_strategy == "steps" and schedule.eval_steps == 5
    assert schedule.accelerator_config.dispatch_batches is False


def test_held_out_sample_is_the_first_users_leave_one_out_rows(tmp_path):
    from modeling_peterrec.data import first_histories, pretraining_dataset

    table = write_log(tmp_path / "log")
    log = InteractionLog.from_patterns([tmp_path / "log"])
    users, histories = first_histories(log, 5)
    pa_csv.write_csv(table, tmp_path / "whole.csv")
    whole = load_interactions(tmp_path / "whole.csv")
    assert users == ["0", "1", "2", "3", "4"]
    tokenizer = ItemTokenizer.from_sequences(whole["train"]["items"])
    validation, _ = held_out_datasets(pretraining_dataset(users, histories), tokenizer)
    expected = [row for row in whole["validation"] if row["user_id"] in users]
    assert validation["input_ids"] == [tokenizer.encode_items(row["items"]) for row in expected]


def test_an_unsorted_shard_stops_the_stream_with_the_file_and_row(tmp_path):
    pq.write_table(
        pa.table({"user": [1, 1, 2, 1], "item": ["a", "b", "c", "d"], "timestamp": [1, 2, 3, 4]}),
        tmp_path / "bad.parquet",
    )
    log = InteractionLog.from_patterns([tmp_path / "bad.parquet"])
    with pytest.raises(ValueError, match=r"bad.parquet is not sorted by user: row 4 has user '1' after '2'"):
        count_log(log, WINDOW)


def test_a_missing_column_or_file_is_named(tmp_path):
    pq.write_table(pa.table({"user": [1], "product": ["a"], "timestamp": [1]}), tmp_path / "part.parquet")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['item'\]"):
        count_log(InteractionLog.from_patterns([tmp_path]), WINDOW)
    with pytest.raises(FileNotFoundError, match="No file matches"):
        InteractionLog.from_patterns([str(tmp_path / "*.csv")])
    with pytest.raises(ValueError, match="cannot give each of 4 processes its own"):
        files_of_process(3, 4, 0)


@pytest.mark.slow
def test_two_processes_stream_disjoint_shards_that_cover_the_log(tmp_path):
    # Every user's items are its own (`<user>_<k>`), so a window names its user; equal shards and one epoch.
    write_log(tmp_path / "log", num_users=32, num_shards=4, item_of=lambda user, k: f"u{user}_{k % 5}")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "examples/accelerate/ddp_cpu_2proc.yaml",
        "-m", "tests.streaming_launch",
        "--train_files", str(tmp_path / "log"), "--hidden_size", "8", "--dilations", "1", "2", "--max_length", "8",
        "--window_stride", "3", "--num_train_epochs", "1", "--per_device_train_batch_size", "1000",
        "--shuffle_buffer_size", "8", "--eval_users", "8", "--disable_tqdm", "true", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The config file's `use_cpu: true` with `--use_cpu true` (TrainingArguments), no ACCELERATE_USE_CPU needed.
    environment.pop("ACCELERATE_USE_CPU", None)
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [set(json.loads((tmp_path / "out" / f"seen-{rank}.json").read_text())) for rank in range(2)]
    log = InteractionLog.from_patterns([tmp_path / "log"])
    users_of_file = [
        {f"u{user}" for user, history in log.histories([path]) if len(leave_one_out(history)["train"]) >= 2}
        for path in log.files
    ]  # the users with a window: two training items or more
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set().union(*users_of_file)
    for users in users_of_file:
        assert users <= seen[0] or users <= seen[1]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    windows = count_log(log, 8, 3).windows
    assert metrics["processes"] == 2 and metrics["train_windows"] == sum(windows)


def test_train_files_and_data_dir_are_exclusive():
    from modeling_peterrec.training import PretrainArguments

    with pytest.raises(ValueError, match="not both"):
        PretrainArguments(train_files=["logs"], data_dir="saved")
