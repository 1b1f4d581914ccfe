"""Model cards for PeterRec backbones and patches, rendered from the templates next to this file.

Both cards carry their metrics as `model-index` (through `EvalResult`), so the Hub shows them and tools can read
them back. A backbone card describes the pretrained user model (library `transformers`, loadable with
`trust_remote_code`); a patch card describes a task patch (library `peterrec`) and points at its backbone with
`base_model` and `base_model_relation: adapter`.

Metric names are those of `modeling_peterrec.metrics` (`"accuracy"`, `"macro_f1"`, `"hr@5"`, `"mrr@5"`,
`"ndcg@10"`, ...); values are plain floats.
"""

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "BACKBONE_TEMPLATE",
    "PATCH_TEMPLATE",
    "render_backbone_card",
    "render_patch_card",
    "retarget_card",
]

BACKBONE_TEMPLATE = Path(__file__).with_name("backbone_card.md")
PATCH_TEMPLATE = Path(__file__).with_name("patch_card.md")

_TAGS = ["peterrec", "sequential-recommendation"]
_PRETRAINING_LOSSES = {"full_softmax": "softmax over all items", "sampled_softmax": "sampled softmax"}
_METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "hr": "HR", "mrr": "MRR", "ndcg": "NDCG"}
# What `model-index` (which needs a dataset) names when the evaluation data is not known; no `datasets` is written.
_UNKNOWN_DATASET = "unspecified"
# What cards of earlier versions wrote as `datasets` when the data was not known.
_PLACEHOLDER_DATASETS = [["custom"]]


def _metric_name(metric_type: str) -> str:
    """Display name of a metric key: `"mrr@5"` -> `"MRR@5"`, `"macro_f1"` -> `"Macro-F1"`."""
    base, at, cutoff = metric_type.partition("@")
    return _METRIC_NAMES.get(base, base) + at + cutoff


def _check_metrics(metrics: Mapping[str, float] | None, argument: str) -> dict[str, float]:
    checked = {}
    for name, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"`{argument}[{name!r}]` must be a number, got {type(value).__name__}: pass plain floats."
            )
        checked[name] = float(value)
    return checked


