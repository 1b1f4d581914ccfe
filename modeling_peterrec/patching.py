"""Parameter-efficient transfer (Section 3.3): fine-tuning methods, patch files, Hub sharing, many tasks on one backbone.

A pretrained backbone is prepared for a downstream task by one function, `prepare_for_transfer`, which adds the
task head and, for PeterRec, the model patches; freezes what the method keeps; and reports the trainable share.
`save_patch` writes only what the method trained (`patch.safetensors`) with its configuration
(`patch_config.json`) and a model card; `load_patch` attaches it to any copy of the backbone whose frozen weights
have the same fingerprint. `MultiTaskPeterRec` keeps one backbone in memory and serves many patched tasks, even
in one mixed batch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hub_cards.cards import render_patch_card

from ._io import atomic_folder
from .configuration_peterrec import INSERTION_MODES, PeterRecConfig
from .modeling_peterrec import (
    PeterRecForItemRanking,
    PeterRecForSequenceClassification,
    PeterRecModel,
    PeterRecPreTrainedModel,
    to_device,
)

PATCH_CONFIG_NAME = "patch_config.json"
PATCH_WEIGHTS_NAME = "patch.safetensors"
PATCH_FORMAT_VERSION = 1

METHODS = {
    "peterrec": "model patches and the task head on the frozen pretrained backbone",
    "fine_all": "every parameter of the pretrained backbone and the task head",
    "fine_cls": "the task head only, on the frozen pretrained backbone",
    "fine_last1": "the last dilated conv layer with its LayerNorm, and the task head",
    "fine_last2": "the last two dilated conv layers with their LayerNorms, and the task head",
    "peter_zero": "as peterrec, on a randomly initialised backbone",
    "fine_zero": "as fine_all, on a randomly initialised backbone",
}
"""The fine-tuning methods compared in Section 4 (RQ1, RQ2) and what each trains."""

PATCHED_METHODS = ("peterrec", "peter_zero")
SHAREABLE_METHODS = ("peterrec", "fine_cls")
"""Methods that leave the pretrained backbone untouched, so that one backbone serves all their tasks."""

HEADS = {"classification": PeterRecForSequenceClassification, "ranking": PeterRecForItemRanking}


@dataclass
class TransferConfig:
    """What `patch_config.json` records: enough to rebuild the task model around a backbone and check it."""

    task: str
    method: str
    head: str
    insertion: str | None = None
    bottleneck_size: int | None = None
    activation: str | None = None
    train_layer_norms: list[str] = field(default_factory=list)
    train_tcl_embedding: bool = False
    label_names: list[str] | None = None
    num_target_items: int | None = None
    target_names: list[str] | None = None
    ranking_loss: str = "bpr"
    num_negatives: int = 1
    backbone_fingerprint: str = ""
    backbone_repo_id: str | None = None
    backbone_revision: str | None = None
    trainable_parameters: list[str] = field(default_factory=list)
    format_version: int = PATCH_FORMAT_VERSION

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {list(METHODS)}.")
        if self.head not in HEADS:
            raise ValueError(f"Unknown head {self.head!r}; choose one of {list(HEADS)}.")
        if self.method in PATCHED_METHODS and self.insertion not in INSERTION_MODES:
            raise ValueError(
                f"Method {self.method!r} needs an insertion mode, one of {list(INSERTION_MODES)}; "
                f"got {self.insertion!r}."
            )
        if not self.task or "." in self.task:
            raise ValueError(f"Task name {self.task!r} must be non-empty and contain no '.'.")
        if self.head == "classification" and not self.label_names:
            raise ValueError("A classification task needs label_names (class names in label-id order).")
        if self.head == "ranking" and not self.num_target_items:
            raise ValueError("A ranking task needs num_target_items (the size of the target-item table).")


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


def backbone_of(model: nn.Module) -> PeterRecModel:
    """The PeterRecModel inside any PeterRec model (or the model itself)."""
    if isinstance(model, PeterRecModel):
        return model
    backbone = getattr(model, "peterrec", None)
    if not isinstance(backbone, PeterRecModel):
        raise TypeError(f"Expected a PeterRec model, got {type(model).__name__}.")
    return backbone


def base_weight_names(backbone: PeterRecModel) -> list[str]:
    """Names of the backbone's own weights, without any task's patches or task-owned copies."""
    return [
        name
        for name in backbone.state_dict()
        if ".patches." not in name and not name.startswith("tcl_embeddings.")
    ]


def backbone_fingerprint(backbone: PeterRecModel) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the backbone's own weights."""
    digest = hashlib.sha256()
    state = backbone.state_dict()
    for name in sorted(base_weight_names(backbone)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def _build_head_model(backbone: PeterRecModel, spec: TransferConfig) -> PeterRecPreTrainedModel:
    """The task model around an existing backbone: the new head is initialised, the backbone is shared as it is."""
    fields = {
        key: value
        for key, value in backbone.config.to_dict().items()
        if key
        not in (
            "architectures",
            "auto_map",
            "transformers_version",
            "model_type",
            "id2label",
            "label2id",
            "num_labels",
        )
    }
    fields.update(
        patch_insertion=spec.insertion if spec.method in PATCHED_METHODS else None, patch_task=spec.task
    )
    if spec.bottleneck_size:
        fields["patch_bottleneck_size"] = spec.bottleneck_size
    if spec.activation:
        fields["patch_activation"] = spec.activation
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
    config = PeterRecConfig(**fields)
    with torch.device("meta"):
        model = HEADS[spec.head](config)
    model.peterrec = backbone
    device = backbone.embed_items.weight.device
    for name, module in model.named_children():
        if name != "peterrec":
            module.to_empty(device=device)
            for submodule in module.modules():
                model._init_weights(submodule)
    return model.to(backbone.embed_items.weight.dtype)


def _trainable_names(model: PeterRecPreTrainedModel, spec: TransferConfig) -> list[str]:
    """The parameters `spec.method` trains (`METHODS`), by name in the task model."""
    names = [name for name, _ in model.named_parameters()]
    head = [name for name in names if not name.startswith("peterrec.")]
    if spec.method in ("fine_all", "fine_zero"):
        return [name for name in names if ".patches." not in name and ".tcl_embeddings." not in name]
    if spec.method in PATCHED_METHODS:
        own = (f".patches.{spec.task}.", f"peterrec.tcl_embeddings.{spec.task}")
        return [name for name in names if any(key in name for key in own)] + head
    last_layers = {
        "fine_cls": [],
        "fine_last1": ["conv2", "norm2"],
        "fine_last2": ["conv1", "norm1", "conv2", "norm2"],
    }
    last = len(backbone_of(model).blocks) - 1
    prefixes = tuple(f"peterrec.blocks.{last}.{layer}." for layer in last_layers[spec.method])
    return [name for name in names if name.startswith(prefixes)] + head


def prepare_for_transfer(
    backbone: nn.Module,
    method: str,
    task: str,
    head: str,
    label_names: Sequence[str] | None = None,
    num_target_items: int | None = None,
    target_names: Sequence[str] | None = None,
    insertion: str = "serial_two",
    bottleneck_size: int | None = None,
    activation: str | None = None,
    train_layer_norms: Sequence[str] = (),
    train_tcl_embedding: bool = False,
    ranking_loss: str = "bpr",
    num_negatives: int = 1,
    seed: int = 0,
) -> tuple[PeterRecPreTrainedModel, TransferReport]:
    """Prepares a pretrained backbone for one downstream task with one fine-tuning method.

    Adds the task head (a linear classifier, or a target-item table for cold-start ranking), adds the model
    patches for `peterrec`/`peter_zero` (Figure 3, `insertion`), re-initialises the backbone for the `*_zero`
    methods, and sets `requires_grad` so that exactly the method's parameters train (`METHODS`).

    Args:
        backbone: a `PeterRecModel`, or any PeterRec model holding one (e.g. the pretraining model).
        method: one of `METHODS`.
        task: name under which the patch is registered (no '.').
        head: `"classification"` or `"ranking"`.
        label_names / num_target_items / target_names: the output space of the head.
        insertion, bottleneck_size, activation: the model patch (PeterRec methods only).
        train_layer_norms: block LayerNorms (`"norm1"`, `"norm2"`) the PeterRec methods also train, as task-owned
            copies; the original code retrained `norm2`.
        train_tcl_embedding: the PeterRec methods also train a task-owned `[TCL]` embedding.
        ranking_loss, num_negatives: the ranking head's loss (`"bpr"`, `"binary"`, `"full_softmax"`).
        seed: seeds the new head and, for `*_zero`, the random backbone.

    Returns:
        The task model (sharing `backbone`'s weights unless the method is `*_zero`) and its parameter report.
    """
    spec = TransferConfig(
        task=task,
        method=method,
        head=head,
        insertion=insertion if method in PATCHED_METHODS else None,
        bottleneck_size=bottleneck_size if method in PATCHED_METHODS else None,
        activation=activation if method in PATCHED_METHODS else None,
        train_layer_norms=list(train_layer_norms) if method in PATCHED_METHODS else [],
        train_tcl_embedding=train_tcl_embedding and method in PATCHED_METHODS,
        label_names=list(label_names) if label_names is not None else None,
        num_target_items=num_target_items if head == "ranking" else None,
        target_names=list(target_names) if target_names is not None else None,
        ranking_loss=ranking_loss,
        num_negatives=num_negatives,
    )
    spec.validate()
    return _attach(backbone_of(backbone), spec, seed)


def _attach(
    backbone: PeterRecModel, spec: TransferConfig, seed: int = 0, fingerprint: str | None = None
) -> tuple[PeterRecPreTrainedModel, TransferReport]:
    """Builds the task model that `spec` describes around `backbone` (see `prepare_for_transfer`).

    `fingerprint` is the backbone's, when the caller has computed it already."""
    torch.manual_seed(seed)
    if spec.method.endswith("_zero"):
        backbone = PeterRecModel(PeterRecConfig(**{**backbone.config.to_dict(), "patch_insertion": None}))
        fingerprint = None
    spec.backbone_fingerprint = fingerprint or backbone_fingerprint(backbone)
    spec.backbone_repo_id = spec.backbone_repo_id or backbone.config.name_or_path or None
    if spec.method in PATCHED_METHODS:
        backbone.add_patch(
            spec.task,
            spec.insertion,
            spec.bottleneck_size,
            spec.activation,
            layer_norms=spec.train_layer_norms,
            tcl_embedding=spec.train_tcl_embedding,
        )
    model = _build_head_model(backbone, spec)
    spec.trainable_parameters = _trainable_names(model, spec)
    trainable = set(spec.trainable_parameters)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    model.transfer_config = spec
    return model, transfer_report(model)


def transfer_report(model: PeterRecPreTrainedModel) -> TransferReport:
    """Counts the trainable parameters and the whole model's (backbone, this task's patch and head)."""
    spec: TransferConfig = model.transfer_config
    other_tasks = [f".patches.{name}." for name in backbone_of(model).patch_insertions if name != spec.task]
    counted = [
        (name, p) for name, p in model.named_parameters() if not any(key in name for key in other_tasks)
    ]
    return TransferReport(
        method=spec.method,
        task=spec.task,
        trainable_parameters=sum(p.numel() for name, p in counted if name in set(spec.trainable_parameters)),
        total_parameters=sum(p.numel() for _, p in counted),
    )


def _stored_names(model: PeterRecPreTrainedModel, spec: TransferConfig) -> list[str]:
    """What a patch file holds: the trained parameters, plus, for the `*_zero` methods, the random backbone they
    started from (there is no pretrained backbone to attach them to)."""
    if not spec.method.endswith("_zero"):
        return list(spec.trainable_parameters)
    base = [f"peterrec.{name}" for name in base_weight_names(backbone_of(model))]
    return sorted(set(spec.trainable_parameters) | set(base))


def save_patch(
    model: PeterRecPreTrainedModel,
    folder: str | os.PathLike,
    metrics: dict[str, float] | None = None,
    full_ranking_metrics: dict[str, float] | None = None,
    backbone_repo_id: str | None = None,
    backbone_revision: str | None = None,
    dataset: str = "custom",
    repo_id: str | None = None,
) -> Path:
    """Writes the patch folder: `patch_config.json`, `patch.safetensors` (only what the method trained) and a
    model card. The folder appears complete or not at all."""
    spec: TransferConfig = model.transfer_config
    spec.backbone_repo_id = backbone_repo_id or spec.backbone_repo_id
    spec.backbone_revision = backbone_revision or spec.backbone_revision
    state = model.state_dict()
    tensors = {name: state[name].detach().contiguous() for name in _stored_names(model, spec)}
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        save_file(tensors, staging / PATCH_WEIGHTS_NAME, metadata={"format": "pt", "task": spec.task})
        (staging / PATCH_CONFIG_NAME).write_text(json.dumps(asdict(spec), indent=2) + "\n")
        report = transfer_report(model)
        card = render_patch_card(
            repo_id or folder.name,
            base_model=spec.backbone_repo_id or "peterrec-backbone",
            base_model_revision=spec.backbone_revision,
            task=spec.task,
            task_kind=spec.head,
            method=spec.method,
            insertion=spec.insertion,
            bottleneck_size=spec.bottleneck_size
            or (model.config.patch_bottleneck_size if spec.insertion else None),
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
            allow_patterns=[PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME, "README.md"],
        )
    )


