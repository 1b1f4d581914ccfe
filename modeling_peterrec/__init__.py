"""PeterRec for the Hugging Face ecosystem: configuration, models, transfer, patch files and serving.

Where each concept lives (one job per file):

- `registry.py`: one record per fine-tuning method, patch insertion, patch type, patch target (user or item
  encoder), item-encoder PEFT method, task kind and readout.
- `adapters.py`: the patch types' modules (Adapter4Rec's adapters beside PeterRec's model patch) and their settings.
- `configuration_peterrec.py`, `modeling_peterrec.py`, `loss_peterrec.py`: the model family (the paper).
- `configuration_cmnrec.py`, `modeling_cmnrec.py`: CmnRec, the family's chunk-accelerated memory network.
- `configuration_sasrec.py`, `modeling_sasrec.py`: SASRec, a causal self-attention (Transformer) user model, and
  its task heads.
- `configuration_item_text.py`, `item_text.py`, `small_text_encoder.py`: items from their text (TransRec): the item
  representations, the item encoder over a Hugging Face text model, a small text encoder built offline.
- `item_text_patches.py`: PEFT adapters in the item encoder's text model (LoRA, prompt and prefix tuning), saved as
  PEFT's files inside the patch folder.
- `model_types.py`: the classes each model type's record (`registry.MODEL_TYPES`) names.
- `tokenization_peterrec.py`: the item tokenizer (`[PAD]` `[UNK]` `[MASK]` `[TCL]`), re-exported by `tokenization/`.
- `patch_config.py`: the one description of a task patch (`patch_config.json`) and its format versions.
- `transfer.py`: `prepare_for_transfer` (Section 3.3): heads, patches, frozen weights, trainable counts.
- `saving.py`: patch folders: save, read, check, attach.
- `sharing.py`: backbone and patch folders to the Hub, with their cards.
- `serving.py`: `MultiTaskPeterRec`, many tasks on one backbone.
- `inference.py`: `recommend`, `score` and `predict`, item names in, items, scores or labels out.
- `predict_command.py`: `run_predict`, file-to-file batch prediction streamed a batch of users at a time.
- `export.py`: `torch.export` / ONNX programs and the serving folder (docs/serving.md).
- `_io.py`: crash-safe writes of files and folders.
- `allocator.py`: `keep_freed_memory`, glibc's allocator kept from unmapping tensors between training steps.
"""

import importlib

import transformers
from transformers import AutoConfig, AutoTokenizer

from .allocator import keep_freed_memory
from .configuration_cmnrec import CmnRecConfig
from .configuration_item_text import ITEM_REPRESENTATIONS
from .configuration_peterrec import INSERTION_MODES, PeterRecConfig
from .configuration_sasrec import SASRecConfig
from .inference import Prediction, Recommendations, predict, recommend, score
from .item_text import ItemTextEncoder
from .modeling_cmnrec import (
    CmnRecForItemRanking,
    CmnRecForNextItemPrediction,
    CmnRecForSequenceClassification,
    CmnRecModel,
    CmnRecPreTrainedModel,
)
from .modeling_peterrec import (
    ModelPatch,
    PeterRecForItemRanking,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecForSequenceClassification,
    PeterRecModel,
    PeterRecPreTrainedModel,
)
from .modeling_sasrec import (
    SASRecForItemRanking,
    SASRecForNextItemPrediction,
    SASRecForSequenceClassification,
    SASRecModel,
    SASRecPreTrainedModel,
)
from .patch_config import PatchConfig
from .registry import (
    CHUNK_RULES,
    INSERTIONS,
    ITEM_PATCH_TYPES,
    METHODS,
    MODEL_TYPES,
    PATCH_TARGETS,
    PATCH_TYPES,
    READOUTS,
    TASK_KINDS,
)
from .saving import load_patch, save_patch
from .serving import MultiTaskPeterRec
from .sharing import push_folder_to_hub, push_patch_to_hub
from .small_text_encoder import build_small_text_encoder
from .tokenization_peterrec import ItemTokenizer, UnknownItems
from .transfer import TransferReport, prepare_for_transfer


def _register(model_type: str) -> None:
    """Makes the Auto classes resolve `model_type` (installed package), and `save_pretrained` copy the code files
    and write `auto_map` (for `trust_remote_code` loading without the package)."""
    record = MODEL_TYPES[model_type]
    modeling = importlib.import_module(f".{record.modeling_file}", __name__)
    config_class = getattr(modeling, record.config_class)
    AutoConfig.register(model_type, config_class, exist_ok=True)
    AutoTokenizer.register(config_class, fast_tokenizer_class=ItemTokenizer, exist_ok=True)
    config_class.register_for_auto_class()
    for auto_name, model_name in modeling.AUTO_CLASSES.items():
        getattr(transformers, auto_name).register(config_class, getattr(modeling, model_name), exist_ok=True)
        getattr(modeling, model_name).register_for_auto_class(auto_name)


ItemTokenizer.register_for_auto_class("AutoTokenizer")
for _model_type in MODEL_TYPES:
    _register(_model_type)

__all__ = [
    "CHUNK_RULES",
    "MODEL_TYPES",
    "CmnRecConfig",
    "CmnRecForItemRanking",
    "CmnRecForNextItemPrediction",
    "CmnRecForSequenceClassification",
    "CmnRecModel",
    "CmnRecPreTrainedModel",
    "INSERTIONS",
    "ITEM_REPRESENTATIONS",
    "ItemTextEncoder",
    "build_small_text_encoder",
    "INSERTION_MODES",
    "METHODS",
    "ITEM_PATCH_TYPES",
    "PATCH_TARGETS",
    "PATCH_TYPES",
    "READOUTS",
    "TASK_KINDS",
    "MultiTaskPeterRec",
    "Prediction",
    "Recommendations",
    "predict",
    "recommend",
    "score",
    "PatchConfig",
    "TransferReport",
    "load_patch",
    "prepare_for_transfer",
    "push_folder_to_hub",
    "push_patch_to_hub",
    "save_patch",
    "keep_freed_memory",
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
    "SASRecConfig",
    "SASRecForItemRanking",
    "SASRecForNextItemPrediction",
    "SASRecForSequenceClassification",
    "SASRecModel",
    "SASRecPreTrainedModel",
]
