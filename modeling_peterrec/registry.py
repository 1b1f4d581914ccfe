"""One record per concept of the papers: fine-tuning methods, patch insertions, patch types, task kinds, readouts,
head terms, model types and CmnRec's chunk rules.

Every other module reads these records (tables, command-line help, cards, the model, the transfer code); none of
them keeps its own list. Adding a method, an insertion, a task kind or a readout is one new record here plus its own
code where it runs; a consumer that has no code for a record fails loudly through `require_implemented`.

This module imports nothing from the package, so the configuration and modeling files (which `trust_remote_code`
copies next to the weights) can read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar


@dataclass(frozen=True)
class FineTuningMethod:
    """A fine-tuning method of Section 4 (RQ1, RQ2): what it trains and what it starts from.

    Attributes:
        name: the method's identifier (`--method`).
        title: its name in the paper's tables.
        description: what it trains, in one line.
        adds_patches: inserts model patches (Figure 3) and trains them.
        random_backbone: starts from a randomly initialised backbone instead of the pretrained one.
        trained_layers: the backbone's own layers it trains: `"none"`, `"all"`, or the layers of the last residual
            block named in `last_block_layers`.
        last_block_layers: with `trained_layers="last_block"`, which of `conv1`, `norm1`, `conv2`, `norm2`.
    """

    name: str
    title: str
    description: str
    adds_patches: bool = False
    random_backbone: bool = False
    trained_layers: Literal["none", "all", "last_block"] = "none"
    last_block_layers: tuple[str, ...] = ()

    @property
    def shares_backbone(self) -> bool:
        """The pretrained backbone stays untouched, so one backbone in memory serves all its tasks."""
        return self.trained_layers == "none" and not self.random_backbone


METHODS: dict[str, FineTuningMethod] = {
    method.name: method
    for method in (
        FineTuningMethod(
            "peterrec",
            "PeterRec",
            "model patches and the task head on the frozen pretrained backbone",
            adds_patches=True,
        ),
        FineTuningMethod(
            "fine_all",
            "FineAll",
            "every parameter of the pretrained backbone and the task head",
            trained_layers="all",
        ),
        FineTuningMethod("fine_cls", "FineCLS", "the task head only, on the frozen pretrained backbone"),
        FineTuningMethod(
            "fine_last1",
            "FineLast1",
            "the last dilated conv layer with its LayerNorm, and the task head",
            trained_layers="last_block",
            last_block_layers=("conv2", "norm2"),
        ),
        FineTuningMethod(
            "fine_last2",
            "FineLast2",
            "the last two dilated conv layers with their LayerNorms, and the task head",
            trained_layers="last_block",
            last_block_layers=("conv1", "norm1", "conv2", "norm2"),
        ),
        FineTuningMethod(
            "peter_zero",
            "PeterZero",
            "as peterrec, on a randomly initialised backbone",
            adds_patches=True,
            random_backbone=True,
        ),
        FineTuningMethod(
            "fine_zero",
            "FineZero",
            "as fine_all, on a randomly initialised backbone",
            random_backbone=True,
            trained_layers="all",
        ),
    )
}
"""The fine-tuning methods compared in Section 4, by name."""


@dataclass(frozen=True)
class InsertionMode:
    """Where model patches go in a residual block (Figure 3(b)-(e)).

    Attributes:
        name: the mode's identifier (`insertion=...`).
        figure: the panel of Figure 3.
        description: one line for tables, help texts and cards.
        placement: `"serial"` (on the conv's output, before its LayerNorm), `"parallel_before_ln"` (beside the conv,
            added before its LayerNorm) or `"parallel_after_act"` (beside the conv, added after the activation).
        slots: where a patch goes: the convolutions of a block (PeterRec), the controller output and the memory read
            (CmnRec), the attention and feed-forward sub-layers of every block (SASRec).
        model_type: the model type (`MODEL_TYPES`) whose modules `slots` name.
    """

    name: str
    figure: str
    description: str
    placement: Literal["serial", "parallel_before_ln", "parallel_after_act"]
    slots: tuple[str, ...] = ("conv1", "conv2")
    model_type: str = "peterrec"


INSERTIONS: dict[str, InsertionMode] = {
    mode.name: mode
    for mode in (
        InsertionMode("serial_one", "3(b)", "serial, one patch per block", "serial", slots=("conv2",)),
        InsertionMode("serial_two", "3(c)", "serial, two patches per block", "serial"),
        InsertionMode(
            "parallel_before_ln", "3(d)", "parallel, added before the LayerNorm", "parallel_before_ln"
        ),
        InsertionMode("parallel_after_act", "3(e)", "parallel, added after the ReLU", "parallel_after_act"),
        InsertionMode(
            "controller_read",
            "3(f)",
            "serial patches on the controller output (before the memory) and on the memory read (before the output)",
            "serial",
            slots=("controller", "read"),
            model_type="cmnrec",
        ),
        InsertionMode(
            "sublayers",
            "3(f)",
            "serial patches after the attention and after the feed-forward sub-layer of every block, before each "
            "residual add (Houlsby's placement, studied by Adapter4Rec)",
            "serial",
            slots=("attention", "feed_forward"),
            model_type="sasrec",
        ),
    )
}
"""Model-patch insertions of Figure 3, by name; CmnRec's places its patches on the controller and the memory read,
SASRec's after each sub-layer of every block."""