def _check_count(value: int, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{argument}` must be a positive number of parameters, got {value!r}.")
    return value


def _eval_results(
    metrics: Mapping[str, float],
    *,
    task_type: str,
    task_name: str,
    dataset: str,
    dataset_name: str,
    dataset_split: str,
    metric_config: str | None = None,
    name_suffix: str = "",
) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=dataset,
            dataset_name=dataset_name,
            dataset_split=dataset_split,
            metric_type=metric_type,
            metric_name=_metric_name(metric_type) + name_suffix,
            metric_config=metric_config,
            metric_value=value,
        )
        for metric_type, value in metrics.items()
    ]


def _metric_rows(results: Sequence[EvalResult]) -> list[tuple[str, str]]:
    return [(result.metric_name, f"{result.metric_value:.4f}") for result in results]


def render_backbone_card(
    repo_id: str,
    *,
    is_causal: bool,
    hidden_size: int,
    dilations: Sequence[int] = (),
    vocab_size: int,
    num_parameters: int,
    dataset: str,
    dataset_name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    dataset_split: str = "test",
    kernel_size: int = 3,
    pretraining_loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax",
    training_summary: str | None = None,
    license: str | None = "apache-2.0",
    architecture: Sequence[tuple[str, str]] | None = None,
    model_title: str | None = None,
    backbone_class: str = "PeterRecModel",
) -> ModelCard:
    """Card for a pretrained backbone (the `README.md` of a backbone folder).

    Args:
        repo_id: the backbone's repository id, used in the title and the loading snippets.
        is_causal: causal NextItNet backbone pretrained by next-item prediction, or non-causal GRec encoder
            pretrained by masked-item prediction.
        hidden_size, dilations, vocab_size, kernel_size: the architecture (`PeterRecConfig` fields); one dilation
            per conv layer, two conv layers per residual block.
        num_parameters: parameter count of the saved model.
        dataset: id of the pretraining data (the `datasets` metadata and the `model-index` dataset type).
        dataset_name: readable name of the data; defaults to `dataset`.
        metrics: pretraining metrics, the held-out last item ranked over the whole item pool (e.g.
            `{"mrr@5": 0.08, "hr@5": 0.15}` from `full_ranking_metrics`).
        dataset_split: split the metrics were computed on.
        pretraining_loss: `"full_softmax"` (the paper) or `"sampled_softmax"` (the original code's option).
        training_summary: optional free text (steps, batch size, hardware).
        license: license identifier for the metadata.
        architecture: (name, value) rows describing another model type of the family (its configuration's
            `architecture_rows()`), instead of the dilated-convolution rows of `hidden_size`, `dilations` and
            `kernel_size`.
        model_title: that model type's title (`registry.MODEL_TYPES`), said first in the card; default PeterRec's.
        backbone_class: the package class that loads the user model without `trust_remote_code`.
    """
    if pretraining_loss not in _PRETRAINING_LOSSES:
        raise ValueError(
            f"Unknown pretraining_loss {pretraining_loss!r}; use one of {list(_PRETRAINING_LOSSES)}."
        )
    if architecture is None and (not dilations or len(dilations) % 2):
        raise ValueError(
            f"`dilations` needs one entry per conv layer, two per residual block; got {list(dilations)}."
        )
    metrics = _check_metrics(metrics, "metrics")
    dataset_name = dataset_name or dataset
    loss = _PRETRAINING_LOSSES[pretraining_loss]
    if is_causal:
        variant = "causal (NextItNet): each position sees only itself and earlier positions"
        objective = f"causal next-item prediction at every non-pad position ({loss})"
    else:
        variant = "non-causal (GRec encoder): each position sees both sides"
        objective = (
            "masked-item prediction: 30% of the positions are masked (80% `[MASK]`, 10% a random item, "
            f"10% unchanged) and the original items predicted ({loss})"
        )
    results = _eval_results(
        metrics,
        task_type="next-item-prediction",
        task_name="Next-item prediction (held-out last item, whole item pool)",
        dataset=dataset,
        dataset_name=dataset_name,
        dataset_split=dataset_split,
    )
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=[*_TAGS, "next-item-prediction" if is_causal else "masked-item-prediction"],
        datasets=[dataset],
        license=license,
        eval_results=results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(BACKBONE_TEMPLATE),
        repo_id=repo_id,
        variant_description=variant,
        objective_description=objective,
        dataset_description=dataset_name,
        training_summary=training_summary,
        model_title=model_title,
        backbone_class=backbone_class,
        architecture_rows=architecture
        or [
            ("Hidden size", str(hidden_size)),
            ("Residual blocks", str(len(dilations) // 2)),
            ("Dilated convolution layers", str(len(dilations))),
            ("Dilations", ", ".join(str(d) for d in dilations)),
            ("Kernel size", str(kernel_size)),
        ],
        vocab_size=f"{vocab_size:,}",
        num_parameters=f"{_check_count(num_parameters, 'num_parameters'):,}",
        head_auto_class="AutoModelForCausalLM" if is_causal else "AutoModelForMaskedLM",
        evaluation_description=(
            "The held-out last item of each user's sequence ranked over the whole item pool (ties count against "
            f"the true item), on the {dataset_split} split of {dataset_name}."
        ),
        metric_rows=_metric_rows(results),
    )


def render_patch_card(
    repo_id: str,
    *,
    base_model: str,
    task: str,
    task_kind: Literal["classification", "ranking"],
    method: str,
    insertion: str | None,
    trainable_parameters: int,
    backbone_parameters: int,
    dataset: str | None = None,
    dataset_name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    full_ranking_metrics: Mapping[str, float] | None = None,
    label_names: Sequence[str] | None = None,
    bottleneck_size: int | None = None,
    readout: str = "tcl",
    head_terms: str = "deep",
    patch_type: str = "model_patch",
    patch_places: Sequence[str] | None = None,
    patch_blocks: str | None = None,
    patch_target: str = "user_encoder",
    item_patch_type: str | None = None,
    item_patch_modules: Sequence[str] | None = None,
    base_model_revision: str | None = None,
    dataset_split: str = "test",
    license: str | None = "apache-2.0",
) -> ModelCard:
    """Card for a task patch (the `README.md` of a patch folder).

    Args:
        repo_id: the patch's repository id, used in the title and the loading snippet.
        base_model: repository id of the backbone the patch was trained on.
        task: task name (e.g. `"GenEst"`, `"ColdRec"`).
        task_kind: `"classification"` (user-profile prediction) or `"ranking"` (cold-start recommendation).
        method: fine-tuning method (e.g. `"PeterRec"`, `"FineAll"`).
        insertion: patch insertion mode (`"serial_one"`, `"serial_two"`, `"parallel_before_ln"`,
            `"parallel_after_act"`), or None for a method without patches.
        trainable_parameters: parameters the method trained (the contents of `patch.safetensors`).
        backbone_parameters: parameters of the frozen backbone, for the share.
        dataset, dataset_name, dataset_split: the evaluation data (id, readable name, split); without `dataset`
            the card has no `datasets` metadata.
        metrics: classification metrics, or for ranking the paper's protocol (true item among 99 sampled negatives).
        full_ranking_metrics: for ranking, the same measures over the full ranking of all target items.
        label_names: class names of a classification task.
        bottleneck_size: the patch's inner width.
        patch_type: what the method added (`registry.PATCH_TYPES`), for a method that adds patches.
        patch_places, patch_blocks: where in each block the patch went, and which blocks (`all`, `first`, `last`).
        patch_target: which encoder the patch went into (`registry.PATCH_TARGETS`).
        item_patch_type, item_patch_modules: the PEFT method in the item encoder's text model
            (`registry.ITEM_PATCH_TYPES`) and the modules it adapts (LoRA's target modules), when it has one.
        readout: how the task reads a user vector from the backbone (`registry.READOUTS`).
        head_terms: what the head adds up (`registry.HEAD_TERMS`): the deep term, a wide term over the item bag,
            or both.
        base_model_revision: backbone revision (commit sha) the patch was trained on.
        license: license identifier for the metadata.
    """
    # Imported here: the package imports this module while it initialises (saving.py renders cards).
    from modeling_peterrec.registry import (
        HEAD_TERMS,
        INSERTIONS,
        ITEM_PATCH_TYPES,
        PATCH_TARGETS,
        PATCH_TYPES,
        READOUTS,
        TASK_KINDS,
        choose,
    )

    kind = choose({name: kind for name, kind in TASK_KINDS.items() if kind.head}, task_kind, "task_kind")
    mode = None if insertion is None else choose(INSERTIONS, insertion, "insertion")
    kind_of_patch = choose(PATCH_TYPES, patch_type, "patch type")
    target = choose(PATCH_TARGETS, patch_target, "patch target")
    item_patch = (
        None if item_patch_type is None else choose(ITEM_PATCH_TYPES, item_patch_type, "item patch type")
    )
    user_readout = choose(READOUTS, readout, "readout")
    terms = choose(HEAD_TERMS, head_terms, "head terms")
    if task_kind == "classification" and not label_names:
        raise ValueError(
            "A classification patch card needs `label_names` (the class names, in label-id order)."
        )
    if full_ranking_metrics and task_kind != "ranking":
        raise ValueError("`full_ranking_metrics` only applies to task_kind='ranking'.")
    trainable = _check_count(trainable_parameters, "trainable_parameters")
    backbone = _check_count(backbone_parameters, "backbone_parameters")
    dataset_name = dataset_name or dataset or _UNKNOWN_DATASET
    task_type, task_description = kind.card_tag, kind.title
    common = {
        "task_type": task_type,
        "task_name": f"{task} ({task_description})",
        "dataset": dataset or _UNKNOWN_DATASET,
        "dataset_name": dataset_name,
        "dataset_split": dataset_split,
    }
    sampled = " (99 sampled negatives)" if task_kind == "ranking" else ""
    results = _eval_results(_check_metrics(metrics, "metrics"), name_suffix=sampled, **common)
    results += _eval_results(
        _check_metrics(full_ranking_metrics, "full_ranking_metrics"),
        metric_config="full-ranking",
        name_suffix=" (full ranking)",
        **common,
    )
    if task_kind == "ranking":
        evaluation = (
            f"On the {dataset_split} split of {dataset_name}: the true item ranked among 99 uniformly sampled "
            "negatives (the paper's protocol)"
            + (" and by the full ranking over all target items" if full_ranking_metrics else "")
            + "; ties count against the true item."
        )
    else:
        evaluation = f"On the {dataset_split} split of {dataset_name}."
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="peterrec",
        base_model=base_model,
        base_model_relation="adapter",
        tags=[*_TAGS, "model-patch", task_type],
        datasets=[dataset] if dataset else None,
        license=license,
        eval_results=results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(PATCH_TEMPLATE),
        repo_id=repo_id,
        base_model_url=f"https://huggingface.co/{base_model}",
        base_model_revision=base_model_revision,
        task=task,
        task_description=task_description,
        label_names=list(label_names or []),
        dataset_description=dataset_name,
        method=method,
        patch_type_description=f"{kind_of_patch.title} ({kind_of_patch.reference})",
        patch_target=target.title,
        item_patch_description=None
        if item_patch is None
        else f"{item_patch.title} ({item_patch.reference}), made with PEFT"
        + (f", on {', '.join(item_patch_modules)}" if item_patch_modules else ""),
        patch_places=", ".join(patch_places or []),
        patch_blocks=patch_blocks,
        insertion_description=(
            f"{mode.description} (Figure {mode.figure})"
            if mode is not None
            else None
            if patch_places or item_patch
            else "none: this method adds no model patch"
        ),
        bottleneck_size=bottleneck_size,
        readout_description=user_readout.description
        + (f" (Figure {user_readout.figure})" if user_readout.figure else ""),
        head_terms_description=f"{terms.name}: {terms.description}",
        trainable_parameters=f"{trainable:,}",
        backbone_parameters=f"{backbone:,}",
        trainable_share=f"{100 * trainable / backbone:.2f}%",
        evaluation_description=evaluation,
        metric_rows=_metric_rows(results),
    )


def retarget_card(card: ModelCard, repo_id: str, base_model: str | None = None) -> ModelCard:
    """The card of a saved folder, renamed for the Hub repository `repo_id` it is pushed to.

    A folder's card names the folder (and a patch card its backbone as it was given, possibly a local path); the
    title, the loading snippets and the metadata get `repo_id` (and `base_model`, for a patch) instead, in the
    places the templates put them. The `datasets: custom` placeholder of earlier versions is dropped. Everything
    else (metrics, sizes, text) stays as it was written.
    """
    card = ModelCard(str(card))
    title = re.search(r"^# (.+)$", card.text, flags=re.MULTILINE)
    text = card.text
    if base_model is not None and card.data.base_model is not None:
        old = card.data.base_model
        text = text.replace(
            f"[{old}](https://huggingface.co/{old})", f"[{base_model}](https://huggingface.co/{base_model})"
        )
        text = text.replace(f'"{old}"', f'"{base_model}"')
        card.data.base_model = base_model
    if title is not None:
        old = title.group(1)
        text = text[: title.start()] + f"# {repo_id}" + text[title.end() :]
        text = text.replace(f'"{old}"', f'"{repo_id}"')
    card.text = text
    card.data.model_name = repo_id.split("/")[-1]
    if card.data.datasets in _PLACEHOLDER_DATASETS:
        card.data.datasets = None
    return card
