"""Fine-tune a pretrained PeterRec backbone for one task with one method (Section 3.3 of the paper).

    python examples/finetune.py --backbone runs/backbone/backbone --task genest --method peterrec \
        --output_dir runs/genest-peterrec
    python examples/finetune.py --backbone runs/backbone/backbone --task coldrec --method fine_all \
        --output_dir runs/coldrec-fineall

Tasks: genest, ageest, lifeest, lifestatus (classification: accuracy, macro-F1) and coldrec (ranking: HR@k, MRR@k,
NDCG@k against 99 sampled negatives, and by full ranking on the test split). Methods: peterrec, fine_all,
fine_cls, fine_last1, fine_last2, peter_zero, fine_zero. Writes `<output_dir>/metrics.json` (with trainable and
total parameters and the patch size), `<output_dir>/learning_curve.png` and the patch folder `<output_dir>/patch`.
"""

import json

from transformers import HfArgumentParser

from modeling_peterrec import keep_freed_memory
from modeling_peterrec.training import FinetuneArguments, PeterRecTrainingArguments, finetune


def main() -> None:
    keep_freed_memory()  # tensors stay in the heap between steps (docs/performance.md)
    parser = HfArgumentParser((FinetuneArguments, PeterRecTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    summary = finetune(args, training_args)
    if training_args.process_index == 0:
        keys = ("trainable_parameters", "total_parameters", "patch_size_bytes", "test", "test_full_ranking")
        print(json.dumps({key: summary[key] for key in keys if key in summary}, indent=2))
        print(f"Patch saved to {summary['patch']}")


if __name__ == "__main__":
    main()