def insertions_of(model_type: str) -> dict[str, InsertionMode]:
    """The insertions whose patches go into `model_type`'s modules."""
    return {name: mode for name, mode in INSERTIONS.items() if mode.model_type == model_type}


BLOCK_CHOICES = ("all", "first", "last")
"""Which blocks of the backbone a per-block patch type goes into (Adapter4Rec's `sasrec_all`/`_first`/`_last`)."""


@dataclass(frozen=True)
class PatchType:
    """A kind of task-owned patch on a frozen backbone: PeterRec's model patch or one of the adapters Adapter4Rec
    (Fu, Yuan et al., WSDM 2024) compares. Its modules live in `modeling_peterrec.adapters`.

    Attributes:
        name: the type's identifier (`patch_type=...`, `--patch_type`).
        title: its name in tables and cards.
        reference: the paper that introduced it.
        description: what it is and where it goes, in one line.
        places: for each model type (`MODEL_TYPES`) that it fits, the places it may go: sub-layers or convolutions
            (`attention`, `conv1`, ...), weights (`query`, ...), `hidden_states` (a side network reading the
            blocks' outputs) or `input` (the input embeddings). A model type it does not fit is absent.
        default_places: the places it goes by default, per model type.
        identity_at_init: the patched backbone computes exactly the frozen one's outputs before training (a zero
            up-projection or a zero LoRA B), with its default places.
        per_block: it goes into the blocks chosen by `blocks` (`BLOCK_CHOICES`); otherwise it is one module per task.
        batched_rows: in a mixed batch on the dilated-conv backbone, rows of several tasks of one kind run as one
            group with per-row weights; the other types run one group per task.
        settings: the `PatchConfig` fields that place or size it, beyond `places` and `blocks` (the model patch's
            `insertion` sets its places).
    """

    name: str
    title: str
    reference: str
    description: str
    places: Mapping[str, tuple[str, ...]]
    default_places: Mapping[str, tuple[str, ...]]
    identity_at_init: bool = True
    per_block: bool = True
    batched_rows: bool = False
    settings: tuple[str, ...] = ("bottleneck_size", "activation")


_SUBLAYERS = {
    "peterrec": ("conv1", "conv2"),
    "sasrec": ("attention", "feed_forward"),
    "cmnrec": ("controller", "read"),
}

DEFAULT_PATCH_TYPE = "model_patch"
"""PeterRec's model patch: what patching methods add unless told otherwise, and what patch folders before format 5
hold."""

