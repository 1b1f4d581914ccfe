"""CmnRec accuracy: next-item pretraining on ML-1M with each chunk rule against PeterRec at a matched parameter
budget (CmnRec, Section 5.2, Tables 2-3), through the project's `pretrain` pipeline.

Each model is trained by `training.pretrain` (tokenizer, windows of at most `--max_length` items, the fused full
softmax, Adam 1e-3) with validation every `--eval_steps` steps and early stopping on the validation MRR@5 of the
held-out last item (`--patience` evaluations without improvement), or until `--time_cap` seconds of training, then
evaluated on the test users: the held-out last item ranked over the whole item pool (MRR/HR/NDCG at 5 and 20), and
the full-ranking protocol with the user's earlier items excluded (HR@10, NDCG@10). PeterRec gets the hidden size of
CmnRec and the number of residual blocks whose total parameter count is closest.

One model per call, so the runs can share a machine; `--resume` continues a capped run from its newest checkpoint
(the same schedule and data order, as if the cap had been longer); `--table` gathers the results:

    python -m benchmarks.cmnrec_accuracy --model cmnrec-tsc --threads 1
    python -m benchmarks.cmnrec_accuracy --model cmnrec-tsc --threads 1 --resume
    python -m benchmarks.cmnrec_accuracy --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from modeling_peterrec.metrics import exclusion_mask, full_rank_of_positive, ranking_metrics
from modeling_peterrec.model_types import config_class, pretraining_model_class
from modeling_peterrec.registry import CHUNK_RULES, MODEL_TYPES
from modeling_peterrec.saving import load_backbone
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments, pretrain
from modeling_peterrec.training.datasets import held_out_datasets, load_splits
from tokenization import ItemTokenizer

from .common import RESULTS_DIR, environment, format_table

MODELS = (*(f"cmnrec-{rule}" for rule in CHUNK_RULES), "peterrec")
COLUMNS = [
    "model",
    "params",
    "steps",
    "epochs",
    "stopped_on",
    "train_s",
    "inference_s",
    "mrr@5",
    "hr@5",
    "ndcg@5",
    "mrr@20",
    "hr@20",
    "ndcg@20",
    "full_hr@10",
    "full_ndcg@10",
]


class TimeCap(TrainerCallback):
    """Stops training after `seconds`, evaluating and saving the last state so the best checkpoint can be it."""

    def __init__(self, seconds: float):
        self.seconds, self.started, self.hit = seconds, None, False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.started > self.seconds:
            self.hit = True
            control.should_training_stop = control.should_evaluate = control.should_save = True
        return control


def parameters(record: str, **fields) -> int:
    """Parameter count of `record`'s pretraining model with these configuration fields (built on the meta device)."""
    config = config_class(MODEL_TYPES[record])(**fields)
    with torch.device("meta"):
        return pretraining_model_class(config)(config).num_parameters()


def matched_dilations(budget: int, vocab_size: int, hidden_size: int) -> list[int]:
    """Dilations (1, 2, 4, 8, ... per block) of the PeterRec whose parameter count is closest to `budget`."""

    def dilations(blocks: int) -> list[int]:
        return [2 ** (layer % 4) for layer in range(2 * blocks)]

    def distance(blocks: int) -> int:
        count = parameters(
            "peterrec", vocab_size=vocab_size, hidden_size=hidden_size, dilations=dilations(blocks)
        )
        return abs(count - budget)

    return dilations(min(range(1, 9), key=distance))


@torch.no_grad()
def test_metrics(backbone_dir: str, args: PretrainArguments, batch_size: int = 256) -> dict[str, float]:
    """Whole-pool metrics at 5 and 20, full-ranking HR@10 / NDCG@10 with the user's earlier items excluded, and
    the inference time of the test users' last-position scores."""
    model, tokenizer = load_backbone(backbone_dir)
    model.eval()
    _, test = held_out_datasets(load_splits(args), tokenizer)
    rows = [ids[-args.max_length :] for ids in test["input_ids"]]
    whole, excluded, inference_s = [], [], 0.0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in batch])
        started = time.perf_counter()
        logits = model(input_ids=input_ids, logits_to_keep=2).logits[:, 0].float()
        inference_s += time.perf_counter() - started
        targets = input_ids[:, -1]
        logits[:, : tokenizer.first_item_id] = float("-inf")
        whole.append(full_rank_of_positive(logits, targets))
        seen = exclusion_mask([ids[:-1] for ids in batch], logits.shape[1])
        excluded.append(full_rank_of_positive(logits, targets, seen))
    metrics = ranking_metrics(torch.cat(whole), (5, 20))
    full = ranking_metrics(torch.cat(excluded), (10,))
    metrics.update({"full_hr@10": full["hr@10"], "full_ndcg@10": full["ndcg@10"], "inference_s": inference_s})
    return metrics


