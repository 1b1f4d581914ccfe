"""Users' own fixed splits: a split column of the label table or the interaction log is honoured instead of the
seeded split."""

from __future__ import annotations

import csv

import pytest

from modeling_peterrec.data import load_interactions, load_labels


def write(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


SPLITS = {"u1": "train", "u2": "test", "u3": "train", "u4": "validation", "u5": "test"}


def interactions(tmp_path, with_split=False):
    rows = [
        [user, f"item{(n * 3 + k) % 7}", k] + ([SPLITS[user]] if with_split else [])
        for n, user in enumerate(SPLITS)
        for k in range(4)
    ]
    header = ["user", "item", "timestamp"] + (["split"] if with_split else [])
    return write(tmp_path / "events.csv", header, rows)


def test_label_split_column_is_honoured(tmp_path):
    labels = write(
        tmp_path / "labels.csv",
        ["user", "label", "split"],
        [[u, "a" if i % 2 else "b", s] for i, (u, s) in enumerate(SPLITS.items())],
    )
    data = load_labels(labels, interactions(tmp_path), split_column="split")
    for split in ("train", "validation", "test"):
        assert sorted(data[split]["user_id"]) == sorted(u for u, s in SPLITS.items() if s == split)
    seeded = load_labels(labels, interactions(tmp_path))
    assert [len(seeded[split]) for split in ("train", "validation", "test")] == [
        4,
        0,
        1,
    ]  # 70/3/27 of 5 users


def test_interaction_split_column_is_honoured(tmp_path):
    data = load_interactions(interactions(tmp_path, with_split=True), split_column="split")
    for split in ("train", "validation", "test"):
        assert sorted(data[split]["user_id"]) == sorted(u for u, s in SPLITS.items() if s == split)
        assert all(len(items) == 4 for items in data[split]["items"])  # whole histories


def test_bad_split_values_are_listed(tmp_path):
    path = write(
        tmp_path / "events.csv",
        ["user", "item", "timestamp", "split"],
        [["u1", "a", 0, "train"], ["u1", "b", 1, "test"], ["u2", "a", 0, "holdout"]],
    )
    with pytest.raises(ValueError, match=r"line 3: user 'u1' is in split 'train'.*line 4: split 'holdout'"):
        load_interactions(path, split_column="split")
