"""What the reproduction runs (Section 4, RQ1-RQ4): presets, tasks, research questions and their configurations.

- RQ1 (Table 2, Figure 4): PeterRec vs PeterZero and FineAll vs FineZero, causal backbone, serial insertion (c).
- RQ2 (Table 3, Figure 5): FineCLS, FineLast1, FineLast2, FineAll and PeterRec with serial (c) and parallel (d)
  insertion on the non-causal backbone, with the trainable share of each method.
- RQ3 (Tables 4, 5): PeterRec against the majority-class rule (LabelCS) for user profiles and item popularity for
  ColdRec, beside classical baselines (`baselines.py`).
- RQ4 (Tables 6, 7, Figure 6): causal vs non-causal pretraining, insertions (b)-(e), and PeterRec vs FineAll
  with 10% and 30% of the training users.
- RQ5 (not in the paper; docs/transfer.md): transfer with a whole-history readout (the attention pooling), the
  second LayerNorm and a task [TCL] vector trained with the patches: PeterRec against PeterZero, FineAll and FineCLS
  with the same head, the head-terms ablation (deep only, wide only, wide & deep; `registry.HEAD_TERMS`), and 10% of
  the training users, beside the classical baselines.
- RQ6 (Adapter4Rec, Fu, Yuan et al., WSDM 2024; docs/adapters.md): every patch type (`registry.PATCH_TYPES`) on
  the dilated-conv and the self-attention backbone against FineAll and FineCLS, where to insert (first, last or
  all blocks), LayerNorm tuning on and off, and 10%, 30% and 100% of the target training users.
- RQ7 (TransRec, SPEC §10; docs/text_items.md): ColdRec with SASRec backbones whose items come from their ID, their
  text or both: PeterRec's patch in the user encoder, a LoRA adapter in the item encoder or in both, FineAll and
  FineCLS, on every target item and on the cold ones (no training pair).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..registry import (
    BLOCK_CHOICES,
    DEFAULT_ITEM_PATCH_TYPE,
    DEFAULT_PATCH_TARGET,
    DEFAULT_PATCH_TYPE,
    INSERTIONS,
    ITEM_PATCH_TYPES,
    METHODS,
    PATCH_TARGETS,
    TASK_KINDS,
    TaskKind,
    choose,
    insertions_of,
    patch_type_for,
    patch_types_of,
)


@dataclass(frozen=True)
class Preset:
    """Model size and training budget of one reproduction, and how each configuration's hyperparameters are chosen.

    `tune` maps a training argument (`learning_rate`, `num_train_epochs`) or a `Configuration` field (`readout`,
    `bottleneck_size`, ...) to its candidate values; every combination is tried on the first seed and the best
    mean held-out measure wins (`selection.py`); what `tune` leaves out keeps `learning_rate`, the preset's
    epochs and the configuration's own fields. `selection` is where the candidates are scored: `cv`, on `folds` folds of the
    training users (the default: the 3% validation split is too small to tell candidates apart, see
    docs/reproduction.md), or `validation`, on the validation split. One candidate: no selection runs.

    `max_length` is the most recent items a model reads: the fine-tuning histories and the baselines' seen items.
    Pretraining evaluates once per epoch and keeps the best epoch by the validation next-item measure; it slides
    windows of `window_length` items (default, and at most, `max_length`; a backbone with learned positions,
    SASRec, always trains on windows of `max_length`) by `window_stride` (default the window: disjoint windows), with
    `pretrain_learning_rate` on the `pretrain_lr_scheduler_type` schedule after `pretrain_warmup_steps`; the masked
    objective masks `mask_probability` of each window's items, or in a share `last_item_rows` of the windows the
    last item alone, and trains `masked_pretrain_epochs` (None: `pretrain_epochs`): it predicts that share of the
    positions a window where the causal objective predicts all of them.
    Fine-tuning (linear decay) stops after `early_stopping_patience` evaluations without improvement (0: never);
    the wide term of a wide & deep head trains at `wide_learning_rate` (None: the learning rate)."""

    name: str
    hidden_size: int
    dilations: tuple[int, ...]
    max_length: int
    pretrain_epochs: float
    finetune_epochs: float
    coldrec_epochs: float
    pretrain_batch_size: int
    finetune_batch_size: int
    learning_rate: float = 1e-3
    tune: dict[str, tuple[Any, ...]] = field(default_factory=dict, hash=False)
    selection: str = "cv"
    folds: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    evaluations_per_run: int = 6
    num_eval_negatives: int = 99
    pretrain_learning_rate: float = 1e-3
    pretrain_lr_scheduler_type: str = "linear"
    pretrain_warmup_steps: int = 0
    window_length: int | None = None
    window_stride: int | None = None
    early_stopping_patience: int = 0
    wide_learning_rate: float | None = None
    mask_probability: float = 0.3
    last_item_rows: float = 0.0
    masked_pretrain_epochs: float | None = None

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_SCHEMES:
            raise ValueError(f"selection must be one of {SELECTION_SCHEMES}, got {self.selection!r}.")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}.")
        if not 0 < self.mask_probability <= 1:
            raise ValueError(f"mask_probability must be in (0, 1], got {self.mask_probability}.")
        if not 0 <= self.last_item_rows <= 1:
            raise ValueError(f"last_item_rows must be in [0, 1], got {self.last_item_rows}.")

    def pretrain_epochs_of(self, objective: str) -> float:
        """The pretraining epochs of a backbone with this objective (`SourceBackbone.objective`)."""
        if objective == "masked" and self.masked_pretrain_epochs is not None:
            return self.masked_pretrain_epochs
        return self.pretrain_epochs


SELECTION_SCHEMES = ("cv", "validation")
"""`cv`: the mean over `Preset.folds` folds of the training users; `validation`: the validation split alone."""

PRESETS = {
    "smoke": Preset(
        "smoke",
        16,
        (1, 2),
        20,
        1,
        1,
        1,
        64,
        64,
        seeds=(0,),
        evaluations_per_run=2,
        num_eval_negatives=5,
    ),
    "cpu": Preset(
        "cpu",
        64,
        (1, 2, 4, 8) * 3,
        400,
        20,
        15,
        10,
        64,
        64,
        learning_rate=2e-3,
        selection="validation",
        evaluations_per_run=15,
        pretrain_learning_rate=2e-3,
        pretrain_lr_scheduler_type="cosine",
        pretrain_warmup_steps=100,
        window_length=200,
        window_stride=100,
        early_stopping_patience=4,
        wide_learning_rate=1e-2,
        masked_pretrain_epochs=40,
    ),
    "quick": Preset(
        "quick",
        64,
        (1, 2, 4, 8) * 2,
        50,
        4,
        6,
        5,
        64,
        64,
        learning_rate=2e-3,
        selection="validation",
        evaluations_per_run=6,
        pretrain_learning_rate=2e-3,
        pretrain_lr_scheduler_type="cosine",
        pretrain_warmup_steps=100,
        early_stopping_patience=2,
    ),
    "paper": Preset(
        "paper", 256, (1, 2, 4, 8) * 4, 100, 10, 20, 10, 32, 64, tune={"learning_rate": (1e-3, 1e-4)}
    ),
}
"""`cpu`: 12 conv layers of width 64 (receptive field 91) reading the 400 most recent items (whole histories for 90%
of ML-1M's users, against 74% for 200: better by 3-fold cross-validation inside the training users,
docs/transfer.md), pretrained up to 20 epochs on windows of 200 sliding by 100 (every position predicted once from
at least 100 items before it, as from the whole history) with a cosine schedule (22-26 min on one core over two
builds; held-out source item ranked over all items: HR@10 0.222 validation, 0.203-0.204 test, against 0.190 / 0.181
after 8 epochs; windows of 400 sliding by 200 reached only 0.192 test at the same cost); the masked backbone, which
predicts 30% of a window's positions, up to 40 epochs (validation HR@10 0.188 after 20, 0.210 after 30, 0.218 after
40; docs/reproduction.md, "The masked backbone"), fine-tuned up to 15 epochs
(ColdRec 10) with early stopping, sized for two CPU cores; its learning rate and epochs were chosen on the
validation split (docs/transfer.md); the wide term of a wide & deep head trains at 1e-2 (chosen by 3-fold
cross-validation of the wide term alone, docs/transfer.md). `paper`: the paper's backbone (hidden 256, dilations [1,
2, 4, 8] x 4, Section 4.1) and its learning-rate range 1e-3 to 1e-4 (chosen by 3-fold cross-validation), for a GPU.
`quick`: the demo's size (8 conv layers of width 64, the 50 most recent items), pretrained 4 epochs and fine-tuned up
to 6 (ColdRec 5) with early stopping, the cpu preset's learning rate, for studies of many configurations on CPU
(RQ6's ~100 runs per seed); its numbers are not the cpu preset's. `smoke`: a seconds-long check of the plumbing."""

PROFILE_TASKS = ("genest", "ageest", "lifestatus")
TASKS = (*PROFILE_TASKS, "coldrec")
ALL_TASKS = ("genest", "ageest", "lifeest", "lifestatus", "coldrec")
TASK_TITLES = {
    "genest": "GenEst",
    "ageest": "AgeEst",
    "lifeest": "LifeEst (occupation)",
    "lifestatus": "LifeEst (life status)",
    "coldrec": "ColdRec",
}
RANKING_TASKS = ("coldrec",)
"""The tasks of the ranking kind; the others are user-profile classification."""
DATASET_TITLES = {"ml-1m": "MovieLens-1M", "ml-100k": "MovieLens-100K"}
RQ2_TASKS = ("ageest", "coldrec")
"""The tasks of the paper's Figure 5 (and of Table 6, for RQ4's causal vs non-causal comparison)."""
INSERTION_TASK = "ageest"
"""Table 7 compares the insertions on AgeEst."""
FEW_LABEL_TASK = "lifestatus"
FEW_LABEL_FRACTIONS = (0.1, 0.3)
"""Figure 6: LifeEst with a fraction of the training users."""
RQ1_METHODS = ("peterrec", "peter_zero", "fine_all", "fine_zero")
TRANSFER_READOUT = "attention"
"""RQ5's readout: the learned pooling over the whole history, the best on validation (docs/transfer.md)."""
TRANSFER_PATCH_OPTIONS: dict[str, Any] = {"train_layer_norms": ("norm2",), "train_tcl_embedding": True}
"""RQ5's patch options for the methods with patches (PeterRec, PeterZero): the blocks' second LayerNorm and a task
[TCL] vector trained besides the patches (as the paper's original code does), the best of the options tried on the
validation users of GenEst and AgeEst on the cpu preset's backbone (docs/transfer.md); the methods without patches
ignore them (`Configuration`)."""
RQ5_METHODS = ("peterrec", "peter_zero", "fine_all", "fine_cls")
RQ5_HEAD_TERMS = (
    ("peterrec", "wide_deep"),
    ("peter_zero", "wide_deep"),
    ("fine_all", "wide_deep"),
    ("fine_cls", "wide"),
)
"""The head-terms ablation: what the deep part adds (PeterRec, PeterZero and FineAll with a wide & deep head) over
the wide part alone (a linear model of the item bag trained in the same pipeline)."""
RQ5_FEW_LABEL_METHODS = ("peterrec", "peter_zero", "fine_all")
RQ5_FEW_LABEL_FRACTION = 0.1
RQ5_FEW_LABEL_HEAD_TERMS = ("deep", "wide_deep")
"""Few labels with the paper's head and with the wide & deep one, each method against the others under one head."""
RQ2_METHODS = ("fine_cls", "fine_last1", "fine_last2", "fine_all")
RQ6_TASKS = ("genest", "ageest", "coldrec")
RQ6_BACKBONES = ("causal", "sasrec")
"""Adapter4Rec's question on a convolutional and a Transformer user model, both pretrained causally."""
RQ6_BASELINE_METHODS = ("fine_all", "fine_cls")
RQ6_PLACED_TYPE = "houlsby"
"""The patch type whose place, LayerNorm tuning and data scaling RQ6 varies (Adapter4Rec's main adapter)."""
RQ6_FRACTIONS = (0.1, 0.3, 1.0)
RQ7_TASKS = ("coldrec",)
"""The task with target items of their own: the one where an item's text can stand in for its interactions."""
RQ7_BACKBONES = ("sasrec", "sasrec_text", "sasrec_text_id")
"""One source backbone per item representation (`SourceBackbone.item_representation`): ID, text, text and ID."""
RQ7_BASELINE_METHODS = ("fine_all", "fine_cls")
RQ7_PATCH_TARGETS = ("user_encoder", "item_encoder", "both")
"""Where PeterRec's patch goes (Adapter4Rec's `adding_adapter_to`); the item encoder only exists over item texts."""
RQ7_ITEM_PATCH_TYPE = DEFAULT_ITEM_PATCH_TYPE
"""The PEFT adapter in the item encoder: LoRA (Adapter4Rec's and PEFT's most used)."""
RESEARCH_QUESTIONS = (1, 2, 3, 4, 5, 6, 7)
DEFAULT_RESEARCH_QUESTIONS = (1, 2, 3, 4, 5)
"""What `peterrec reproduce` runs unless told: the paper's questions and the transfer study; RQ6 (the adapter study,
about 100 fine-tuning runs per seed) and RQ7 (items from their text) run when asked for."""


