"""The classes of each model type of `registry.MODEL_TYPES`, looked up from its record, so that the pipelines,
transfer and saving handle every model type of the family through one path."""

from __future__ import annotations

import importlib

from transformers import PretrainedConfig, PreTrainedModel

from .registry import MODEL_TYPES, ModelType, choose


def model_type_of(config: PretrainedConfig) -> ModelType:
    """The record of a configuration's `model_type`."""
    return choose(MODEL_TYPES, getattr(config, "model_type", None), "model type")


def model_class(record: ModelType, name: str) -> type:
    """A class of `record`'s modeling file (which imports its configuration class too)."""
    return getattr(importlib.import_module(f".{record.modeling_file}", __package__), name)


def config_class(record: ModelType) -> type[PretrainedConfig]:
    return model_class(record, record.config_class)


def backbone_class(record: ModelType) -> type[PreTrainedModel]:
    return model_class(record, record.backbone_class)


def pretraining_model_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """Next-item prediction for a causal model (NextItNet, CmnRec), masked-item prediction otherwise (GRec)."""
    record = model_type_of(config)
    name = record.pretraining_class if config.is_causal else record.masked_pretraining_class
    if name is None:
        raise ValueError(
            f"Model type {record.name!r} has no masked-item pretraining; use the causal objective."
        )
    return model_class(record, name)


def head_class(record: ModelType, kind: str) -> type[PreTrainedModel]:
    """The task model of a transfer task kind (`classification`, `ranking`) for `record`'s backbone."""
    return model_class(record, record.task_heads[kind])


__all__ = [
    "backbone_class",
    "config_class",
    "head_class",
    "model_class",
    "model_type_of",
    "pretraining_model_class",
]
