"""Fine-tune a pretrained PeterRec backbone for one user-profile classification task, on the public API only.

A script to read top to bottom and adapt, in the manner of transformers' `examples/pytorch/language-modeling/
run_clm.py`: arguments -> data -> tokenizer -> collator -> model with patches (Section 3.3) -> `Trainer` -> patch
folder -> (optionally) the Hub.

    python examples/finetune_minimal.py --backbone runs/pretrain/backbone --task genest --output_dir runs/genest
    python examples/finetune_minimal.py --backbone runs/pretrain/backbone --data_dir my_tasks/gender \
        --task gender --output_dir runs/gender --num_train_epochs 5 --eval_strategy epoch
    python examples/finetune_minimal.py config.json        # the same options, read from a JSON file

The data is a MovieLens task (`--task genest|ageest|lifeest|lifestatus`, built on first use) or your own
`DatasetDict` with `items` and `label` columns and train/validation/test splits, saved with `save_to_disk`
(`modeling_peterrec.data.load_labels` reads one from CSV files). `examples/finetune.py` runs the packaged pipeline
instead (cold-start ranking too, learning curves, checkpoint selection).
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import load_from_disk
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from modeling_peterrec import METHODS, prepare_for_transfer, push_patch_to_hub, save_patch
from modeling_peterrec.data import SequenceClassificationCollator, load_task, tokenize_dataset
from modeling_peterrec.metrics import make_compute_metrics
from tokenization import ItemTokenizer

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """The pretrained backbone, how it is fine-tuned, and where the patch goes."""

    backbone: str = field(
        metadata={"help": "Backbone folder (written by `peterrec pretrain`) or Hub repo id."}
    )
    method: str = field(default="peterrec", metadata={"help": f"One of {', '.join(METHODS)}."})
    insertion: str = field(default="serial_two", metadata={"help": "Where patches go (Figure 3)."})
    bottleneck_size: int | None = field(
        default=None, metadata={"help": "Patch bottleneck (default hidden/8)."}
    )
    patch_repo_id: str | None = field(
        default=None, metadata={"help": "Also push the patch to this Hub repo."}
    )
    backbone_repo_id: str | None = field(
        default=None, metadata={"help": "The backbone's Hub repo id, named by the pushed patch's card."}
    )


@dataclass
class DataArguments:
    """Which task's data, and how much of each history the model reads."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "MovieLens task (default genest), or with --data_dir your task's name: the patch's name."
        },
    )
    dataset: str = field(default="ml-1m", metadata={"help": "MovieLens release: ml-1m or ml-100k."})
    data_dir: str | None = field(default=None, metadata={"help": "A DatasetDict saved with save_to_disk."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "MovieLens cache (default ~/.cache/peterrec)."}
    )
    max_length: int = field(
        default=100, metadata={"help": "The most recent items the model reads, with [TCL]."}
    )

    def __post_init__(self) -> None:
        # Your data has no default name: a patch named after a MovieLens task would be loaded as one.
        if self.task is None and self.data_dir is not None:
            raise ValueError(
                "--task is required with --data_dir: your task's name, under which the patch is saved."
            )
        self.task = self.task or "genest"


def main() -> None:
    # 1. Arguments: flags, or one JSON file holding the same options.
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(Path(sys.argv[1]).resolve())
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    # 2. Data: a DatasetDict with train, validation and test splits of (items, label) rows.
    if data_args.data_dir is not None:
        raw = load_from_disk(data_args.data_dir)
    else:
        raw = load_task(data_args.dataset, data_args.task, data_args.cache_dir)
    label_names = raw["train"].features["label"].names

    # 3. Tokenizer: the backbone's own item vocabulary; it knows where its [TCL] token goes (Figure 2).
    tokenizer = ItemTokenizer.from_pretrained(model_args.backbone)
    splits = tokenize_dataset(raw, tokenizer).select_columns(["input_ids", "label"])

    # 4. Collator: left-padded batches of the most recent items, with [TCL] where the backbone reads it.
    collator = SequenceClassificationCollator(
        tokenizer, data_args.max_length, tcl_position=tokenizer.tcl_position
    )

    # 5. Model: the pretrained backbone, with patches and a classification head, and only those trainable.
    config = AutoConfig.from_pretrained(model_args.backbone)
    auto_class = AutoModelForCausalLM if config.is_causal else AutoModelForMaskedLM
    model, report = prepare_for_transfer(
        auto_class.from_pretrained(model_args.backbone),
        method=model_args.method,
        task=data_args.task,
        head="classification",
        label_names=label_names,
        insertion=model_args.insertion,
        bottleneck_size=model_args.bottleneck_size,
        seed=training_args.seed,
    )
    logger.info(report)

    # 6. Training, then the test split once.
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics("classification"),
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_metrics("train", train_result.metrics)
    test_metrics = trainer.evaluate(splits["test"], metric_key_prefix="test")
    trainer.save_metrics("test", test_metrics)

    # 7. The patch folder: only what the method trained, with a model card holding the test metrics.
    if trainer.is_world_process_zero():
        card_metrics = {name: test_metrics[f"test_{name}"] for name in ("accuracy", "macro_f1")}
        dataset = data_args.data_dir or f"{data_args.dataset}/{data_args.task}"
        folder = save_patch(
            model, Path(training_args.output_dir) / "patch", metrics=card_metrics, dataset=dataset
        )
        print(
            json.dumps(
                {"patch": str(folder), **card_metrics, "trainable_parameters": report.trainable_parameters}
            )
        )

        # 8. Optionally, the Hub: the patch repo's card names the backbone repo it was trained on.
        if model_args.patch_repo_id is not None:
            revision = push_patch_to_hub(
                model,
                model_args.patch_repo_id,
                backbone_repo_id=model_args.backbone_repo_id,
                metrics=card_metrics,
                dataset=dataset,
            )
            print(f"Pushed {model_args.patch_repo_id} at revision {revision}")


if __name__ == "__main__":
    main()
