"""Patch folders, local or downloaded from the Hub: write, read, check and attach them (Section 3.3, one backbone,
many patches); `sharing` pushes them.

`save_patch` writes only what the method trained (`patch.safetensors`, names relative to the task; an item-encoder
adapter as PEFT's files in `item_encoder_adapter/`, `item_text_patches`) with its `PatchConfig` (`patch_config.json`)
and a model card, atomically. `load_patch` reads a folder or a Hub repo, checks
the weights against their checksum, the values for NaN/inf and the backbone against its fingerprint, and attaches the
patch to the backbone under its own task name or another one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from hub_cards.cards import render_backbone_card, render_patch_card

from ._io import atomic_folder, sha256_file
from .item_text_patches import (
    ITEM_PATCH_FOLDER,
    PEFT_WEIGHTS_NAME,
    is_item_patch_name,
    load_item_patch_state,
    read_item_patch,
    save_item_patch,
)
from .model_types import backbone_class, config_class, model_type_of, pretraining_model_class
from .patch_config import (
    PATCH_CONFIG_NAME,
    PATCH_FORMAT_VERSION,
    PATCH_WEIGHTS_NAME,
    PatchConfig,
    relative_name,
)
from .tokenization_peterrec import ItemTokenizer
from .transfer import attach, backbone_fingerprint, backbone_of, base_weight_names, transfer_report


def _stored_names(model: PreTrainedModel, spec: PatchConfig) -> list[str]:
    """What a patch file holds, by name in the task model: the trained parameters but an item-encoder adapter's
    (PEFT's files hold those), plus, for methods that start from a random backbone, that backbone (there is no
    pretrained backbone to attach them to)."""
    trainable = {relative_name(name, spec.task) for name in spec.trainable_parameters}
    names = [
        name
        for name, _ in model.named_parameters()
        if relative_name(name, spec.task) in trainable and not is_item_patch_name(name)
    ]
    if spec.method_record.random_backbone:
        names += [f"{model.base_model_prefix}.{name}" for name in base_weight_names(backbone_of(model))]
    return sorted(set(names))


def _has_item_patch(spec: PatchConfig) -> bool:
    """Whether the patch has an adapter in the item encoder (PEFT's files in `item_encoder_adapter/`)."""
    return spec.method_record.adds_patches and spec.target_record.item_encoder


def save_patch(
    model: PreTrainedModel,
    folder: str | os.PathLike,
    metrics: dict[str, float] | None = None,
    full_ranking_metrics: dict[str, float] | None = None,
    backbone_repo_id: str | None = None,
    backbone_revision: str | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Writes the patch folder: `patch_config.json`, `patch.safetensors` (only what the method trained, under names
    relative to the task), the item encoder's PEFT adapter files in `item_encoder_adapter/` when the task has one,
    and a model card. The folder appears complete or not at all."""
    spec: PatchConfig = model.patch_config
    spec.backbone_repo_id = backbone_repo_id or spec.backbone_repo_id
    spec.backbone_revision = backbone_revision or spec.backbone_revision
    spec.format_version = PATCH_FORMAT_VERSION  # a patch loaded from an older format is written in this one
    state = model.state_dict()
    tensors = {
        relative_name(name, spec.task): state[name].detach().contiguous()
        for name in _stored_names(model, spec)
    }
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        save_file(tensors, staging / PATCH_WEIGHTS_NAME, metadata={"format": "pt"})
        spec.weights_sha256 = sha256_file(staging / PATCH_WEIGHTS_NAME)
        if _has_item_patch(spec):
            adapter = save_item_patch(backbone_of(model).item_text, spec.task, staging)
            spec.item_patch_sha256 = sha256_file(adapter / PEFT_WEIGHTS_NAME)
        (staging / PATCH_CONFIG_NAME).write_text(spec.to_json_string())
        report = transfer_report(model)
        kind = backbone_of(model).patch_kinds.get(spec.task) if spec.method_record.adds_patches else None
        card = render_patch_card(
            repo_id or folder.name,
            base_model=spec.backbone_repo_id or "peterrec-backbone",
            base_model_revision=spec.backbone_revision,
            task=spec.task,
            task_kind=spec.head,
            method=spec.method,
            insertion=spec.insertion,
            bottleneck_size=kind.bottleneck_size if kind is not None else None,
            readout=model.config.readout,
            head_terms=spec.head_terms,
            patch_type=spec.patch_type,
            patch_places=spec.places,
            patch_blocks=spec.blocks,
            patch_target=spec.patch_target,
            item_patch_type=spec.item_patch_type,
            item_patch_modules=(spec.item_patch or {}).get("target_modules"),
            trainable_parameters=report.trainable_parameters,
            backbone_parameters=report.total_parameters,
            dataset=dataset,
            metrics=metrics,
            full_ranking_metrics=full_ranking_metrics,
            label_names=spec.label_names,
        )
        card.save(staging / "README.md")
    return folder


def _resolve(source: str | os.PathLike, revision: str | None) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or str(source).startswith((".", "/")):
        raise FileNotFoundError(f"{source} is not a patch folder.")
    return Path(
        snapshot_download(
            str(source),
            revision=revision,
            allow_patterns=[PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME, "README.md", f"{ITEM_PATCH_FOLDER}/*"],
        )
    )


def _read_weights(weights: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file of a patch folder, checked against the checksum recorded for it."""
    data = weights.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"{weights} does not match the checksum recorded in {PATCH_CONFIG_NAME}: the file was damaged or "
            "changed after saving; download or save the patch again."
        )
    try:
        return load_safetensors(data)
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{weights} is corrupt or truncated ({error}); download or save it again."
        ) from error