PATCH_TYPES: dict[str, PatchType] = {
    patch_type.name: patch_type
    for patch_type in (
        PatchType(
            "model_patch",
            "PeterRec model patch",
            "Yuan et al., SIGIR 2020, Figure 3",
            "a bottleneck with a shortcut, placed by `insertion` (Figure 3(b)-(e) on the dilated convolutions; "
            "serial after the sub-layers on SASRec, on the controller and the memory read on CmnRec); the parallel "
            "insertions (d), (e) add the block's input by design, so only the serial ones start as the identity",
            places=_SUBLAYERS,
            default_places={
                "peterrec": ("conv1", "conv2"),
                **{t: p for t, p in _SUBLAYERS.items() if t != "peterrec"},
            },
            batched_rows=True,
            settings=("insertion", "bottleneck_size", "activation"),
        ),
        PatchType(
            "houlsby",
            "Houlsby adapter",
            "Houlsby et al., ICML 2019",
            "a serial bottleneck x + up(act(down(x))) on the output of each sub-layer (each dilated convolution), "
            "before the residual add and the LayerNorm",
            places=_SUBLAYERS,
            default_places=_SUBLAYERS,
        ),
        PatchType(
            "parallel",
            "parallel adapter",
            "He et al., ICLR 2022",
            "a bottleneck beside each sub-layer, reading the sub-layer's input, its output added to the sub-layer's",
            places={name: _SUBLAYERS[name] for name in ("peterrec", "sasrec")},
            default_places={name: _SUBLAYERS[name] for name in ("peterrec", "sasrec")},
        ),
        PatchType(
            "pfeiffer",
            "Pfeiffer adapter",
            "Pfeiffer et al., EACL 2021",
            "one serial bottleneck per block, after the feed-forward sub-layer (the block's last convolution)",
            places={"peterrec": ("conv2",), "sasrec": ("feed_forward",)},
            default_places={"peterrec": ("conv2",), "sasrec": ("feed_forward",)},
        ),
        PatchType(
            "lora",
            "LoRA",
            "Hu et al., ICLR 2022",
            "a low-rank update W + (alpha / r) B A of a weight, B starting at zero: SASRec's attention projections "
            "(query and value by default) and feed-forward layers, PeterRec's dilated convolutions (the (out, k*in) "
            "kernel)",
            places={
                "peterrec": ("conv1", "conv2"),
                "sasrec": ("query", "key", "value", "dense_in", "dense_out"),
            },
            default_places={"peterrec": ("conv1", "conv2"), "sasrec": ("query", "value")},
            settings=("lora_rank", "lora_alpha"),
        ),
        PatchType(
            "compacter",
            "Compacter",
            "Mahabadi et al., NeurIPS 2021",
            "a Houlsby adapter whose projections are sums of Kronecker products A_i (x) B_i (PHM layers), the small "
            "A_i shared by all layers of the task, each B_i of rank `phm_rank` (0: full)",
            places=_SUBLAYERS,
            default_places=_SUBLAYERS,
            settings=("bottleneck_size", "activation", "phm_dim", "phm_rank"),
        ),
        PatchType(
            "k_adapter",
            "K-Adapter",
            "Wang et al., Findings of ACL 2021",
            "a side network: per chosen block, a bottleneck layer reads the block's output plus the previous side "
            "layer's; the last one's output is added to the backbone's last hidden state by a zero-initialised "
            "projection",
            places={"peterrec": ("hidden_states",), "sasrec": ("hidden_states",)},
            default_places={"peterrec": ("hidden_states",), "sasrec": ("hidden_states",)},
        ),
        PatchType(
            "soft_prompt",
            "soft prompt",
            "Lester et al., EMNLP 2021",
            "`prompt_length` learned vectors inserted into the input embeddings right before each user's first item; "
            "the outputs at prompt positions are dropped, so readouts never see them",
            places={name: ("input",) for name in _SUBLAYERS},
            default_places={name: ("input",) for name in _SUBLAYERS},
            identity_at_init=False,
            per_block=False,
            settings=("prompt_length",),
        ),
    )
}
"""Patch types by name; `model_patch` (PeterRec's) is the default."""