TEXT_ENCODER_CHUNK = 4096
"""Item texts the text backbones encode at once (`SASRecConfig.item_encoder_batch_size`): ML-1M's whole catalogue
(3,883 titles) in one chunk. With several chunks each is recomputed in the backward pass, a second forward pass of
the encoder; the small encoder's activations for the whole catalogue fit in memory easily (a pretrained language
model's would not: the config's default is 256).

The text backbones train with the preset's budget, the ID backbone's, so that the item representations are compared
at equal training: a pretraining step encodes the whole catalogue (ML-1M's 3,315 source items) with gradients, about
5.5 times an ID step; a ColdRec fine-tuning run that trains the item encoder (FineAll, an adapter in it) encodes its
batch's distinct items at every step, about 400 s a run at `quick` on one core against under a minute for one whose
item encoder is frozen and encoded once (docs/text_items.md has the measured costs)."""


@dataclass(frozen=True)
class SourceBackbone:
    """A backbone the reproduction pretrains on the ColdRec source domain (`Configuration.objective` names it).

    Attributes:
        name: the key (`causal`, `masked`, `sasrec`, ...), also the folder of its run.
        model_type: its model type (`registry.MODEL_TYPES`).
        objective: its pretraining objective (`causal` next-item or `masked` items).
        title: its name in the report.
        item_representation: how its items become vectors (`configuration_item_text.ITEM_REPRESENTATIONS`); a text
            one gets the small offline text encoder (`small_text_encoder`), the pretraining pipeline's default.
        config_overrides: further fields of its configuration (`PretrainArguments.config_overrides`).
    """

    name: str
    model_type: str
    objective: str
    title: str
    item_representation: str = "id"
    config_overrides: str | None = None


