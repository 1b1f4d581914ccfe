"""Pretrain a PeterRec backbone with the Hugging Face Trainer (Section 3.2 of the paper).

    python examples/pretrain.py --task pretrain_source --output_dir runs/backbone
    python examples/pretrain.py --objective masked --hidden_size 64 --dilations 1 2 4 8 --output_dir runs/grec
    accelerate launch --multi_gpu --num_processes 2 examples/pretrain.py --output_dir runs/backbone

Defaults are the paper's: hidden size 256, dilations [1, 2, 4, 8] x 4, Adam with learning rate 1e-3. Every
`TrainingArguments` option works (`--num_train_epochs`, `--resume_from_checkpoint last`, ...). Writes
`<output_dir>/metrics.json`, `<output_dir>/learning_curve.png` and the backbone folder `<output_dir>/backbone`.
"""

import json

from transformers import HfArgumentParser

from modeling_peterrec import keep_freed_memory
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments, pretrain


def main() -> None:
    keep_freed_memory()  # tensors stay in the heap between steps (docs/performance.md)
    parser = HfArgumentParser((PretrainArguments, PeterRecTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    summary = pretrain(args, training_args)
    if training_args.process_index == 0:
        print(json.dumps({"validation": summary["validation"], "test": summary["test"]}, indent=2))
        print(f"Backbone saved to {summary['backbone']}")


if __name__ == "__main__":
    main()