def patch_types_of(model_type: str) -> dict[str, PatchType]:
    """The patch types that fit `model_type`."""
    return {name: record for name, record in PATCH_TYPES.items() if model_type in record.places}


def patch_type_for(model_type: str, patch_type: str) -> PatchType:
    """The record of `patch_type`, or a `ValueError` naming it, the model type and the types that fit it."""
    record = choose(PATCH_TYPES, patch_type, "patch type")
    if model_type not in record.places:
        raise ValueError(
            f"Patch type {patch_type!r} does not fit model type {model_type!r}; choose one of "
            f"{list(patch_types_of(model_type))}."
        )
    return record


@dataclass(frozen=True)
class PatchTarget:
    """Which encoder of a backbone a task's patch goes into (Adapter4Rec's `adding_adapter_to`): the user encoder
    over the item sequence, the item encoder over item texts (for a backbone whose items come from their text,
    `modeling_peterrec.item_text`), or both.

    Attributes:
        name: the target's identifier (`patch_target=...`, `--patch_target`).
        title: its name in tables and cards.
        user_encoder: a patch of `PATCH_TYPES` goes into the user encoder.
        item_encoder: a PEFT adapter (`ITEM_PATCH_TYPES`) goes into the item encoder's text model.
    """

    name: str
    title: str
    user_encoder: bool
    item_encoder: bool


PATCH_TARGETS: dict[str, PatchTarget] = {
    target.name: target
    for target in (
        PatchTarget("user_encoder", "user encoder", user_encoder=True, item_encoder=False),
        PatchTarget("item_encoder", "item encoder", user_encoder=False, item_encoder=True),
        PatchTarget("both", "user and item encoders", user_encoder=True, item_encoder=True),
    )
}
"""Where a patch goes, by name; `user_encoder` (the only place for a backbone with ID items) is the default."""
DEFAULT_PATCH_TARGET = "user_encoder"


@dataclass(frozen=True)
class ItemPatchType:
    """A PEFT method for the item encoder's Hugging Face text model (SPEC §9: PEFT is the tool for the types it has).

    Attributes:
        name: the type's identifier (`item_patch_type=...`, `--item_patch_type`).
        title: its name in tables and cards.
        reference: the paper that introduced it.
        peft_config: the name of PEFT's configuration class (`peft.LoraConfig`, ...).
        defaults: its arguments unless the caller's `item_patch_settings` say otherwise.
        identity_at_init: the adapted text model computes exactly the frozen one's outputs before training (LoRA's
            zero B); prompts and prefixes change them from the start.
    """

    name: str
    title: str
    reference: str
    peft_config: str
    defaults: Mapping[str, object]
    identity_at_init: bool = False


ITEM_PATCH_TYPES: dict[str, ItemPatchType] = {
    record.name: record
    for record in (
        # target_modules None: PEFT's own default for the text model's type (BERT: query and value).
        ItemPatchType(
            "lora",
            "LoRA",
            "Hu et al., ICLR 2022",
            "LoraConfig",
            {"r": 8, "lora_alpha": 8},
            identity_at_init=True,
        ),
        ItemPatchType(
            "prompt_tuning",
            "Prompt tuning",
            "Lester et al., EMNLP 2021",
            "PromptTuningConfig",
            {"num_virtual_tokens": 4, "task_type": "FEATURE_EXTRACTION"},
        ),
        ItemPatchType(
            "prefix_tuning",
            "Prefix tuning",
            "Li and Liang, ACL 2021",
            "PrefixTuningConfig",
            {"num_virtual_tokens": 4, "task_type": "FEATURE_EXTRACTION"},
        ),
    )
}
"""PEFT methods for the item encoder by name; `lora` is the default."""
DEFAULT_ITEM_PATCH_TYPE = "lora"