SOURCE_BACKBONES = {
    backbone.name: backbone
    for backbone in (
        SourceBackbone("causal", "peterrec", "causal", "NextItNet (causal dilated convolutions)"),
        SourceBackbone("masked", "peterrec", "masked", "GRec encoder (masked items, non-causal)"),
        SourceBackbone("sasrec", "sasrec", "causal", "SASRec (causal self-attention, 2 blocks)"),
        *(
            SourceBackbone(
                f"sasrec_{representation}",
                "sasrec",
                "causal",
                f"SASRec over item {title} (small offline text encoder)",
                representation,
                config_overrides=f"item_encoder_batch_size={TEXT_ENCODER_CHUNK}",
            )
            for representation, title in (("text", "texts"), ("text_id", "texts and IDs"))
        ),
    )
}
"""The source backbones by name: PeterRec's two objectives (RQ1-RQ5), the Transformer of RQ6 and, for RQ7, the same
Transformer with items from their text or from their text and ID (otherwise the same sizes)."""


def task_kind(task: str) -> TaskKind:
    """The registry's kind of a reproduced task: ranking for ColdRec, classification for the user profiles."""
    return TASK_KINDS["ranking" if task in RANKING_TASKS else "classification"]


def insertion_title(insertion: str) -> str:
    """`(c) serial, two patches per block`: the panel of Figure 3 and the insertion's description."""
    mode = INSERTIONS[insertion]
    return f"{mode.figure[1:]} {mode.description}"


