"""PeterRec for the Hugging Face ecosystem: configuration, models, transfer, patch files and serving.

Where each concept lives (one job per file):

- `registry.py`: one record per fine-tuning method, patch insertion, task kind and readout.
- `configuration_peterrec.py`, `modeling_peterrec.py`, `loss_peterrec.py`: the model family (the paper).
- `tokenization_peterrec.py`: the item tokenizer (`[PAD]` `[UNK]` `[MASK]` `[TCL]`), re-exported by `tokenization/`.
- `patch_config.py`: the one description of a task patch (`patch_config.json`) and its format versions.
- `transfer.py`: `prepare_for_transfer` (Section 3.3): heads, patches, frozen weights, trainable counts.
- `saving.py`: patch folders: save, read, check, attach, push.
- `serving.py`: `MultiTaskPeterRec`, many tasks on one backbone.
- `inference.py`: `recommend` and `predict`, item names in, items or labels out.
- `predict_command.py`: `run_predict`, file-to-file batch prediction streamed a batch of users at a time.
- `export.py`: `torch.export` / ONNX programs and the serving folder (docs/serving.md).
- `_io.py`: crash-safe writes of files and folders.
"""

import transformers
from transformers import AutoConfig, AutoTokenizer

from . import modeling_peterrec
from .configuration_peterrec import INSERTION_MODES, PeterRecConfig
from .inference import Prediction, Recommendations, predict, recommend
from .modeling_peterrec import (
    AUTO_CLASSES,
    ModelPatch,
    PeterRecForItemRanking,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecForSequenceClassification,
    PeterRecModel,
    PeterRecPreTrainedModel,
)
from .patch_config import PatchConfig
from .registry import INSERTIONS, METHODS, READOUTS, TASK_KINDS
from .saving import load_patch, push_patch_to_hub, save_patch
from .serving import MultiTaskPeterRec
from .tokenization_peterrec import ItemTokenizer, UnknownItems
from .transfer import TransferReport, prepare_for_transfer

# For the installed package: Auto classes resolve model_type "peterrec".
AutoConfig.register("peterrec", PeterRecConfig, exist_ok=True)
AutoTokenizer.register(PeterRecConfig, fast_tokenizer_class=ItemTokenizer, exist_ok=True)
for auto_name, model_name in AUTO_CLASSES.items():
    getattr(transformers, auto_name).register(
        PeterRecConfig, getattr(modeling_peterrec, model_name), exist_ok=True
    )

# For trust_remote_code: save_pretrained copies the code files next to the weights and writes `auto_map`.
PeterRecConfig.register_for_auto_class()
ItemTokenizer.register_for_auto_class("AutoTokenizer")
for auto_name, model_name in AUTO_CLASSES.items():
    getattr(modeling_peterrec, model_name).register_for_auto_class(auto_name)

__all__ = [
    "INSERTIONS",
    "INSERTION_MODES",
    "METHODS",
    "READOUTS",
    "TASK_KINDS",
    "MultiTaskPeterRec",
    "Prediction",
    "Recommendations",
    "predict",
    "recommend",
    "PatchConfig",
    "TransferReport",
    "load_patch",
    "prepare_for_transfer",
    "push_patch_to_hub",
    "save_patch",
    "ItemTokenizer",
    "UnknownItems",
    "ModelPatch",
    "PeterRecConfig",
    "PeterRecForItemRanking",
    "PeterRecForMaskedItemPrediction",
    "PeterRecForNextItemPrediction",
    "PeterRecForSequenceClassification",
    "PeterRecModel",
    "PeterRecPreTrainedModel",
]