@dataclass(frozen=True)
class TaskKind:
    """What a task predicts, and how its model is built, selected and described.

    Attributes:
        name: the kind's identifier (`"pretraining"`, `"classification"`, `"ranking"`).
        title: one line for cards and tables.
        head: the modeling class of its head (a name in `modeling_peterrec`), or None for pretraining.
        selection_metric: the validation metric that picks the best checkpoint and configuration.
        selection_title: how tables name that metric.
        card_tag: the Hub tag of its patch cards.
        column: the dataset column that marks rows of this kind (`label`, `targets`), None for pretraining.
    """

    name: str
    title: str
    head: str | None
    selection_metric: str
    selection_title: str
    card_tag: str | None
    column: str | None


TASK_KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind("pretraining", "next-item pretraining", None, "mrr@5", "MRR@5 (whole pool)", None, None),
        TaskKind(
            "classification",
            "user-profile classification",
            "PeterRecForSequenceClassification",
            "accuracy",
            "accuracy",
            "user-profile-classification",
            "label",
        ),
        TaskKind(
            "ranking",
            "cold-start item recommendation",
            "PeterRecForItemRanking",
            "mrr@5",
            "MRR@5 (99 negatives)",
            "cold-start-recommendation",
            "targets",
        ),
    )
}
"""Task kinds by name: pretraining, user-profile classification (GenEst, AgeEst, LifeEst), ColdRec ranking."""


@dataclass(frozen=True)
class Readout:
    """How one user vector is read from the backbone's hidden states (Figure 2).

    Attributes:
        name: the readout's identifier (`config.readout`).
        figure: the panel of Figure 2, or None for readouts the paper does not have.
        description: one line for docs and help texts.
        uses_tcl: the input must carry `[TCL]` (appended for the causal backbone, at both ends for the non-causal
            one).
        learned: the readout has weights of its own (attention pooling); they belong to the task head, so every
            fine-tuning method trains them and the patch file stores them.
    """

    name: str
    figure: str | None
    description: str
    uses_tcl: bool
    learned: bool = False


READOUTS: dict[str, Readout] = {
    readout.name: readout
    for readout in (
        Readout(
            "tcl",
            "2(a), 2(c)",
            "the [TCL] position: the last one (causal), the sum of both ends (non-causal)",
            uses_tcl=True,
        ),
        Readout("sum", "2(d)", "the sum of the hidden states at all non-pad positions", uses_tcl=True),
        Readout(
            "mean",
            None,
            "the mean of the hidden states over all non-pad positions ([TCL] included when present)",
            uses_tcl=False,
        ),
        Readout(
            "attention",
            None,
            "learned attention pooling over all non-pad positions, softmax_t(w^T tanh(W h_t + b)); task-owned weights",
            uses_tcl=False,
            learned=True,
        ),
    )
}
"""User-representation readouts, by name. The causal `[TCL]` state sees only the last `config.receptive_field - 1`
items (and depends mostly on the last few); `sum`, `mean` and `attention` read every position, hence the whole
history, whatever its length."""


@dataclass(frozen=True)
class HeadTerms:
    """What a task head adds up into its outputs: the deep term (the user vector of the backbone through the task's
    readout and output layer, Section 3.3) and/or a wide term over the bag of the user's items (wide & deep, Cheng
    et al., DLRS 2016: one weight per item and output, in the task's patch).

    The wide term alone is a linear model of the item bag (a logistic regression for a profile task): it reads no
    backbone, so it measures what the deep term, hence pretraining, adds (the ablation of docs/transfer.md).

    Attributes:
        name: the identifier (`config.head_terms`).
        description: one line for docs and help texts.
        deep: the head reads the backbone's user vector.
        wide: the head adds the linear term over the item bag.
    """

    name: str
    description: str
    deep: bool
    wide: bool


HEAD_TERMS: dict[str, HeadTerms] = {
    terms.name: terms
    for terms in (
        HeadTerms(
            "deep", "the user vector through the task's readout and output layer (the paper's)", True, False
        ),
        HeadTerms(
            "wide", "a linear term over the bag of the user's items only, no backbone (ablation)", False, True
        ),
        HeadTerms(
            "wide_deep", "the deep term plus the wide term over the item bag (wide & deep)", True, True
        ),
    )
}
"""Head terms by name; `deep` is the paper's head."""