@dataclass(frozen=True)
class Configuration:
    """One fine-tuning setting, run once per seed: a task, a method, the source backbone (`SOURCE_BACKBONES`, named
    by its objective for PeterRec's), and the patch options (ignored by the methods without patches): its type
    (`registry.PATCH_TYPES`), PeterRec's insertion for the model patch on the dilated convolutions, the blocks
    it goes into, the encoder it patches (`registry.PATCH_TARGETS`; the item encoder needs a backbone whose items
    come from their text) and the PEFT adapter of the item encoder (`registry.ITEM_PATCH_TYPES`). Options that a
    setting does not use are reset to their defaults, so that one setting has one name."""

    task: str
    method: str
    objective: str = "causal"
    insertion: str | None = "serial_two"
    train_fraction: float = 1.0
    bottleneck_size: int | None = None
    train_layer_norms: tuple[str, ...] = ()
    train_tcl_embedding: bool = False
    readout: str = "tcl"
    head_terms: str = "deep"
    patch_type: str = DEFAULT_PATCH_TYPE
    blocks: str | None = None
    patch_target: str = DEFAULT_PATCH_TARGET
    item_patch_type: str | None = None

    def __post_init__(self) -> None:
        backbone = choose(SOURCE_BACKBONES, self.objective, "source backbone")
        model_type = backbone.model_type
        target = choose(PATCH_TARGETS, self.patch_target, "patch target")
        patched = choose(METHODS, self.method, "fine-tuning method").adds_patches
        if patched and target.item_encoder and backbone.item_representation == "id":
            raise ValueError(
                f"patch_target={self.patch_target!r} needs a backbone whose items come from their text; "
                f"{self.objective!r} has ID items."
            )
        if not patched or not target.user_encoder:
            for name in ("insertion", "bottleneck_size", "blocks"):
                object.__setattr__(self, name, None)
            object.__setattr__(self, "patch_type", DEFAULT_PATCH_TYPE)
            object.__setattr__(self, "train_layer_norms", ())
            object.__setattr__(self, "train_tcl_embedding", False)
        else:
            patch_type_for(model_type, self.patch_type)
        if not patched:
            object.__setattr__(self, "patch_target", DEFAULT_PATCH_TARGET)
        if patched and target.item_encoder:
            choose(ITEM_PATCH_TYPES, self.item_patch_type or DEFAULT_ITEM_PATCH_TYPE, "item patch type")
            object.__setattr__(self, "item_patch_type", self.item_patch_type or DEFAULT_ITEM_PATCH_TYPE)
        else:
            object.__setattr__(self, "item_patch_type", None)
        if self.patch_type != DEFAULT_PATCH_TYPE or model_type != "peterrec":
            # Insertions place PeterRec's model patch on the dilated convolutions; elsewhere the type's places hold.
            object.__setattr__(self, "insertion", None)
        if self.blocks is not None:
            choose(dict.fromkeys(BLOCK_CHOICES), self.blocks, "blocks")
        if self.blocks == BLOCK_CHOICES[0]:
            object.__setattr__(self, "blocks", None)  # every block: the default, one name for one setting
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}.")

    @property
    def name(self) -> str:
        """Folder name of the configuration's runs, unique per setting."""
        parts = [self.objective, self.task, self.method]
        if self.patch_type != DEFAULT_PATCH_TYPE:
            parts.append(self.patch_type)
        if self.patch_target != DEFAULT_PATCH_TARGET:
            parts.append(f"{self.patch_target}_{self.item_patch_type}")
        if self.insertion is not None:
            parts.append(self.insertion)
        if self.blocks is not None:
            parts.append(f"blocks_{self.blocks}")
        if self.bottleneck_size is not None:
            parts.append(f"bottleneck{self.bottleneck_size}")
        parts.extend(f"train_{norm}" for norm in self.train_layer_norms)
        if self.train_tcl_embedding:
            parts.append("train_tcl")
        if self.train_fraction < 1:
            parts.append(f"train{round(100 * self.train_fraction)}pct")
        if self.readout != "tcl":
            parts.append(f"readout_{self.readout}")
        if self.head_terms != "deep":
            parts.append(f"head_{self.head_terms}")
        return "-".join(parts)


