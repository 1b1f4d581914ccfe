"""Adapters in the item encoder: PEFT on the Hugging Face text model that encodes items from their text
(Adapter4Rec's `adding_adapter_to`, Fu, Yuan et al., WSDM 2024; SPEC §9: PEFT for the types it has).

A task whose patch goes into the item encoder (`registry.PATCH_TARGETS`) gets a PEFT model (`peft.get_peft_model`)
of one of `registry.ITEM_PATCH_TYPES` (LoRA, prompt tuning, prefix tuning) around a copy of the text model's modules
that shares the text model's weights. PEFT injects its layers into that copy, not into the backbone's text model, so
the backbone's modules and the names of its weights stay as they are (its fingerprint, `save_pretrained` and remote
code see nothing new), and each task's adapter runs alone: no active-adapter switch to get wrong when tasks share
one backbone. The PEFT models live in `ItemTextEncoder.patches` under the task's name (task-owned names, outside the
fingerprint, trained by the patching methods).

In a patch folder the adapter is what `PeftModel.save_pretrained` writes (`adapter_config.json`,
`adapter_model.safetensors`, tensor names without the adapter name) in the subfolder `item_encoder_adapter/`.

`peft` is an optional dependency (the `text` extra); it is imported when an adapter is made or loaded, never when
the package is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import partial
from itertools import chain
from pathlib import Path
from types import ModuleType

import torch

from .item_text import ItemTextEncoder
from .registry import ITEM_PATCH_TYPES, choose

ITEM_PATCH_FOLDER = "item_encoder_adapter"
"""The subfolder of a patch folder that holds PEFT's adapter files of the item encoder."""
PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
ITEM_PATCH_PREFIX = "item_text.patches."
"""What the names of item-encoder adapter weights contain (in the backbone, after its own prefix in a task model)."""


def import_peft() -> ModuleType:
    """The `peft` package, or an `ImportError` that names the extra which installs it."""
    try:
        import peft
    except ImportError as error:
        raise ImportError(
            "An adapter in the item encoder's text model is made with PEFT, which is not installed; install "
            "peterrec's `text` extra: pip install 'peterrec[text]' (peft>=0.21)."
        ) from error
    return peft


def is_item_patch_name(name: str) -> bool:
    """Whether a parameter name (of a backbone or a task model) belongs to an item-encoder adapter."""
    return f".{ITEM_PATCH_PREFIX}" in f".{name}"


def _as_json(config) -> dict:
    """A PEFT configuration as `adapter_config.json` holds it (PEFT resolves `target_modules` to a set)."""
    return json.loads(json.dumps(config.to_dict(), default=sorted))


def item_patch_config(item_patch_type: str, settings: Mapping[str, object] | None = None) -> dict:
    """The PEFT configuration of `item_patch_type` (`registry.ITEM_PATCH_TYPES`) with `settings` (arguments of its
    PEFT configuration class, e.g. `{"r": 16, "target_modules": ["query", "key", "value"]}`) over its defaults."""
    record = choose(ITEM_PATCH_TYPES, item_patch_type, "item patch type")
    config_class = getattr(import_peft(), record.peft_config)
    try:
        return _as_json(config_class(**{**record.defaults, **(settings or {})}))
    except TypeError as error:
        raise ValueError(f"item_patch_settings do not fit {record.peft_config}: {error}") from error


