"""The one description of a task patch: what `patch_config.json` records (Section 3.3: one backbone, many small patch files).

A patch folder holds `patch_config.json` (this record), `patch.safetensors` (only what the method trained, under
names relative to the task, as PEFT drops the adapter name) and a model card. Format history:

- 1: tensor names include the task (`peterrec.blocks.0.patches.gender.conv1.down.weight`).
- 2: tensor names are relative to the task (`peterrec.blocks.0.patches.conv1.down.weight`), so a patch loads under
  any task name; `weights_sha256` checks the weights file. Version-1 folders still load.
- 3: records the task's `readout` (`registry.READOUTS`); a learned readout's weights are stored with the head
  (`readout.pooler.*`). Older folders have no readout and load with the backbone config's, as before.
- 4: records the task's `head_terms` (`registry.HEAD_TERMS`); a wide term's weights are stored with the head
  (`wide.*`). Older folders have the paper's deep head.
- 5: records the `patch_type` (`registry.PATCH_TYPES`) and its resolved settings (`places`, `blocks`, `lora_rank`,
  `lora_alpha`, `phm_dim`, `phm_rank`, `prompt_length`; None where the type has no such setting). Task-wide parts
  of a patch are stored under the backbone's own `patches.` (`peterrec.patches.prompt.embeddings`,
  `sasrec.patches.side.output.weight`, `peterrec.patches.phm_rule.weight`), per-block ones under each block's
  (`sasrec.blocks.0.patches.query.lora_A.weight`). Older folders load as PeterRec's model patch (`model_patch`).
  The same format records a ranking head's `target_texts` when its backbone's items come from their text
  (the head encodes its target items from them; `item_text.TextTargetsMixin`).
- 6: records the `patch_target` (`registry.PATCH_TARGETS`: the user encoder, the item encoder over item texts, or
  both) and the `item_patch_type` (`registry.ITEM_PATCH_TYPES`). An item-encoder adapter is PEFT's own files,
  `item_encoder_adapter/adapter_config.json` and `adapter_model.safetensors` (`item_text_patches`), not part of
  `patch.safetensors`; `item_patch_sha256` checks its weights file. A new version because a reader of format 5 would ignore those keys and files and serve the
  task without its adapter; folders of formats 1 to 5 load as user-encoder patches.
  Format 6 folders may also record `max_length`, the input length the task was fine-tuned with, which serving
  and evaluation read by default; a folder without it (or a reader that ignores it) uses the tokenizer's
  `model_max_length`, as before.

A reader ignores keys it does not know (a newer writer's additions) with a warning and refuses only a newer format
version, whose tensors it could misread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field

from .registry import (
    DEFAULT_PATCH_TARGET,
    DEFAULT_PATCH_TYPE,
    HEAD_TERMS,
    INSERTIONS,
    ITEM_PATCH_TYPES,
    METHODS,
    PATCH_TARGETS,
    PATCH_TYPES,
    READOUTS,
    TASK_KINDS,
    FineTuningMethod,
    PatchTarget,
    TaskKind,
    choose,
)

logger = logging.getLogger(__name__)

PATCH_CONFIG_NAME = "patch_config.json"
PATCH_WEIGHTS_NAME = "patch.safetensors"
PATCH_FORMAT_VERSION = 6

PATCH_SETTINGS = (
    "insertion",
    "places",
    "blocks",
    "bottleneck_size",
    "activation",
    "lora_rank",
    "lora_alpha",
    "phm_dim",
    "phm_rank",
    "prompt_length",
    "train_layer_norms",
    "train_tcl_embedding",
)
"""The fields that describe a patch (the patching methods' only); a patch is added with these (`add_patch`)."""


@dataclass
class PatchConfig:
    """What `patch_config.json` records: enough to rebuild the task model around a backbone and check it.

    Attributes:
        task: the name the patch is registered under (no '.'); `load_patch(..., task=...)` may rename it.
        method: a name of `registry.METHODS`.
        head: a task kind of `registry.TASK_KINDS` with a head (`"classification"`, `"ranking"`).
        patch_type: what the patching methods add to the user encoder (`registry.PATCH_TYPES`); formats 1 to 4:
            `"model_patch"`.
        patch_target: where the patch goes (`registry.PATCH_TARGETS`): `"user_encoder"` (formats 1 to 5),
            `"item_encoder"` or `"both"` for a backbone whose items come from their text (format 6).
        item_patch_type: the PEFT method in the item encoder (`registry.ITEM_PATCH_TYPES`), None without one.
        item_patch: that adapter's PEFT configuration as PEFT resolved it; kept in PEFT's
            `item_encoder_adapter/adapter_config.json`, not in `patch_config.json`.
        insertion: the model patch's insertion (`registry.INSERTIONS`).
        places, blocks: where the patch goes: places in a block (sub-layers, convolutions, weights) and which
            blocks (`registry.BLOCK_CHOICES`); None: the type's defaults.
        bottleneck_size, activation: a bottleneck's width and nonlinearity (None: the backbone configuration's).
        lora_rank, lora_alpha, phm_dim, phm_rank, prompt_length: the settings of LoRA, Compacter and the soft
            prompt (`adapters.PatchKind`).
        train_layer_norms, train_tcl_embedding: task-owned copies of the backbone's LayerNorms (`norm1`, `norm2`
            of PeterRec's blocks; `attention_norm`, `feed_forward_norm`, `final_norm` of SASRec) / of the `[TCL]`
            embedding.
        readout: how the task reads a user vector (`registry.READOUTS`); None (formats 1 and 2): the backbone
            config's `readout`.
        head_terms: what the head adds up (`registry.HEAD_TERMS`): the deep term, a wide term over the item bag,
            or both.
        max_length: the longest input (special tokens included) the task was fine-tuned with; `recommend`,
            `predict` and `evaluate` read that many most recent items unless told otherwise. None: unrecorded.
        label_names: class names in label-id order (classification).
        num_target_items, target_names, ranking_loss, num_negatives: the ranking head.
        target_texts: the text of each target item, in target order, for a backbone whose items come from their
            text (format 5).
        backbone_fingerprint: SHA-256 of the frozen backbone's own weights.
        backbone_repo_id, backbone_revision: where the backbone lives on the Hub, when known.
        trainable_parameters: names of the trained parameters, relative to the task (format 2).
        evaluation_seed: seed of the sampled evaluation candidates of the recorded metrics.
        weights_sha256: SHA-256 of `patch.safetensors`.
        item_patch_sha256: SHA-256 of `item_encoder_adapter/adapter_model.safetensors` (format 6).
        format_version: the patch format (see the module docstring).
    """

    task: str
    method: str
    head: str
    patch_type: str = DEFAULT_PATCH_TYPE
    patch_target: str = DEFAULT_PATCH_TARGET
    item_patch_type: str | None = None
    item_patch: dict | None = None
    insertion: str | None = None
    places: list[str] | None = None
    blocks: str | None = None
    bottleneck_size: int | None = None
    activation: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    phm_dim: int | None = None
    phm_rank: int | None = None
    prompt_length: int | None = None
    train_layer_norms: list[str] = field(default_factory=list)
    train_tcl_embedding: bool = False
    readout: str | None = None
    head_terms: str = "deep"
    max_length: int | None = None
    label_names: list[str] | None = None
    num_target_items: int | None = None
    target_names: list[str] | None = None
    target_texts: list[str] | None = None
    ranking_loss: str = "bpr"
    num_negatives: int = 1
    backbone_fingerprint: str = ""
    backbone_repo_id: str | None = None
    backbone_revision: str | None = None
    trainable_parameters: list[str] = field(default_factory=list)
    evaluation_seed: int | None = None
    weights_sha256: str | None = None
    item_patch_sha256: str | None = None
    format_version: int = PATCH_FORMAT_VERSION

    @property
    def method_record(self) -> FineTuningMethod:
        return METHODS[self.method]

    @property
    def task_kind(self) -> TaskKind:
        return TASK_KINDS[self.head]

    @property
    def target_record(self) -> PatchTarget:
        return PATCH_TARGETS[self.patch_target]

    def validate(self) -> None:
        method = choose(METHODS, self.method, "method")
        kind = choose(TASK_KINDS, self.head, "head")
        if kind.head is None:
            raise ValueError(
                f"Task kind {self.head!r} has no transfer head; use 'classification' or 'ranking'."
            )
        choose(PATCH_TYPES, self.patch_type, "patch type")
        if not method.adds_patches and self.patch_type != DEFAULT_PATCH_TYPE:
            raise ValueError(
                f"Method {self.method!r} adds no patch; patch_type={self.patch_type!r} needs a patching method."
            )
        target = choose(PATCH_TARGETS, self.patch_target, "patch target")
        if not method.adds_patches and self.patch_target != DEFAULT_PATCH_TARGET:
            raise ValueError(
                f"Method {self.method!r} adds no patch; patch_target={self.patch_target!r} needs a patching method."
            )
        if target.item_encoder:
            choose(ITEM_PATCH_TYPES, self.item_patch_type, "item patch type")
        elif self.item_patch_type is not None or self.item_patch is not None:
            raise ValueError(
                f"patch_target={self.patch_target!r} puts no adapter into the item encoder; an item_patch_type needs "
                "patch_target 'item_encoder' or 'both'."
            )
        user_settings = {name: getattr(self, name) for name in PATCH_SETTINGS if getattr(self, name)}
        if not target.user_encoder and (user_settings or self.patch_type != DEFAULT_PATCH_TYPE):
            raise ValueError(
                f"patch_target={self.patch_target!r} puts no patch into the user encoder, so it takes no patch_type "
                f"or user-encoder patch settings; got patch_type={self.patch_type!r}, {user_settings}. Use "
                "patch_target='both' to patch both encoders."
            )
        if self.insertion is not None:
            choose(INSERTIONS, self.insertion, "insertion mode")
        if not method.adds_patches and any(getattr(self, name) for name in PATCH_SETTINGS):
            raise ValueError(
                f"Method {self.method!r} adds no patch, so it takes no patch settings; got "
                f"{ {name: getattr(self, name) for name in PATCH_SETTINGS if getattr(self, name)} }."
            )
        if self.readout is not None:
            choose(READOUTS, self.readout, "readout")
        reads_backbone = method.adds_patches or not method.shares_backbone
        if not choose(HEAD_TERMS, self.head_terms, "head terms").deep and reads_backbone:
            raise ValueError(
                f"head_terms={self.head_terms!r} reads no backbone, so method {self.method!r} would "
                "prepare backbone weights that never run; use method 'fine_cls' (the head alone)."
            )
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"max_length must be an integer of at least 2, got {self.max_length!r}.")
        if not self.task or "." in self.task:
            raise ValueError(f"Task name {self.task!r} must be non-empty and contain no '.'.")
        if self.head == "classification" and not self.label_names:
            raise ValueError("A classification task needs label_names (class names in label-id order).")
        if self.head == "ranking" and not self.num_target_items:
            raise ValueError("A ranking task needs num_target_items (the size of the target-item table).")
        if self.target_texts is not None and len(self.target_texts) != self.num_target_items:
            raise ValueError(
                f"target_texts has {len(self.target_texts)} texts for {self.num_target_items} target items."
            )

    def to_json_string(self) -> str:
        record = dataclasses.asdict(self)
        del record["item_patch"]  # PEFT's adapter_config.json holds it
        return json.dumps(record, indent=2) + "\n"

    @classmethod
    def from_json_string(cls, text: str, source: str = PATCH_CONFIG_NAME) -> PatchConfig:
        """Reads a patch configuration of this or an earlier format; keys of a newer writer are ignored with a
        warning, a newer format version is refused."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON ({error}); save the patch again.") from error
        if not isinstance(values, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(values).__name__}.")
        version = values.get("format_version", 1)
        if not isinstance(version, int) or version > PATCH_FORMAT_VERSION:
            raise ValueError(
                f"{source} has patch format {version!r}, newer than this version of peterrec reads (up to "
                f"{PATCH_FORMAT_VERSION}); upgrade peterrec to load it."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning(f"{source}: ignoring keys this version of peterrec does not know: {unknown}.")
        try:
            config = cls(**{key: value for key, value in values.items() if key in known})
        except TypeError as error:
            raise ValueError(f"{source} is not a valid patch configuration: {error}") from error
        config.validate()
        return config


def relative_name(name: str, task: str) -> str:
    """A task model's parameter name without the task (`...patches.gender.conv1...` -> `...patches.conv1...`,
    `peterrec.tcl_embeddings.gender` -> `peterrec.tcl_embeddings`), as stored by format 2."""
    name = name.replace(f".patches.{task}.", ".patches.")
    suffix = f"tcl_embeddings.{task}"
    return name[: -len(task) - 1] if name.endswith(suffix) else name


def task_name(name: str, task: str) -> str:
    """The inverse of `relative_name`: the parameter name under `task`."""
    name = name.replace(".patches.", f".patches.{task}.")
    return f"{name}.{task}" if name.endswith("tcl_embeddings") else name


__all__ = [
    "PATCH_CONFIG_NAME",
    "PATCH_FORMAT_VERSION",
    "PATCH_WEIGHTS_NAME",
    "PatchConfig",
    "relative_name",
    "task_name",
]