@dataclass(frozen=True)
class ModelType:
    """A model type of the family: what `--model_type` selects, where its code lives, and how it transfers.

    Attributes:
        name: the `model_type` of its configuration (`config.json`, the Auto classes).
        config_class: its configuration class, a name in `modeling_peterrec`.
        modeling_file: the module of `modeling_peterrec` that holds its models.
        pretraining_class: its next-item pretraining model, a name in `modeling_peterrec`.
        title: the paper it implements, for tables, help texts and cards.
        backbone_class: the user model that transfer shares, patches and fingerprints (the task models hold it
            under the class's `base_model_prefix`).
        masked_pretraining_class: its masked-item pretraining model, or None where it has none.
        pretraining_fields: the `pretrain` options (`PretrainArguments` fields) that become configuration fields.
        task_heads: the model class of each transfer task kind (`TASK_KINDS`), by kind.
        residual_blocks: its backbone has PeterRec's dilated residual blocks, whose last one the `last_block`
            methods train (`FineTuningMethod.trained_layers`).
        default_insertion: the insertion (`INSERTIONS`) of its patching methods when none is given (None: it has
            no patching methods yet).
    """

    name: str
    config_class: str
    modeling_file: str
    pretraining_class: str
    title: str
    backbone_class: str
    masked_pretraining_class: str | None
    pretraining_fields: tuple[str, ...]
    task_heads: Mapping[str, str]
    residual_blocks: bool
    default_insertion: str | None

    @property
    def learned_positions(self) -> bool:
        """Its backbone learns one embedding per position (SASRec): it reads at most the positions it trained."""
        return "max_position_embeddings" in self.pretraining_fields

    @property
    def methods(self) -> tuple[str, ...]:
        """The fine-tuning methods (`METHODS`) that apply to it."""
        return tuple(
            name
            for name, method in METHODS.items()
            if method.trained_layers != "last_block" or self.residual_blocks
        )


MODEL_TYPES: dict[str, ModelType] = {
    model_type.name: model_type
    for model_type in (
        ModelType(
            "peterrec",
            "PeterRecConfig",
            "modeling_peterrec",
            "PeterRecForNextItemPrediction",
            "PeterRec: dilated convolutions, transferred with model patches (Yuan et al., SIGIR 2020)",
            backbone_class="PeterRecModel",
            masked_pretraining_class="PeterRecForMaskedItemPrediction",
            pretraining_fields=("hidden_size", "kernel_size", "dilations", "is_causal"),
            task_heads={kind.name: kind.head for kind in TASK_KINDS.values() if kind.head is not None},
            residual_blocks=True,
            default_insertion="serial_two",
        ),
        ModelType(
            "cmnrec",
            "CmnRecConfig",
            "modeling_cmnrec",
            "CmnRecForNextItemPrediction",
            "CmnRec: a chunk-accelerated memory network (Qu, Yuan et al., TKDE 2022)",
            backbone_class="CmnRecModel",
            masked_pretraining_class=None,
            pretraining_fields=(
                "hidden_size",
                "embedding_size",
                "controller",
                "controller_size",
                "memory_slots",
                "memory_width",
                "num_read_heads",
                "attention_size",
                "chunking",
            ),
            task_heads={
                "classification": "CmnRecForSequenceClassification",
                "ranking": "CmnRecForItemRanking",
            },
            residual_blocks=False,
            default_insertion="controller_read",
        ),
        ModelType(
            "sasrec",
            "SASRecConfig",
            "modeling_sasrec",
            "SASRecForNextItemPrediction",
            "SASRec: causal self-attention over the item sequence (Kang and McAuley, ICDM 2018)",
            backbone_class="SASRecModel",
            masked_pretraining_class=None,
            pretraining_fields=("hidden_size", "max_position_embeddings", "is_causal", "item_representation"),
            task_heads={
                "classification": "SASRecForSequenceClassification",
                "ranking": "SASRecForItemRanking",
            },
            residual_blocks=False,
            default_insertion="sublayers",
        ),
    )
}
"""The model types of the family, by `model_type`."""