def _drop_shared(names: list[str], module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for name in names:
        state_dict.pop(prefix + name, None)


def _restore_shared(names: list[str], module, state_dict: dict, prefix: str, *args) -> None:
    for name in names:
        owner, _, leaf = name.rpartition(".")
        state_dict.setdefault(prefix + name, getattr(module.get_submodule(owner), leaf))


def _share_weights(peft_model: torch.nn.Module, shared_ids: set[int]) -> None:
    """Keeps the text model's weights out of the state dict of a PEFT model around a copy that shares them (they are
    saved once, under the text model's names, like tied weights), and lets such a state dict load back."""
    names = [
        name for name, tensor in peft_model.state_dict(keep_vars=True).items() if id(tensor) in shared_ids
    ]
    peft_model.register_state_dict_post_hook(partial(_drop_shared, names))
    peft_model.register_load_state_dict_pre_hook(partial(_restore_shared, names))


def add_item_patch(encoder: ItemTextEncoder, task: str, config: Mapping[str, object]) -> dict:
    """Gives `task` its PEFT adapter of configuration `config` (`item_patch_config`, or an `adapter_config.json`)
    in the item encoder; returns the configuration as PEFT resolved it (LoRA's default target modules filled in).

    Raises:
        ValueError: the task has an adapter already, the virtual tokens and the texts do not fit the text model's
            positions, or PEFT refuses the configuration for this text model.
    """
    peft = import_peft()
    if task in encoder.patches:
        raise ValueError(f"The item encoder has an adapter named {task!r} already; remove the patch first.")
    text_model = encoder.text_model
    # Prompt and prefix tuning put their virtual tokens in the positions before the text's.
    virtual, positions = config.get("num_virtual_tokens") or 0, text_model.config.max_position_embeddings
    if virtual and virtual + encoder.max_text_length > positions:
        raise ValueError(
            f"The adapter's {virtual} virtual tokens and the item texts' {encoder.max_text_length} tokens "
            f"(max_text_length) need {virtual + encoder.max_text_length} positions; the text model has {positions}. "
            "Use fewer virtual tokens (num_virtual_tokens) or a backbone with a smaller max_text_length."
        )
    # The copy shares every parameter and buffer: only the modules PEFT replaces are new.
    shared = {id(tensor): tensor for tensor in chain(text_model.parameters(), text_model.buffers())}
    view = copy.deepcopy(text_model, shared)
    trainable = {id(p): p.requires_grad for p in text_model.parameters()}
    try:
        peft_model = peft.get_peft_model(view, peft.PeftConfig.from_peft_type(**config))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"PEFT cannot put this adapter into the item encoder's {type(text_model).__name__}: {error}"
        ) from error
    finally:
        # get_peft_model freezes every weight it sees, the shared ones too; whether they train is the method's call.
        for parameter in text_model.parameters():
            parameter.requires_grad_(trainable[id(parameter)])
    _share_weights(peft_model, set(shared))
    encoder.patches[task] = peft_model.to(encoder.projection.weight.device)
    return _as_json(peft_model.peft_config["default"])


def save_item_patch(encoder: ItemTextEncoder, task: str, folder: str | Path) -> Path:
    """Writes `task`'s adapter as PEFT does (`save_pretrained`) into `folder/item_encoder_adapter/`; the patch
    folder's own card describes it, so PEFT's template card is not kept."""
    target = Path(folder) / ITEM_PATCH_FOLDER
    encoder.patches[task].save_pretrained(str(target), save_embedding_layers=False)
    (target / "README.md").unlink(missing_ok=True)
    return target


def read_item_patch(folder: str | Path) -> tuple[dict, Path]:
    """The PEFT configuration in `folder/item_encoder_adapter/` and the path of its weights file (the caller checks
    and reads it as it does `patch.safetensors`).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the configuration is not valid JSON.
    """
    source = Path(folder) / ITEM_PATCH_FOLDER
    for name in (PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME):
        if not (source / name).is_file():
            raise FileNotFoundError(
                f"{source} has no {name}; this patch's item-encoder adapter is PEFT's {PEFT_CONFIG_NAME} and "
                f"{PEFT_WEIGHTS_NAME} there (written by save_patch)."
            )
    try:
        config = json.loads((source / PEFT_CONFIG_NAME).read_text())
    except ValueError as error:
        raise ValueError(
            f"{source / PEFT_CONFIG_NAME} is not valid JSON ({error}); download or save the patch again."
        ) from error
    return config, source / PEFT_WEIGHTS_NAME


def load_item_patch_state(encoder: ItemTextEncoder, task: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Loads saved adapter tensors into `task`'s adapter (`set_peft_model_state_dict`), after checking that they
    are exactly the adapter's.

    Raises:
        ValueError: tensors are missing, extra or misshaped.
    """
    peft = import_peft()
    model = encoder.patches[task]
    expected = peft.get_peft_model_state_dict(model)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    mismatched = sorted(
        name for name in set(tensors) & set(expected) if tensors[name].shape != expected[name].shape
    )
    if missing or extra or mismatched:
        raise ValueError(
            f"The item encoder's adapter files do not match their {PEFT_CONFIG_NAME}: missing {missing[:5]}, extra "
            f"{extra[:5]}, misshaped {mismatched[:5]}."
        )
    peft.set_peft_model_state_dict(model, dict(tensors))


__all__ = [
    "ITEM_PATCH_FOLDER",
    "PEFT_CONFIG_NAME",
    "PEFT_WEIGHTS_NAME",
    "add_item_patch",
    "import_peft",
    "is_item_patch_name",
    "item_patch_config",
    "load_item_patch_state",
    "read_item_patch",
    "save_item_patch",
]