def run(model: str, options: argparse.Namespace) -> dict:
    rule = model.removeprefix("cmnrec-")
    fields = dict(
        hidden_size=options.hidden_size,
        max_length=options.max_length,
        pretraining_loss=options.pretraining_loss,
        num_sampled=options.num_sampled,
    )
    cmnrec = dict(
        model_type="cmnrec",
        memory_slots=options.memory_slots,
        attention_size=options.attention_size,
        embedding_size=options.hidden_size,
    )
    if model == "peterrec":
        # The budget: the chunked CmnRec's (its chunk attention included) on the same vocabulary.
        vocab_size = len(ItemTokenizer.from_sequences(load_splits(PretrainArguments())["train"]["items"]))
        tsc = PretrainArguments(**fields, **cmnrec, chunking="tsc")
        budget = parameters(
            "cmnrec",
            vocab_size=vocab_size,
            **{name: getattr(tsc, name) for name in MODEL_TYPES["cmnrec"].pretraining_fields},
        )
        fields["dilations"] = matched_dilations(budget, vocab_size, options.hidden_size)
    else:
        fields.update(cmnrec, chunking=rule)
    args = PretrainArguments(**fields)
    output_dir = Path(options.workdir) / model
    training_args = PeterRecTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=256,
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        save_strategy="steps",
        save_steps=options.eval_steps,
        early_stopping_patience=options.patience,
        disable_tqdm=True,
        seed=0,
        resume_from_checkpoint="last" if options.resume else None,
        restore_callback_states_from_checkpoint=options.resume,
    )
    earlier = json.loads(result_path(model).read_text()) if options.resume else {}
    cap = TimeCap(options.time_cap)
    summary = pretrain(args, training_args, callbacks=[cap])
    metrics = test_metrics(summary["backbone"], args)
    return {
        "model": model,
        "params": summary["num_parameters"],
        "vocab_size": summary["vocab_size"],
        "config": summary["config"],
        "steps": max((row.get("step", 0) for row in summary["log_history"]), default=0),
        "epochs": round(max((row.get("epoch", 0) for row in summary["log_history"]), default=0), 2),
        "stopped_on": "time cap" if cap.hit else "early stopping or epochs",
        "train_s": earlier.get("train_s", 0.0) + summary["train_runtime_s"],
        "resumed_at_steps": [*earlier.get("resumed_at_steps", []), earlier["steps"]] if earlier else [],
        "validation_mrr@5": summary["validation"]["mrr@5"],
        **metrics,
    }


def result_path(model: str) -> Path:
    return RESULTS_DIR / f"cmnrec_accuracy-{model}.json"


def table() -> str:
    rows = [json.loads(path.read_text()) for model in MODELS if (path := result_path(model)).is_file()]
    return format_table(rows, COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS)
    parser.add_argument("--table", action="store_true", help="print the table of the results written so far")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=50)
    parser.add_argument("--memory_slots", type=int, default=4)
    parser.add_argument("--attention_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--pretraining_loss",
        choices=("full_softmax", "sampled_softmax"),
        default="full_softmax",
        help="the training loss (evaluation always ranks the whole pool)",
    )
    parser.add_argument("--num_sampled", type=int, default=512)
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--eval_steps", type=int, default=150)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--time_cap", type=float, default=480, help="seconds of training at most")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", default="/tmp/cmnrec_accuracy", help="checkpoints and backbones")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the model's run in --workdir from its newest checkpoint (the same schedule and data order); "
        "the time cap counts from here, and train_s adds the earlier run's",
    )
    options = parser.parse_args()
    if options.table:
        print(table())
        return
    if options.threads:
        torch.set_num_threads(options.threads)
    row = run(options.model, options)
    row["environment"] = environment(torch.device("cpu"))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result_path(options.model).write_text(json.dumps(row, indent=2) + "\n")
    print(format_table([row], COLUMNS))


if __name__ == "__main__":
    main()
