"""Evaluate a backbone (held-out last item over the whole item pool) or a backbone with a patch (task metrics).

    python examples/evaluate.py --backbone runs/backbone/backbone --task pretrain_source --output_dir runs/eval
    python examples/evaluate.py --backbone runs/backbone/backbone --patch runs/genest-peterrec/patch \
        --output_dir runs/eval-genest
"""

import json

from transformers import HfArgumentParser

from modeling_peterrec.training import EvaluateArguments, PeterRecTrainingArguments, evaluate


def main() -> None:
    parser = HfArgumentParser((EvaluateArguments, PeterRecTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    summary = evaluate(args, training_args)
    if training_args.process_index == 0:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
