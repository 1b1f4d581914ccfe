"""`examples/finetune_minimal.py` runs end to end on a tiny backbone and a saved DatasetDict, so it cannot rot."""

import json
import random
import runpy
import sys
from pathlib import Path

import torch

from modeling_peterrec import PeterRecConfig, PeterRecForNextItemPrediction, load_patch
from modeling_peterrec.data import classification_dataset
from tokenization import ItemTokenizer

EXAMPLE = Path(__file__).parents[1] / "examples" / "finetune_minimal.py"


def tiny_backbone(folder: Path, histories: list[list[str]]) -> None:
    """A randomly initialised causal backbone and its tokenizer, saved as `peterrec pretrain` would."""
    tokenizer = ItemTokenizer.from_sequences(histories, tcl_position="end")
    config = PeterRecConfig(vocab_size=len(tokenizer), hidden_size=16, dilations=[1, 2], is_causal=True)
    torch.manual_seed(0)
    PeterRecForNextItemPrediction(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_finetune_minimal_trains_saves_and_pushes_a_patch(tmp_path, monkeypatch, local_hub, capsys):
    rng = random.Random(0)
    users = [f"u{i}" for i in range(60)]
    labels = [i % 2 for i in range(60)]
    histories = [
        [f"i{rng.randrange(10) + 10 * label}" for _ in range(rng.randint(3, 12))] for label in labels
    ]
    classification_dataset(users, histories, labels, ["a", "b"]).save_to_disk(str(tmp_path / "data"))
    tiny_backbone(tmp_path / "backbone", histories)

    config = {
        "backbone": str(tmp_path / "backbone"),
        "data_dir": str(tmp_path / "data"),
        "task": "gender",
        "max_length": 12,
        "output_dir": str(tmp_path / "out"),
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "patch_repo_id": "team/gender-patch",
        "backbone_repo_id": "team/backbone",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path / "config.json")])
    runpy.run_path(str(EXAMPLE), run_name="__main__")

    printed = capsys.readouterr().out
    result = json.loads(next(line for line in printed.splitlines() if line.startswith('{"patch"')))
    assert 0.0 <= result["accuracy"] <= 1.0
    test_metrics = json.loads((tmp_path / "out" / "test_results.json").read_text())
    assert test_metrics["test_accuracy"] == result["accuracy"]
    assert "Pushed team/gender-patch" in printed

    inputs = {"input_ids": torch.tensor([[5, 6, 7, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    logits = []
    for source in (tmp_path / "out" / "patch", "team/gender-patch"):
        model = load_patch(
            source, PeterRecForNextItemPrediction.from_pretrained(tmp_path / "backbone")
        ).eval()
        assert (model.patch_config.task, model.patch_config.label_names) == ("gender", ["a", "b"])
        with torch.no_grad():
            logits.append(model(**inputs).logits)
    assert torch.equal(*logits)