def model_type_supports(
    model_type: ModelType, method: str, insertion: str | None, patch_type: str = DEFAULT_PATCH_TYPE
) -> None:
    """Raises a `ValueError` naming the method (insertion, patch type) and the model type when they do not go
    together."""
    if not model_type.task_heads:
        raise ValueError(
            f"Model type {model_type.name!r} has no transfer heads yet: pretrain it for next-item prediction, or "
            f"transfer a backbone of {[name for name, record in MODEL_TYPES.items() if record.task_heads]}."
        )
    if method not in model_type.methods:
        raise ValueError(
            f"Method {method!r} does not apply to model type {model_type.name!r}; choose one of "
            f"{list(model_type.methods)}."
        )
    if insertion is not None and choose(INSERTIONS, insertion, "insertion").model_type != model_type.name:
        raise ValueError(
            f"Insertion {insertion!r} does not apply to model type {model_type.name!r}; choose one of "
            f"{list(insertions_of(model_type.name))}."
        )
    patch_type_for(model_type.name, patch_type)


@dataclass(frozen=True)
class ChunkRule:
    """How CmnRec splits a sequence into chunks whose ends are the memory's access times (CmnRec, Section 4).

    Attributes:
        name: the rule's identifier (`CmnRecConfig.chunking`).
        title: its name in the paper.
        description: one line for docs and help texts.
    """

    name: str
    title: str
    description: str


CHUNK_RULES: dict[str, ChunkRule] = {
    rule.name: rule
    for rule in (
        ChunkRule(
            "none", "SRMN", "no chunks: the memory is written and read at every step (the per-step baseline)"
        ),
        ChunkRule("pec", "PEC", "periodic chunks of floor(T/m) items, the first one taking the remainder"),
        ChunkRule("tsc", "TSC", "time-sensitive chunks, lengths proportional to m, ..., 1, longest first"),
        ChunkRule("exc", "EXC", "the first T-m+1 items in one chunk, each of the last m-1 items its own"),
    )
}
"""Chunk rules of CmnRec (Section 4), by name."""


def tcl_position(is_causal: bool) -> Literal["end", "both"]:
    """Where the `[TCL]` token goes (Figure 2): appended for the causal backbone (a), at both ends otherwise (c)."""
    return "end" if is_causal else "both"


Record = TypeVar("Record")


def choose(registry: Mapping[str, Record], name: str | None, what: str) -> Record:
    """The record called `name`, or a `ValueError` naming `what` and the allowed names."""
    if name not in registry:
        raise ValueError(f"Unknown {what} {name!r}; choose one of {list(registry)}.")
    return registry[name]


def require_implemented(registry: Mapping[str, object], implemented: Iterable[str], where: str) -> None:
    """Fails loudly when a consumer (`where`) has no code for some record of `registry`."""
    missing = sorted(set(registry) - set(implemented))
    if missing:
        raise NotImplementedError(f"{where} has no implementation for {missing}; add it beside the others.")


__all__ = [
    "BLOCK_CHOICES",
    "CHUNK_RULES",
    "DEFAULT_ITEM_PATCH_TYPE",
    "DEFAULT_PATCH_TARGET",
    "DEFAULT_PATCH_TYPE",
    "ITEM_PATCH_TYPES",
    "ItemPatchType",
    "PATCH_TARGETS",
    "PATCH_TYPES",
    "PatchTarget",
    "PatchType",
    "patch_type_for",
    "patch_types_of",
    "HEAD_TERMS",
    "MODEL_TYPES",
    "ChunkRule",
    "ModelType",
    "INSERTIONS",
    "METHODS",
    "insertions_of",
    "model_type_supports",
    "READOUTS",
    "TASK_KINDS",
    "FineTuningMethod",
    "HeadTerms",
    "InsertionMode",
    "Readout",
    "TaskKind",
    "choose",
    "require_implemented",
    "tcl_position",
]
