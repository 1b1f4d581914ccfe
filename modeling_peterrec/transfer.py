"""Parameter-efficient transfer (Section 3.3): prepare a pretrained backbone for one task with one method.

`prepare_for_transfer` adds the task head (with the task's own readout, Figure 2) and, for the methods that add them, the
patches (PeterRec's model patches, Figure 3, or another type of `registry.PATCH_TYPES`; over item texts, also or only a
PEFT adapter in the item encoder, `registry.PATCH_TARGETS` and `item_text_patches`);
re-initialises the backbone for the from-scratch methods; freezes what the method keeps (`registry.METHODS`); and
reports the trainable share. The prepared model carries its `PatchConfig`, which `saving.save_patch` writes.

Every model type of the family transfers through the same code: its record (`registry.MODEL_TYPES`) names the
backbone class, the head class of each task kind, the methods that apply and the default insertion; the backbone
declares the interface used here (`modeling_peterrec.TaskPatches`): `add_patch`/`remove_patch`/`patch_kinds`
(patches under `patches.<task>.` module names), the task models hold it under `base_model_prefix`, and `embed_items`
is its input embedding.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from .adapters import PATCH_KIND_FIELDS
from .item_text import uses_item_text
from .item_text_patches import add_item_patch, item_patch_config
from .model_types import backbone_class, head_class, model_type_of
from .patch_config import PatchConfig, relative_name, task_name
from .registry import (
    DEFAULT_ITEM_PATCH_TYPE,
    DEFAULT_PATCH_TARGET,
    DEFAULT_PATCH_TYPE,
    METHODS,
    PATCH_TARGETS,
    choose,
    model_type_supports,
)

# Fields of a backbone's configuration that describe the saved model rather than the architecture.
_NOT_ARCHITECTURE = (
    "architectures",
    "auto_map",
    "transformers_version",
    "model_type",
    "id2label",
    "label2id",
    "num_labels",
    "patch_insertion",
    "patch_task",
)


@dataclass
class TransferReport:
    """Trainable and total parameter counts of a prepared model (reported for every method, Section 4)."""

    method: str
    task: str
    trainable_parameters: int
    total_parameters: int

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters

    def __str__(self) -> str:
        return (
            f"{self.method} on {self.task}: {self.trainable_parameters:,} of {self.total_parameters:,} "
            f"parameters trainable ({100 * self.trainable_share:.2f}%)"
        )


def backbone_of(model: nn.Module) -> PreTrainedModel:
    """The backbone (`PeterRecModel`, `CmnRecModel`, ...: its model type's `backbone_class`) inside any model of
    the family, or the model itself."""
    config = getattr(model, "config", None)
    record = model_type_of(config) if config is not None else None
    backbone = getattr(model, "base_model", None)
    if record is None or not isinstance(backbone, backbone_class(record)):
        raise TypeError(f"Expected a model of the PeterRec family, got {type(model).__name__}.")
    return backbone


def _is_task_owned(name: str) -> bool:
    """A name (relative to the backbone) of some task's patch or task-owned copy, not of the backbone's own."""
    return ".patches." in f".{name}" or name.startswith("tcl_embeddings.")


def base_weight_names(backbone: nn.Module) -> list[str]:
    """Names of the backbone's own weights, without any task's patches or task-owned copies."""
    return [name for name in backbone.state_dict() if not _is_task_owned(name)]


def backbone_fingerprint(backbone: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the backbone's own weights."""
    digest = hashlib.sha256()
    state = backbone.state_dict()
    for name in sorted(base_weight_names(backbone)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def _encodes_targets(backbone: PreTrainedModel, head: str) -> bool:
    """Whether the task head encodes its target items from their texts: ColdRec ranking over items from their text."""
    return head == "ranking" and uses_item_text(backbone.config)


def _build_head_model(backbone: PreTrainedModel, spec: PatchConfig) -> PreTrainedModel:
    """The task model around an existing backbone: the new head is initialised, the backbone is shared as it is."""
    fields = {key: value for key, value in backbone.config.to_dict().items() if key not in _NOT_ARCHITECTURE}
    fields["readout"] = spec.readout
    fields["head_terms"] = spec.head_terms
    if spec.head == "classification":
        fields.update(
            id2label=dict(enumerate(spec.label_names)),
            label2id={name: i for i, name in enumerate(spec.label_names)},
        )
    else:
        fields.update(
            num_target_items=spec.num_target_items,
            ranking_loss=spec.ranking_loss,
            num_negatives=spec.num_negatives,
        )
    config = type(backbone.config)(**fields)
    with torch.device("meta"):
        model = head_class(model_type_of(config), spec.head)(config)
    prefix = model.base_model_prefix
    setattr(model, prefix, backbone)
    device = backbone.embed_items.weight.device
    for name, module in model.named_children():
        if name != prefix:
            module.to_empty(device=device)
            for submodule in module.modules():
                model._init_weights(submodule)
    return model.to(backbone.embed_items.weight.dtype)


def _trainable_names(model: PreTrainedModel, spec: PatchConfig) -> list[str]:
    """The parameters `spec.method` trains (`registry.METHODS`), by name in the task model."""
    method = spec.method_record
    prefix = model.base_model_prefix
    names = [name for name, _ in model.named_parameters()]
    head = [name for name in names if not name.startswith(f"{prefix}.")]
    if method.adds_patches:
        own = (f".patches.{spec.task}.", f"{prefix}.tcl_embeddings.{spec.task}")
        return [name for name in names if any(key in name for key in own)] + head
    if method.trained_layers == "all":
        return [name for name in names if ".patches." not in name and ".tcl_embeddings." not in name]
    if method.trained_layers == "none":
        return head
    last = len(backbone_of(model).blocks) - 1
    prefixes = tuple(f"{prefix}.blocks.{last}.{layer}." for layer in method.last_block_layers)
    return [name for name in names if prefixes and name.startswith(prefixes)] + head


def prepare_for_transfer(
    backbone: nn.Module,
    method: str,
    task: str,
    head: str,
    label_names: Sequence[str] | None = None,
    num_target_items: int | None = None,
    target_names: Sequence[str] | None = None,
    target_texts: Sequence[str] | None = None,
    insertion: str | None = None,
    bottleneck_size: int | None = None,
    activation: str | None = None,
    train_layer_norms: Sequence[str] = (),
    patch_type: str = DEFAULT_PATCH_TYPE,
    patch_target: str = DEFAULT_PATCH_TARGET,
    item_patch_type: str | None = None,
    item_patch_settings: Mapping[str, object] | None = None,
    places: Sequence[str] | None = None,
    blocks: str | None = None,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    phm_dim: int | None = None,
    phm_rank: int | None = None,
    prompt_length: int | None = None,
    train_tcl_embedding: bool = False,
    readout: str | None = None,
    head_terms: str = "deep",
    ranking_loss: str = "bpr",
    num_negatives: int = 1,
    seed: int = 0,
) -> tuple[PreTrainedModel, TransferReport]:
    """Prepares a pretrained backbone for one downstream task with one fine-tuning method.

    Adds the task head (a linear classifier, or a target-item table for cold-start ranking), adds the patch for the
    methods that add one (`patch_type`: PeterRec's model patch, Figure 3, by default), re-initialises the backbone for
    the from-scratch methods, and sets `requires_grad` so that exactly the method's parameters train
    (`registry.METHODS`).

    Args:
        backbone: a backbone of the family (`PeterRecModel`, `CmnRecModel`), or any model holding one (e.g. the
            pretraining model).
        method: a name of `registry.METHODS` that applies to the backbone's model type (`ModelType.methods`).
        task: name under which the patch is registered (no '.').
        head: `"classification"` or `"ranking"` (`registry.TASK_KINDS`).
        label_names / num_target_items / target_names: the output space of the head.
        target_texts: the text of each target item, in target order: required by a ranking head over a backbone
            whose items come from their text (it encodes its targets from them), refused otherwise.
        insertion, bottleneck_size, activation: the model patch (methods that add patches only); `insertion`
            defaults to the model type's (`serial_two` for PeterRec, `controller_read` for CmnRec).
        train_layer_norms: LayerNorms the patching methods also train, as task-owned copies in every block (the
            shared ones stay bit-identical): `"norm1"`, `"norm2"` of PeterRec's blocks (the original code retrained
            `norm2`); `"attention_norm"`, `"feed_forward_norm"`, `"final_norm"` of SASRec; `["all"]` every one the
            backbone has (recorded by name in the patch).
        patch_type: what the patching methods add (`registry.PATCH_TYPES`: `model_patch`, `houlsby`, `parallel`,
            `pfeiffer`, `lora`, `compacter`, `k_adapter`, `soft_prompt`), where it fits the model type.
        patch_target: where the patching methods put the patch (`registry.PATCH_TARGETS`; Adapter4Rec's
            `adding_adapter_to`): `"user_encoder"` (the default, and the only place when items are IDs), or, for a
            backbone whose items come from their text, `"item_encoder"` (a PEFT adapter in the text model, no user
            encoder patch) or `"both"`.
        item_patch_type, item_patch_settings: the item encoder's PEFT method (`registry.ITEM_PATCH_TYPES`: `"lora"`,
            the default, `"prompt_tuning"`, `"prefix_tuning"`) and arguments of its PEFT configuration over the
            record's defaults (e.g. `{"r": 16, "target_modules": ["query", "key", "value"]}`; LoRA's target modules
            default to PEFT's for the text model, `query` and `value` for BERT). Needs the `text` extra (`peft`).
        places, blocks: where it goes: places in a block (sub-layers, convolutions, weights; the type's default
            when None) and which blocks (`"all"`, `"first"`, `"last"`).
        lora_rank, lora_alpha, phm_dim, phm_rank, prompt_length: the settings of LoRA, Compacter and the soft
            prompt (defaults: `adapters.PATCH_SETTING_DEFAULTS`).
        train_tcl_embedding: the patching methods also train a task-owned `[TCL]` embedding.
        readout: how this task reads a user vector (`registry.READOUTS`: `"tcl"`, `"sum"`, `"mean"`,
            `"attention"`); defaults to the backbone config's (`"tcl"`, the paper's). The attention pooler's
            weights belong to the task head, so every method trains them and the patch file stores them.
        head_terms: what the head adds up (`registry.HEAD_TERMS`): `"deep"` (the paper's), `"wide_deep"` (plus a
            linear term over the item bag, one weight per item and output, trained and stored with the head), or
            `"wide"` (that term alone, with `method="fine_cls"`: an ablation that reads no backbone).
        ranking_loss, num_negatives: the ranking head's loss (`"bpr"`, `"binary"`, `"full_softmax"`).
        seed: seeds the new head and, for the from-scratch methods, the random backbone.

    Returns:
        The task model (sharing `backbone`'s weights unless the method starts from a random backbone) and its
        parameter report.

    Raises:
        ValueError: the method, the insertion or the patch type does not apply to the backbone's model type (the
            message names the types that do), the patch target needs items from their text and the backbone's are
            IDs, or another argument is invalid.
    """
    patched = choose(METHODS, method, "method").adds_patches
    backbone = backbone_of(backbone)
    record = model_type_of(backbone.config)
    model_type_supports(record, method, insertion, patch_type)
    settings = dict(
        insertion=insertion,
        places=list(places) if places is not None else None,
        blocks=blocks,
        bottleneck_size=bottleneck_size,
        activation=activation,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        phm_dim=phm_dim,
        phm_rank=phm_rank,
        prompt_length=prompt_length,
        train_layer_norms=list(train_layer_norms),
        train_tcl_embedding=train_tcl_embedding,
    )
    if (target_texts is not None) != _encodes_targets(backbone, head):
        items = getattr(backbone.config, "item_representation", "id")
        raise ValueError(
            "target_texts (the text of each target item) are needed by, and only by, a ranking head over a backbone "
            f"whose items come from their text; this backbone's items are {items!r} and the head is {head!r}."
        )
    target = choose(PATCH_TARGETS, patch_target, "patch target")
    if target.item_encoder and getattr(backbone, "item_text", None) is None:
        items = getattr(backbone.config, "item_representation", "id")
        raise ValueError(
            f"patch_target={patch_target!r} puts an adapter into the item encoder over item texts, but this "
            f"{record.name!r} backbone's items are {items!r} (ID embeddings, no item encoder); use "
            "patch_target='user_encoder', or a SASRec backbone with item_representation 'text' or 'text_id'."
        )
    if item_patch_settings is not None and not target.item_encoder:
        raise ValueError(
            f"patch_target={patch_target!r} puts no adapter into the item encoder, so it takes no item_patch_settings."
        )
    if target.item_encoder:
        item_patch_type = item_patch_type or DEFAULT_ITEM_PATCH_TYPE
    spec = PatchConfig(
        task=task,
        method=method,
        head=head,
        patch_type=patch_type,
        patch_target=patch_target,
        item_patch_type=item_patch_type,
        # The patch settings of a method without patches are dropped, as before patch types.
        **(settings if patched else {}),
        readout=readout,
        head_terms=head_terms,
        label_names=list(label_names) if label_names is not None else None,
        num_target_items=num_target_items if head == "ranking" else None,
        target_names=list(target_names) if target_names is not None else None,
        target_texts=list(target_texts) if target_texts is not None else None,
        ranking_loss=ranking_loss,
        num_negatives=num_negatives,
    )
    spec.validate()
    if target.item_encoder:
        spec.item_patch = item_patch_config(item_patch_type, item_patch_settings)
    return attach(backbone, spec, seed)


def _random_backbone(backbone: PreTrainedModel) -> PreTrainedModel:
    """A freshly initialised backbone of the same architecture, without the patches its configuration builds in."""
    config = copy.deepcopy(backbone.config)
    if getattr(config, "patch_insertion", None) is not None:
        config.patch_insertion = None
    return type(backbone)(config)


def attach(
    backbone: PreTrainedModel, spec: PatchConfig, seed: int = 0, fingerprint: str | None = None
) -> tuple[PreTrainedModel, TransferReport]:
    """Builds the task model that `spec` describes around `backbone` (see `prepare_for_transfer`).

    `fingerprint` is the backbone's, when the caller has computed it already."""
    torch.manual_seed(seed)
    method = spec.method_record
    if method.random_backbone:
        backbone = _random_backbone(backbone)
        fingerprint = None
    spec.backbone_fingerprint = fingerprint or backbone_fingerprint(backbone)
    spec.backbone_repo_id = spec.backbone_repo_id or backbone.config.name_or_path or None
    spec.readout = spec.readout or backbone.config.readout
    target = spec.target_record
    if method.adds_patches and target.user_encoder:
        spec.train_layer_norms = backbone.tuned_layer_norms(spec.train_layer_norms)
        kind = backbone.add_patch(
            spec.task,
            layer_norms=spec.train_layer_norms,
            tcl_embedding=spec.train_tcl_embedding,
            **{name: getattr(spec, name) for name in PATCH_KIND_FIELDS},
        )
        # Recorded resolved, so that the patch rebuilds the same whatever later versions' defaults.
        for name in PATCH_KIND_FIELDS:
            setattr(spec, name, getattr(kind, name))
        spec.places = list(kind.places)
    if method.adds_patches and target.item_encoder:
        try:
            spec.item_patch = add_item_patch(backbone.item_text, spec.task, spec.item_patch)
        except Exception:
            if spec.task in backbone.patch_kinds:
                backbone.remove_patch(spec.task)
            raise
    model = _build_head_model(backbone, spec)
    if _encodes_targets(backbone, spec.head):
        model.set_target_texts(spec.target_texts)
    trainable = set(_trainable_names(model, spec))
    spec.trainable_parameters = [
        relative_name(name, spec.task) for name, _ in model.named_parameters() if name in trainable
    ]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    model.patch_config = spec
    return model, transfer_report(model)


def transfer_report(model: PreTrainedModel) -> TransferReport:
    """Counts the trainable parameters and the whole model's (backbone, this task's patch and head)."""
    spec: PatchConfig = model.patch_config
    backbone = backbone_of(model)
    others = [name for name in backbone.patched_tasks if name != spec.task]

    def other_task(name: str) -> bool:
        return any(
            f".patches.{task}." in name or name == f"{model.base_model_prefix}.tcl_embeddings.{task}"
            for task in others
        )

    counted = [(name, p) for name, p in model.named_parameters() if not other_task(name)]
    trainable = {task_name(name, spec.task) for name in spec.trainable_parameters}
    return TransferReport(
        method=spec.method,
        task=spec.task,
        trainable_parameters=sum(p.numel() for name, p in counted if name in trainable),
        total_parameters=sum(p.numel() for _, p in counted),
    )


__all__ = [
    "TransferReport",
    "attach",
    "backbone_fingerprint",
    "backbone_of",
    "base_weight_names",
    "prepare_for_transfer",
    "transfer_report",
]
