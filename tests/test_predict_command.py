"""`peterrec predict` from file to file: the same results as recommend()/predict(), in every output format, from a
CSV, a Parquet file or a datasets folder; a file not sorted by user is refused."""

from __future__ import annotations

import csv
import json

import pytest

from modeling_peterrec import save_patch
from modeling_peterrec.inference import predict, recommend
from modeling_peterrec.predict_command import PredictArguments, run_predict
from tests.test_inference import HISTORIES, classification_model, next_item_model, tokenizer

USERS = [str(number) for number in (2, 5, 9, 10, 31)]  # numeric order: 9 before 10


def saved_backbone(folder):
    model = next_item_model()
    model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return model


def write_interactions(path, users=USERS, histories=HISTORIES):
    """One row per event, each user's events in reverse time order (the reader sorts them)."""
    rows = [
        {"user": user, "item": item, "timestamp": time}
        for user, history in zip(users, histories, strict=True)
        for time, item in reversed(list(enumerate(history)))
    ]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["user", "item", "timestamp"])
        writer.writeheader()
        writer.writerows(rows)


def read_output(path):
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("source", "target"), [(".csv", ".parquet"), (".parquet", ".jsonl"), (".csv", ".csv")]
)
def test_recommendations_round_trip(tmp_path, source, target):
    model = saved_backbone(tmp_path / "backbone")
    write_interactions(tmp_path / f"users{source}")
    args = PredictArguments(
        str(tmp_path / "backbone"), str(tmp_path / f"users{source}"), str(tmp_path / f"out{target}"), top_k=3
    )
    args.batch_size, args.progress = 2, False
    summary = run_predict(args)
    assert summary == {"users": 5, "rows": 15, "output_file": str(tmp_path / f"out{target}")}
    rows = read_output(tmp_path / f"out{target}")
    expected = recommend(model, tokenizer(), HISTORIES, k=3)
    for position, (user, result) in enumerate(zip(USERS, expected, strict=True)):
        mine = rows[3 * position : 3 * position + 3]
        assert [str(row["user"]) for row in mine] == [user] * 3
        assert [row["item"] for row in mine] == result.items
        assert [int(row["rank"]) for row in mine] == [1, 2, 3]
        assert [float(row["score"]) for row in mine] == pytest.approx(result.scores, abs=1e-5)


def test_predictions_round_trip_with_a_patch(tmp_path):
    saved_backbone(tmp_path / "backbone")
    model = classification_model(next_item_model())
    save_patch(model, tmp_path / "patch")
    write_interactions(tmp_path / "users.csv")
    args = PredictArguments(
        str(tmp_path / "backbone"),
        str(tmp_path / "users.csv"),
        str(tmp_path / "out.jsonl"),
        patch=str(tmp_path / "patch"),
    )
    args.progress = False
    run_predict(args)
    rows = read_output(tmp_path / "out.jsonl")
    for row, expected in zip(rows, predict(model, tokenizer(), HISTORIES), strict=True):
        assert row["label"] == expected.label
        assert row["score"] == pytest.approx(expected.score, abs=1e-6)
        assert row["probability_F"] == pytest.approx(expected.probabilities["F"], abs=1e-6)


def test_datasets_folder_input(tmp_path):
    from datasets import Dataset

    model = saved_backbone(tmp_path / "backbone")
    Dataset.from_dict({"user_id": USERS, "items": HISTORIES}).save_to_disk(str(tmp_path / "data"))
    args = PredictArguments(
        str(tmp_path / "backbone"), str(tmp_path / "data"), str(tmp_path / "out.csv"), top_k=1
    )
    args.progress = False
    run_predict(args)
    rows = read_output(tmp_path / "out.csv")
    assert [row["item"] for row in rows] == [
        result.items[0] for result in recommend(model, tokenizer(), HISTORIES, k=1)
    ]


def test_a_file_not_sorted_by_user_is_refused(tmp_path):
    saved_backbone(tmp_path / "backbone")
    write_interactions(tmp_path / "users.csv", users=["2", "10", "9", "11", "12"])
    args = PredictArguments(
        str(tmp_path / "backbone"), str(tmp_path / "users.csv"), str(tmp_path / "out.csv")
    )
    args.progress = False
    with pytest.raises(ValueError, match="not sorted by user"):
        run_predict(args)
    assert not (tmp_path / "out.csv").exists()