def read_patch(
    source: str | os.PathLike, revision: str | None = None, task: str | None = None
) -> tuple[PatchConfig, dict[str, torch.Tensor]]:
    """Reads and checks a patch folder (local path or Hub repo id) without touching any model.

    Returns its configuration (renamed to `task` when given; with the item encoder's PEFT configuration as
    `item_patch`) and its tensors under names relative to the task, whatever the file's format version; an
    item-encoder adapter's tensors are among them as `item_encoder_adapter/<name in PEFT's file>`.

    Raises:
        FileNotFoundError: a file of the folder is missing.
        ValueError: the configuration is invalid or newer than this version reads; the weights do not match their
            checksum, are corrupt or truncated, or hold NaN or infinite values.
    """
    folder = _resolve(source, revision)
    for name in (PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} has no {name}; a patch folder holds {PATCH_CONFIG_NAME} and "
                f"{PATCH_WEIGHTS_NAME} (written by save_patch)."
            )
    spec = PatchConfig.from_json_string(
        (folder / PATCH_CONFIG_NAME).read_text(), source=str(folder / PATCH_CONFIG_NAME)
    )
    tensors = _read_weights(folder / PATCH_WEIGHTS_NAME, spec.weights_sha256)
    if _has_item_patch(spec):
        spec.item_patch, item_weights = read_item_patch(folder)
        item_tensors = _read_weights(item_weights, spec.item_patch_sha256)
        tensors.update({f"{ITEM_PATCH_FOLDER}/{name}": tensor for name, tensor in item_tensors.items()})
    not_finite = sorted(
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    )
    if not_finite:
        raise ValueError(
            f"{folder} holds NaN or infinite values in {not_finite[:5]}; the training run diverged. Train the "
            "patch again (e.g. with a lower learning rate)."
        )
    tensors = {relative_name(name, spec.task): tensor for name, tensor in tensors.items()}
    spec.trainable_parameters = [relative_name(name, spec.task) for name in spec.trainable_parameters]
    if task is not None:
        spec = dataclasses.replace(spec, task=task)
        spec.validate()
    return spec, tensors


def attach_patch(spec: PatchConfig, tensors: dict[str, torch.Tensor], backbone: nn.Module) -> PreTrainedModel:
    """Checks a read patch against `backbone`, then attaches it and returns the task model in eval mode. On any
    error the backbone is left as it was."""
    method = spec.method_record
    fingerprint = None
    if not method.random_backbone:
        fingerprint = backbone_fingerprint(backbone)
        if fingerprint != spec.backbone_fingerprint:
            raise ValueError(
                f"This patch was trained on a backbone with fingerprint {spec.backbone_fingerprint[:12]}..., but the "
                f"given backbone has {fingerprint[:12]}... ({spec.backbone_repo_id or 'unknown repo'}, revision "
                f"{spec.backbone_revision or 'unknown'}); load the backbone the patch was trained on."
            )
    if not method.shares_backbone and not method.random_backbone:
        backbone = copy.deepcopy(backbone)  # the method changes backbone weights: keep the caller's intact
    prefix = f"{ITEM_PATCH_FOLDER}/"
    item_tensors = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
    tensors = {name: tensor for name, tensor in tensors.items() if not name.startswith(prefix)}
    model, _ = attach(backbone, dataclasses.replace(spec), fingerprint=fingerprint)
    stored = {relative_name(name, spec.task) for name in _stored_names(model, spec)}
    expected = {
        relative_name(name, spec.task): parameter
        for name, parameter in model.named_parameters()
        if relative_name(name, spec.task) in stored
    }
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    mismatched = sorted(
        name for name in set(tensors) & set(expected) if tensors[name].shape != expected[name].shape
    )
    if missing or extra or mismatched:
        if spec.task in backbone.patched_tasks:
            backbone.remove_patch(spec.task)
        if mismatched:
            name = mismatched[0]
            raise ValueError(
                f"Patch tensor {name} has shape {tuple(tensors[name].shape)}, the model expects "
                f"{tuple(expected[name].shape)}."
            )
        raise ValueError(
            f"The patch file does not match its configuration: missing {missing[:5]}, extra {extra[:5]}."
        )
    if _has_item_patch(spec):
        try:
            load_item_patch_state(backbone_of(model).item_text, spec.task, item_tensors)
        except ValueError:
            backbone.remove_patch(spec.task)
            raise
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)
    model.patch_config = spec
    return model.eval()