def transfer_configuration(task: str, method: str, **fields: Any) -> Configuration:
    """A configuration of RQ5: the task-owned readout (`TRANSFER_READOUT`) and patch options
    (`TRANSFER_PATCH_OPTIONS`), with `fields` for its ablations (head terms, share of the training users)."""
    return Configuration(task, method, readout=TRANSFER_READOUT, **TRANSFER_PATCH_OPTIONS, **fields)


def research_plan(rqs: Iterable[int], tasks: Sequence[str]) -> dict[str, list[Configuration]]:
    """The configurations each experiment needs, keyed `rq1`, `rq2`, `rq3`, `rq4_objective`, `rq4_insertion`,
    `rq4_few_labels`; `tasks` restricts every experiment to those tasks."""
    rqs, chosen = set(rqs), [task for task in ALL_TASKS if task in tasks]
    plan: dict[str, list[Configuration]] = {}
    if 1 in rqs:
        plan["rq1"] = [Configuration(task, method) for task in chosen for method in RQ1_METHODS]
    if 2 in rqs:
        plan["rq2"] = [
            *(
                Configuration(task, method, "masked")
                for task in chosen
                if task in RQ2_TASKS
                for method in RQ2_METHODS
            ),
            *(
                Configuration(task, "peterrec", "masked", insertion)
                for task in chosen
                if task in RQ2_TASKS
                for insertion in ("serial_two", "parallel_before_ln")
            ),
        ]
    if 3 in rqs:
        plan["rq3"] = [Configuration(task, "peterrec") for task in chosen]
    if 4 in rqs:
        plan["rq4_objective"] = [
            Configuration(task, "peterrec", objective)
            for task in chosen
            if task in RQ2_TASKS
            for objective in ("causal", "masked")
        ]
        plan["rq4_insertion"] = [
            Configuration(INSERTION_TASK, "peterrec", "masked", insertion)
            for insertion in insertions_of("peterrec")
            if INSERTION_TASK in chosen
        ]
        plan["rq4_few_labels"] = [
            Configuration(FEW_LABEL_TASK, method, train_fraction=fraction)
            for fraction in (*FEW_LABEL_FRACTIONS, 1.0)
            for method in ("peterrec", "fine_all")
            if FEW_LABEL_TASK in chosen
        ]
    if 5 in rqs:
        plan["rq5_transfer"] = [
            transfer_configuration(task, method) for task in chosen for method in RQ5_METHODS
        ]
        plan["rq5_head_terms"] = [
            transfer_configuration(task, method, head_terms=terms)
            for task in chosen
            for method, terms in RQ5_HEAD_TERMS
        ]
        plan["rq5_few_labels"] = [
            transfer_configuration(task, method, train_fraction=fraction, head_terms=terms)
            for task in chosen
            if task not in RANKING_TASKS
            for terms in RQ5_FEW_LABEL_HEAD_TERMS
            for fraction in (RQ5_FEW_LABEL_FRACTION, 1.0)
            for method in RQ5_FEW_LABEL_METHODS
        ]
    if 6 in rqs:
        plan.update(adapter_study_plan([task for task in chosen if task in RQ6_TASKS]))
    if 7 in rqs:
        plan.update(text_items_plan([task for task in chosen if task in RQ7_TASKS]))
    return {key: configurations for key, configurations in plan.items() if configurations}