def read_patch(
    source: str | os.PathLike, revision: str | None = None
) -> tuple[TransferConfig, dict[str, torch.Tensor]]:
    """Reads and checks a patch folder (local path or Hub repo id) without touching any model."""
    folder = _resolve(source, revision)
    for name in (PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} has no {name}; a patch folder holds {PATCH_CONFIG_NAME} and "
                f"{PATCH_WEIGHTS_NAME} (written by save_patch)."
            )
    try:
        spec = TransferConfig(**json.loads((folder / PATCH_CONFIG_NAME).read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(
            f"{folder / PATCH_CONFIG_NAME} is not a valid patch configuration: {error}"
        ) from error
    if spec.format_version != PATCH_FORMAT_VERSION:
        raise ValueError(
            f"Patch format {spec.format_version} is not supported (expected {PATCH_FORMAT_VERSION})."
        )
    spec.validate()
    try:
        tensors = load_file(folder / PATCH_WEIGHTS_NAME)
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{folder / PATCH_WEIGHTS_NAME} is corrupt or truncated ({error}); download or save it again."
        ) from error
    return spec, tensors


def load_patch(
    source: str | os.PathLike, backbone: nn.Module, revision: str | None = None
) -> PeterRecPreTrainedModel:
    """Attaches a saved patch to `backbone` and returns the task model.

    `source` is a patch folder or a Hub repo id (with `revision`). The backbone's own weights must have the
    fingerprint recorded at training time; for methods that train backbone weights (`fine_*`), the task model gets
    its own copy of the backbone so the one passed in stays as it is.

    Raises:
        ValueError: the backbone differs from the patch's, or the patch file has missing, extra or misshaped
            tensors, or is truncated.
    """
    spec, tensors = read_patch(source, revision)
    return _load(spec, tensors, backbone_of(backbone))


def _load(
    spec: TransferConfig, tensors: dict[str, torch.Tensor], backbone: PeterRecModel
) -> PeterRecPreTrainedModel:
    """`load_patch` once the patch is read: checks it against the backbone, then attaches it. On any error the
    backbone is left as it was."""
    fingerprint = None
    if not spec.method.endswith("_zero"):
        fingerprint = backbone_fingerprint(backbone)
        if fingerprint != spec.backbone_fingerprint:
            raise ValueError(
                f"This patch was trained on a backbone with fingerprint {spec.backbone_fingerprint[:12]}..., but the "
                f"given backbone has {fingerprint[:12]}... ({spec.backbone_repo_id or 'unknown repo'}, revision "
                f"{spec.backbone_revision or 'unknown'}); load the backbone the patch was trained on."
            )
    if spec.method not in SHAREABLE_METHODS and not spec.method.endswith("_zero"):
        backbone = copy.deepcopy(backbone)  # the method changes backbone weights: keep the caller's intact
    model, _ = _attach(backbone, dataclasses.replace(spec), fingerprint=fingerprint)
    stored = set(_stored_names(model, spec))
    expected = {name: parameter for name, parameter in model.named_parameters() if name in stored}
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    mismatched = [
        name for name in set(tensors) & set(expected) if tensors[name].shape != expected[name].shape
    ]
    if missing or extra or mismatched:
        if spec.task in backbone.patch_kinds:
            backbone.remove_patch(spec.task)
        if mismatched:
            name = sorted(mismatched)[0]
            raise ValueError(
                f"Patch tensor {name} has shape {tuple(tensors[name].shape)}, the model expects "
                f"{tuple(expected[name].shape)}."
            )
        raise ValueError(
            f"The patch file does not match its configuration: missing {missing[:5]}, extra {extra[:5]}."
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)
    model.transfer_config = spec
    return model.eval()


def push_patch_to_hub(
    model: PeterRecPreTrainedModel,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload PeterRec patch",
    token: str | None = None,
    **save_kwargs,
) -> str:
    """Saves the patch (see `save_patch`) and uploads the folder to the Hub; returns the commit's revision."""
    backbone_repo_id = save_kwargs.get("backbone_repo_id") or model.transfer_config.backbone_repo_id
    if not backbone_repo_id or backbone_repo_id.count("/") != 1 or Path(backbone_repo_id).exists():
        raise ValueError(
            f"The patch card must name its backbone's Hub repo id ('namespace/name'), got "
            f"{backbone_repo_id!r}; push the backbone first and pass backbone_repo_id=..."
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        folder = save_patch(model, Path(staging) / "patch", repo_id=repo_id, **save_kwargs)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return commit.oid


class MultiTaskPeterRec(nn.Module):
    """One backbone in memory serving many patched tasks (Section 1: one model, many downstream tasks).

    Patches of different tasks, even with different insertion modes, are attached to the same backbone. A call
    runs one task for the whole batch (`task="gender"`, or the active task), or a mixed batch with one task per
    row, in which each row goes through its own task's patch and head.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone_of(backbone)
        self.tasks = nn.ModuleDict()
        self.active_task: str | None = None

    def load_patch(self, source: str | os.PathLike, revision: str | None = None) -> str:
        """Attaches a saved patch; returns its task name, which becomes the active task."""
        spec, tensors = read_patch(source, revision)
        if spec.method not in SHAREABLE_METHODS:
            raise ValueError(
                f"A {spec.method} patch changes the backbone itself and cannot share it; serve it as a "
                f"separate model (load_patch) or use one of {list(SHAREABLE_METHODS)}."
            )
        if spec.task in self.tasks:
            raise ValueError(f"Task {spec.task!r} is already loaded.")
        self.tasks[spec.task] = _load(spec, tensors, self.backbone)
        self.active_task = spec.task
        return spec.task

    def set_active_task(self, task: str) -> None:
        """Switches the task used when `forward` gets none; the backbone is not reloaded."""
        self._check([task])
        self.active_task = task

    def _check(self, tasks: Sequence[str]) -> None:
        unknown = sorted(set(tasks) - set(self.tasks))
        if unknown:
            raise KeyError(f"No task named {unknown}; loaded tasks are {sorted(self.tasks)}.")

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        task: str | Sequence[str] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Task outputs (class logits, or scores of every target item).

        Returns a (batch, outputs) tensor for a single task, or a list with one output vector per row for a
        mixed batch (tasks have different output sizes). In a mixed batch the rows of tasks whose patches are
        alike (same insertion, size and activation) run through their patches together, with per-row weights.
        """
        task = task or self.active_task
        if task is None:
            raise ValueError("No task given and none active; load a patch or pass task=...")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.backbone.config.pad_token_id)
        if isinstance(task, str):
            self._check([task])
            users = self._user_vectors(input_ids, attention_mask, self.tasks[task].patch_name)
            return self.tasks[task].logits_from_user_vectors(users)
        per_row = list(task)
        self._check(per_row)
        # Rows sorted by (kind of patch, task): the backbone needs no reordering and each head reads a slice.
        kind_of = {name: self.backbone.patch_kinds.get(self.tasks[name].patch_name or "") for name in per_row}
        kinds = list(dict.fromkeys(kind_of.values()))
        tasks = sorted(kind_of, key=lambda name: kinds.index(kind_of[name]))
        order = sorted(range(len(per_row)), key=lambda row: tasks.index(per_row[row]))
        if order != list(range(len(per_row))):
            index = to_device(order, input_ids.device)
            input_ids, attention_mask = input_ids[index], attention_mask[index]
        sorted_tasks = [per_row[row] for row in order]
        users = self._user_vectors(
            input_ids, attention_mask, [self.tasks[name].patch_name or None for name in sorted_tasks]
        )
        outputs: list[torch.Tensor | None] = [None] * len(per_row)
        start = 0
        for name in tasks:
            count = sorted_tasks.count(name)
            logits = self.tasks[name].logits_from_user_vectors(users[start : start + count])
            for row, vector in zip(order[start : start + count], logits.unbind(0), strict=True):
                outputs[row] = vector
            start += count
        return outputs

    def _user_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, patch) -> torch.Tensor:
        hidden = self.backbone(input_ids, attention_mask=attention_mask, patch=patch).last_hidden_state
        return self.backbone.user_representation(hidden, attention_mask)