def _package_backbone(model: nn.Module) -> nn.Module:
    """The backbone inside `model` as this package's backbone class of its model type (`registry.MODEL_TYPES`).

    A backbone loaded with `trust_remote_code=True` is built from the code files of its folder, classes that are
    not this package's; it is rebuilt here from its configuration, own weights (bit-identical, and its fingerprint with
    them) and item texts, so that the patch attaches as to any other backbone."""
    record = model_type_of(model.config)
    package_class = backbone_class(record)
    remote = model.base_model
    if isinstance(remote, package_class):
        return backbone_of(model)
    backbone = package_class(config_class(record)(**remote.config.to_dict()))
    backbone.load_state_dict(remote.state_dict())
    texts = getattr(remote, "item_text", None)
    if texts is not None and texts.num_items:
        # The item texts and their tokenizer are not weights: carried over, so the rebuilt backbone encodes the same.
        backbone.item_text.text_tokenizer = texts.text_tokenizer
        first = texts.first_item_id
        backbone.item_text.put_texts(range(first, first + texts.num_items), texts.items, texts.texts)
    return backbone.train(remote.training)


def load_patch(
    source: str | os.PathLike, backbone: nn.Module, revision: str | None = None, task: str | None = None
) -> PreTrainedModel:
    """Attaches a saved patch to `backbone` and returns the task model.

    `source` is a patch folder or a Hub repo id (with `revision`); `task` registers the patch under another name
    than the one it was trained under. The backbone's own weights must have the fingerprint recorded at training
    time; for methods that train backbone weights (`fine_*`), the task model gets its own copy of the backbone so
    the one passed in stays as it is. A backbone loaded by an Auto class with `trust_remote_code=True` (any of
    them: `AutoModel`, `AutoModelForCausalLM`, ...) works too; the task model then holds a copy of it built from
    this package's classes.

    Raises:
        ValueError: the backbone differs from the patch's, or the patch file is damaged, has missing, extra or
            misshaped tensors, or non-finite values (see `read_patch`).
    """
    spec, tensors = read_patch(source, revision, task=task)
    return attach_patch(spec, tensors, _package_backbone(backbone))


def save_backbone(
    model: PreTrainedModel,
    tokenizer: ItemTokenizer,
    folder: str | os.PathLike,
    metrics: dict[str, float],
    dataset: str,
    training_summary: str,
) -> Path:
    """Writes a backbone folder: weights and config, tokenizer, and the model card with the pretraining metrics and
    the model type's architecture rows (every model type of the family transfers with patches, as the card says).
    The folder appears complete or not at all."""
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = model.config
        record = model_type_of(config)
        card = render_backbone_card(
            folder.name,
            is_causal=config.is_causal,
            hidden_size=config.hidden_size,
            vocab_size=config.vocab_size,
            num_parameters=model.num_parameters(),
            dataset=dataset,
            metrics=metrics,
            pretraining_loss=config.pretraining_loss,
            training_summary=training_summary,
            architecture=config.architecture_rows(),
            model_title=record.title,
            backbone_class=record.backbone_class,
        )
        card.save(staging / "README.md")
    return folder


def load_backbone(folder: str | os.PathLike) -> tuple[PreTrainedModel, ItemTokenizer]:
    """The pretraining model and tokenizer of a backbone folder written by `pretrain`, of the model type its
    `config.json` names (`registry.MODEL_TYPES`)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a backbone folder (no config.json); pass the folder written by `peterrec pretrain`."
        )
    config = AutoConfig.from_pretrained(folder)
    return pretraining_model_class(config).from_pretrained(folder), ItemTokenizer.from_pretrained(folder)


__all__ = [
    "load_backbone",
    "save_backbone",
    "attach_patch",
    "load_patch",
    "read_patch",
    "save_patch",
]