def adapter_study_plan(tasks: Sequence[str]) -> dict[str, list[Configuration]]:
    """RQ6's configurations, every one reading users with RQ5's attention pooling: `rq6_types`, each patch type on
    each backbone it fits beside FineAll and FineCLS; `rq6_blocks`, the placed type in the first, last or all blocks;
    `rq6_layer_norms`, the placed type with every LayerNorm tuned as the task's copy; `rq6_scaling`, the placed type
    and FineAll on 10%, 30% and 100% of the training users."""

    def study(task: str, method: str, backbone: str, **fields: Any) -> Configuration:
        return Configuration(task, method, backbone, readout=TRANSFER_READOUT, **fields)

    def placed(task: str, backbone: str, **fields: Any) -> Configuration:
        return study(task, "peterrec", backbone, patch_type=RQ6_PLACED_TYPE, **fields)

    def types_of(backbone: str) -> list[str]:
        return list(patch_types_of(SOURCE_BACKBONES[backbone].model_type))

    return {
        "rq6_types": [
            *(
                study(task, method, b)
                for task in tasks
                for b in RQ6_BACKBONES
                for method in RQ6_BASELINE_METHODS
            ),
            *(
                study(task, "peterrec", b, patch_type=t)
                for task in tasks
                for b in RQ6_BACKBONES
                for t in types_of(b)
            ),
        ],
        "rq6_blocks": [
            placed(task, b, blocks=blocks)
            for task in tasks
            for b in RQ6_BACKBONES
            for blocks in BLOCK_CHOICES
        ],
        "rq6_layer_norms": [
            placed(task, b, train_layer_norms=norms)
            for task in tasks
            for b in RQ6_BACKBONES
            for norms in ((), ("all",))
        ],
        "rq6_scaling": [
            configuration
            for task in tasks
            for b in RQ6_BACKBONES
            for fraction in RQ6_FRACTIONS
            for configuration in (
                placed(task, b, train_fraction=fraction),
                study(task, "fine_all", b, train_fraction=fraction),
            )
        ],
    }


