"""Streaming pretraining as `tests/test_streaming.py` launches it under `accelerate launch`: the `pretrain`
pipeline on `--train_files`, with every process writing the users of the windows it trained on to
`<output_dir>/seen-<rank>.json`.

    accelerate launch --multi_gpu --num_processes 2 -m tests.streaming_launch --train_files LOG --output_dir OUT
"""

import json
import sys
from pathlib import Path

from transformers import TrainerCallback

from modeling_peterrec.cli import _end_process_group, parse_arguments
from modeling_peterrec.training import PeterRecTrainingArguments, PretrainArguments
from modeling_peterrec.training.pipelines import pretrain


class RecordUsers(TrainerCallback):
    """Records the user of every training window: the test log's items are named `<user>_<k>`."""

    def __init__(self):
        self.users: set[str] = set()
        self.tokenizer = None

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.tokenizer = processing_class

        def record(module, positional, keyword):
            if module.training:
                for ids in keyword["input_ids"].tolist():
                    tokens = self.tokenizer.convert_ids_to_tokens([i for i in ids if i >= 4])
                    self.users.update(token.split("_")[0] for token in tokens)

        model.register_forward_pre_hook(record, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"seen-{args.process_index}.json"
        path.write_text(json.dumps(sorted(self.users)))


if __name__ == "__main__":
    pretrain_args, training_args = parse_arguments(
        [PretrainArguments, PeterRecTrainingArguments], sys.argv[1:], "streaming_launch"
    )
    try:
        pretrain(pretrain_args, training_args, callbacks=[RecordUsers()])
    finally:
        _end_process_group()  # as the `peterrec` command does: no abort at exit from live communication threads
