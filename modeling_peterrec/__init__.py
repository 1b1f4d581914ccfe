"""PeterRec for the Hugging Face ecosystem: configuration, models and their Auto-class registration."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from tokenization import ItemTokenizer

from .configuration_peterrec import INSERTION_MODES, PeterRecConfig
from .modeling_peterrec import (
    ModelPatch,
    PeterRecForItemRanking,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecForSequenceClassification,
    PeterRecModel,
    PeterRecPreTrainedModel,
)
from .patching import (
    METHODS,
    MultiTaskPeterRec,
    TransferReport,
    load_patch,
    prepare_for_transfer,
    push_patch_to_hub,
    save_patch,
)

AUTO_CLASSES = {
    AutoModel: PeterRecModel,
    AutoModelForCausalLM: PeterRecForNextItemPrediction,
    AutoModelForMaskedLM: PeterRecForMaskedItemPrediction,
    AutoModelForSequenceClassification: PeterRecForSequenceClassification,
}
"""The Auto class that loads each model; PeterRecForItemRanking has no matching Auto class."""

# For the installed package: Auto classes resolve model_type "peterrec".
AutoConfig.register("peterrec", PeterRecConfig, exist_ok=True)
AutoTokenizer.register(PeterRecConfig, fast_tokenizer_class=ItemTokenizer, exist_ok=True)
for auto_class, model_class in AUTO_CLASSES.items():
    auto_class.register(PeterRecConfig, model_class, exist_ok=True)

# For trust_remote_code: save_pretrained copies the code files next to the weights and writes `auto_map`.
PeterRecConfig.register_for_auto_class()
ItemTokenizer.register_for_auto_class("AutoTokenizer")
for auto_class, model_class in AUTO_CLASSES.items():
    model_class.register_for_auto_class(auto_class.__name__)

__all__ = [
    "INSERTION_MODES",
    "METHODS",
    "MultiTaskPeterRec",
    "TransferReport",
    "load_patch",
    "prepare_for_transfer",
    "push_patch_to_hub",
    "save_patch",
    "ItemTokenizer",
    "ModelPatch",
    "PeterRecConfig",
    "PeterRecForItemRanking",
    "PeterRecForMaskedItemPrediction",
    "PeterRecForNextItemPrediction",
    "PeterRecForSequenceClassification",
    "PeterRecModel",
    "PeterRecPreTrainedModel",
]