def text_items_plan(tasks: Sequence[str]) -> dict[str, list[Configuration]]:
    """RQ7's configurations (`rq7_text_items`), every one reading users with RQ5's attention pooling: for each item
    representation (`RQ7_BACKBONES`), PeterRec with RQ6's placed patch type in the user encoder, then, over item
    texts, PeterRec with a LoRA adapter in the item encoder and in both encoders (the placed type in the user
    encoder), then FineAll and FineCLS. With the attention pooling FineCLS has weights to train in every
    representation (the pooling, and the target-item table of `id` and `text_id`), so it runs in all three."""
    configurations = []
    for task in tasks:
        for backbone in RQ7_BACKBONES:
            over_text = SOURCE_BACKBONES[backbone].item_representation != "id"
            configurations += [
                Configuration(
                    task,
                    "peterrec",
                    backbone,
                    readout=TRANSFER_READOUT,
                    patch_type=RQ6_PLACED_TYPE,
                    patch_target=target,
                    item_patch_type=RQ7_ITEM_PATCH_TYPE if PATCH_TARGETS[target].item_encoder else None,
                )
                for target in RQ7_PATCH_TARGETS
                if over_text or not PATCH_TARGETS[target].item_encoder
            ]
            configurations += [
                Configuration(task, method, backbone, readout=TRANSFER_READOUT)
                for method in RQ7_BASELINE_METHODS
            ]
    return {"rq7_text_items": configurations}


def unique_configurations(plan: dict[str, list[Configuration]]) -> list[Configuration]:
    """Every configuration of the plan once, in first-use order (experiments share runs)."""
    return list(dict.fromkeys(configuration for group in plan.values() for configuration in group))
