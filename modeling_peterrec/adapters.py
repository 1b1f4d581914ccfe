"""The patch types of `registry.PATCH_TYPES` as modules: the adapters that Adapter4Rec (Fu, Yuan et al., WSDM 2024)
compares, on every backbone of the family, beside PeterRec's model patch (Figure 3(f), `ModelPatch`).

A backbone names its places (`PlaceShape`: a dilated convolution, a sub-layer, an attention projection, ...) and at
each one calls `adapt(patches, place, layer_input, layer_output)`: an adapter maps the place's input and output to
the new output. Houlsby, Pfeiffer and Compacter read the output (serial), the parallel adapter and LoRA the input
(LoRA of a dilated convolution reads its im2col taps, so its update is one of the (out, k*in) kernel). The task-wide
parts of a patch (the soft prompt, the K-Adapter side network, Compacter's shared factors) live once per task, in the
backbone's own `patches.<task>`; `insert_prompts` and `add_side_outputs` apply them to groups of rows.

`resolve_patch_kind` turns a type and its settings into a `PatchKind` (defaults filled in, checked against the type's
record and the model type), and `build_patch` makes its modules for a backbone. This module imports only torch and
files that `trust_remote_code` copies beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol

import torch
from torch import nn

from .modeling_utils import dilated_taps
from .registry import (
    BLOCK_CHOICES,
    DEFAULT_PATCH_TYPE,
    INSERTIONS,
    MODEL_TYPES,
    PATCH_TYPES,
    PatchType,
    choose,
    insertions_of,
    patch_type_for,
    require_implemented,
)

PATCH_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
}
"""The nonlinearity inside a bottleneck (`patch_activation`)."""

PATCH_SETTING_DEFAULTS: dict[str, int | float] = {
    "lora_rank": 8,
    "lora_alpha": 8.0,
    "phm_dim": 4,
    "phm_rank": 1,
    "prompt_length": 4,
}
"""Defaults of the type-specific settings; `insertion`, `bottleneck_size` and `activation` default to the backbone
configuration's (`ModelType.default_insertion`, `patch_bottleneck_size`, `patch_activation`)."""


@dataclass(frozen=True)
class PatchKind:
    """One task's patch, fully resolved: its type and every setting that sizes it (None where the type has no such
    setting, `PatchType.settings`). Patches of one kind run as one group of a mixed batch.

    Attributes:
        patch_type: a name of `registry.PATCH_TYPES`.
        places: where it goes in each chosen block (or `input`, `hidden_states` for the task-wide types).
        blocks: which blocks (`registry.BLOCK_CHOICES`), None for a type that is not per block.
        insertion: the model patch's insertion (`registry.INSERTIONS`).
        bottleneck_size, activation: a bottleneck's inner width and nonlinearity.
        lora_rank, lora_alpha: LoRA's rank r and scaling numerator (the update is scaled by alpha / r).
        phm_dim, phm_rank: Compacter's number n of Kronecker products and the rank of each B_i (0: full).
        prompt_length: the soft prompt's number of vectors.
    """

    patch_type: str
    places: tuple[str, ...]
    blocks: str | None = "all"
    insertion: str | None = None
    bottleneck_size: int | None = None
    activation: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    phm_dim: int | None = None
    phm_rank: int | None = None
    prompt_length: int | None = None

    @property
    def record(self) -> PatchType:
        return PATCH_TYPES[self.patch_type]


PATCH_KIND_FIELDS = tuple(field.name for field in fields(PatchKind))
"""What a patch's kind records: its type and settings, the same names in `PatchConfig` and `add_patch`."""


def resolve_patch_kind(
    config,
    patch_type: str = DEFAULT_PATCH_TYPE,
    places: Sequence[str] | None = None,
    blocks: str | None = None,
    **settings: int | float | str | None,
) -> PatchKind:
    """The `PatchKind` of `patch_type` on a backbone of `config`'s model type, with `settings` (the fields of
    `PatchKind`; None: the default).

    Raises:
        ValueError: the type does not fit the model type (naming both and the types that fit), a place or a block
            choice is not the type's, a setting does not apply to the type, or a value is out of range.
    """
    model_type = config.model_type
    record = patch_type_for(model_type, patch_type)
    unknown = sorted(
        set(settings) - set(PATCH_SETTING_DEFAULTS) - {"insertion", "bottleneck_size", "activation"}
    )
    if unknown:
        raise TypeError(f"Unknown patch settings {unknown}.")
    foreign = sorted(
        name for name, value in settings.items() if value is not None and name not in record.settings
    )
    if foreign:
        raise ValueError(
            f"{foreign} do not apply to patch type {patch_type!r}, whose settings are {list(record.settings)}."
        )
    defaults = {
        "insertion": MODEL_TYPES[model_type].default_insertion,
        "bottleneck_size": config.patch_bottleneck_size,
        "activation": config.patch_activation,
        **PATCH_SETTING_DEFAULTS,
    }
    values = {
        name: defaults[name] if settings.get(name) is None else settings[name] for name in record.settings
    }
    _check_settings(values, model_type)
    allowed = record.places[model_type]
    if "insertion" in values:
        chosen = INSERTIONS[values["insertion"]].slots
        if places is not None and tuple(places) != chosen:
            raise ValueError(
                f"The model patch's places follow its insertion ({values['insertion']!r}: {list(chosen)}); "
                f"got places={list(places)}."
            )
    else:
        chosen = tuple(places) if places else record.default_places[model_type]
        outside = sorted(set(chosen) - set(allowed))
        if outside:
            raise ValueError(
                f"Patch type {patch_type!r} goes to {list(allowed)} on model type {model_type!r}; got {outside}."
            )
        chosen = tuple(place for place in allowed if place in chosen)
    if record.per_block:
        blocks = blocks or "all"
        if blocks not in BLOCK_CHOICES:
            raise ValueError(f"blocks must be one of {list(BLOCK_CHOICES)}, got {blocks!r}.")
    elif blocks not in (None, "all"):
        raise ValueError(f"Patch type {patch_type!r} is one module per task; it takes no blocks={blocks!r}.")
    else:
        blocks = None
    return PatchKind(patch_type, chosen, blocks, **values)


def _check_settings(values: Mapping[str, object], model_type: str) -> None:
    if (
        "insertion" in values
        and choose(INSERTIONS, values["insertion"], "insertion").model_type != model_type
    ):
        raise ValueError(
            f"Insertion {values['insertion']!r} does not apply to model type {model_type!r}; choose one of "
            f"{list(insertions_of(model_type))}."
        )
    if "activation" in values:
        choose(PATCH_ACTIVATIONS, values["activation"], "patch activation")
    for name in ("bottleneck_size", "lora_rank", "phm_dim", "prompt_length"):
        if name in values and (not isinstance(values[name], int) or values[name] <= 0):
            raise ValueError(f"{name} must be a positive integer, got {values[name]!r}.")
    if "phm_rank" in values and (not isinstance(values["phm_rank"], int) or values["phm_rank"] < 0):
        raise ValueError(
            f"phm_rank must be a non-negative integer (0: full rank), got {values['phm_rank']!r}."
        )
    if "lora_alpha" in values and not values["lora_alpha"] > 0:
        raise ValueError(f"lora_alpha must be positive, got {values['lora_alpha']!r}.")


def chosen_blocks(blocks: str | None, num_blocks: int) -> tuple[int, ...]:
    """The indices of the blocks that `blocks` (`registry.BLOCK_CHOICES`) selects."""
    return {"all": tuple(range(num_blocks)), "first": (0,), "last": (num_blocks - 1,)}[blocks or "all"]


# ---------------------------------------------------------------------------------------------------------------
# Projections and bottlenecks
# ---------------------------------------------------------------------------------------------------------------


class PHMRule(nn.Module):
    """The n small matrices A_i (n x n) of a task's PHM layers, one tensor shared by all of them (Compacter's shared
    "slow" weights, Mahabadi et al. 2021). Drawn with variance 1/n so that sum_i A_i (x) B_i keeps B's scale."""

    def __init__(self, phm_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(phm_dim, phm_dim, phm_dim) / phm_dim**0.5)


class PHMLinear(nn.Module):
    """A linear layer whose (in, out) weight is W = sum_i A_i (x) B_i (parameterised hypercomplex multiplication,
    Zhang et al., ICLR 2021): A_i from the task's shared `PHMRule`, B_i (in/n, out/n) its own, as the product of
    two rank-`rank` factors (Compacter) or a full matrix (`rank=0`, the PHM adapter). `zero` starts W (and the
    bias) at zero, for an up-projection. The rule is referenced, not registered: the task owns its one copy."""

    def __init__(self, in_features: int, out_features: int, rule: PHMRule, rank: int, zero: bool, std: float):
        super().__init__()
        phm_dim = rule.weight.shape[0]
        if in_features % phm_dim or out_features % phm_dim:
            raise ValueError(
                f"Compacter's phm_dim={phm_dim} must divide both widths of each projection, got {in_features} -> "
                f"{out_features}; choose phm_dim and bottleneck_size accordingly."
            )
        self.__dict__["rule"] = rule
        rows, columns = in_features // phm_dim, out_features // phm_dim
        if rank:
            # Each factor's scale makes W's entries start with the family's std, as a dense layer's would.
            factor_std = (std**2 / rank) ** 0.25
            self.weight_left = nn.Parameter(torch.randn(phm_dim, rows, rank) * factor_std)
            self.weight_right = nn.Parameter(torch.randn(phm_dim, rank, columns) * factor_std * (not zero))
        else:
            self.weight = nn.Parameter(torch.randn(phm_dim, rows, columns) * std * (not zero))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def full_weight(self) -> torch.Tensor:
        """W = sum_i A_i (x) B_i, (in, out)."""
        factors = self.weight_left @ self.weight_right if hasattr(self, "weight_left") else self.weight
        rule = self.rule.weight.to(factors.dtype)
        phm_dim, rows, columns = factors.shape
        return torch.einsum("iab,icd->acbd", rule, factors).reshape(phm_dim * rows, phm_dim * columns)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states @ self.full_weight() + self.bias


Projection = Callable[[int, int, bool], nn.Module]
"""Makes a projection (in, out, starts at zero)."""


def linear_projection(in_features: int, out_features: int, zero: bool) -> nn.Linear:
    """A dense projection; `zero_init` marks the family's initialisation to start it at zero."""
    layer = nn.Linear(in_features, out_features)
    layer.zero_init = zero
    return layer


class Bottleneck(nn.Module):
    """down -> nonlinearity -> up, the up-projection starting at zero: the body of the model patch (Figure 3(f)) and
    of the bottleneck adapters."""

    def __init__(
        self,
        in_features: int,
        bottleneck_size: int,
        out_features: int,
        activation: str,
        projection: Projection = linear_projection,
    ):
        super().__init__()
        self.down = projection(in_features, bottleneck_size, False)
        self.act = PATCH_ACTIVATIONS[activation]()
        self.up = projection(bottleneck_size, out_features, True)

    def delta(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(hidden_states)))


class Adapter(Bottleneck):
    """A bottleneck adapter at a place, added to the place's output: serial (Houlsby, Pfeiffer, Compacter and the
    model patch on SASRec and CmnRec: `out + up(act(down(out)))`) or parallel (He et al. 2022:
    `out + up(act(down(in)))`, beside the sub-layer)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bottleneck_size: int,
        activation: str,
        reads_input: bool,
        projection: Projection = linear_projection,
    ):
        super().__init__(in_features, bottleneck_size, out_features, activation, projection)
        self.reads_input = reads_input

    def forward(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        return layer_output + self.delta(layer_input if self.reads_input else layer_output)


class LoRA(nn.Module):
    """Low-rank adaptation (Hu et al. 2022): the place's weight W becomes W + (alpha / r) B A, with A (r, in) drawn
    and B (out, r) zero, so the update starts at zero; it runs beside the frozen layer as `out + scale * B A x`.

    For a dilated convolution (`taps` given: kernel size, dilation, padding) x is the im2col of its input
    (`modeling_utils.dilated_taps`), so B A is an update of the (out, k*in) kernel. Written here rather than taken
    from PEFT: PEFT's LoRA fails on a dilated `Conv1d` (huggingface/peft#3697) and cannot serve rows of a mixed batch
    with their own tasks' weights beside one frozen backbone.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        taps: tuple[int, int, tuple[int, int]] | None = None,
    ):
        super().__init__()
        self.taps = taps
        self.lora_A = nn.Linear(in_features * (taps[0] if taps else 1), rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.lora_B.zero_init = True
        self.scaling = alpha / rank

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, (out, in) or for a convolution (out, k*in)."""
        return self.scaling * self.lora_B.weight @ self.lora_A.weight

    def forward(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        if self.taps is not None:
            layer_input = dilated_taps(layer_input, *self.taps)
        return layer_output + self.scaling * self.lora_B(self.lora_A(layer_input))


class SideNetwork(nn.Module):
    """K-Adapter's side network (Wang et al. 2021): for each chosen block j in order, a side layer (a serial
    bottleneck) reads h_j + s_{j-1}, the block's output plus the previous side layer's (s_0 = 0); the last side
    output goes through a zero-initialised projection and is added to the backbone's last hidden state, so the patched
    backbone starts as the frozen one. Everything is position-wise: padding never reaches a user's positions."""

    def __init__(self, width: int, bottleneck_size: int, activation: str, block_indices: Sequence[int]):
        super().__init__()
        self.block_indices = tuple(block_indices)
        self.layers = nn.ModuleList(
            Adapter(width, width, bottleneck_size, activation, reads_input=False) for _ in self.block_indices
        )
        self.output = linear_projection(width, width, True)

    def forward(self, block_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        side = torch.zeros_like(block_outputs[0])
        for index, layer in zip(self.block_indices, self.layers, strict=True):
            reads = block_outputs[index] + side
            side = layer(reads, reads)
        return self.output(side)


class SoftPrompt(nn.Module):
    """Prompt tuning (Lester et al. 2021): `length` learned input embeddings, drawn like the item embeddings."""

    def __init__(self, length: int, width: int, std: float):
        super().__init__()
        self.embeddings = nn.Parameter(
            torch.nn.init.trunc_normal_(torch.empty(length, width), std=std, a=-2 * std, b=2 * std)
        )


# ---------------------------------------------------------------------------------------------------------------
# Applying patches in a backbone
# ---------------------------------------------------------------------------------------------------------------


def adapt(
    patches: Mapping[str, nn.Module], place: str, layer_input: torch.Tensor, layer_output: torch.Tensor
) -> torch.Tensor:
    """The output of `place` with the task's adapter there, if it has one."""
    return patches[place](layer_input, layer_output) if place in patches else layer_output


RowModules = Sequence[tuple[slice, nn.Module | None]]
"""Contiguous groups of a batch's rows, each with its task's module (None: the group has none)."""


def insert_prompts(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, groups: RowModules
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inserts each group's `SoftPrompt` into its rows' (left-padded) inputs, right before the first item,
    so a user's outputs still do not depend on how much padding the batch needed; rows without a prompt (or with a
    shorter one) get that many more pad positions. Returns the embeddings and mask, `n` positions longer, and `n`:
    the caller drops the first `n` outputs, after which every item is where it was (the readouts never see prompt
    positions: they are pad positions of the caller's mask)."""
    length = max((prompt.embeddings.shape[0] for _, prompt in groups if prompt is not None), default=0)
    if not length:
        return hidden_states, attention_mask, 0
    batch, _, width = hidden_states.shape
    prompts = hidden_states.new_zeros(batch, length, width)
    prompt_mask = attention_mask.new_zeros(batch, length)
    for rows, prompt in groups:
        if prompt is not None:
            size = prompt.embeddings.shape[0]
            prompts[rows, length - size :] = prompt.embeddings.to(hidden_states.dtype)
            prompt_mask[rows, length - size :] = 1
    hidden_states = torch.cat([prompts, hidden_states], dim=1)
    attention_mask = torch.cat([prompt_mask, attention_mask], dim=1)
    # A stable sort moves every pad position to the left, prompt and items keeping their order.
    order = torch.sort(attention_mask.ne(0).to(torch.int8), dim=1, stable=True).indices
    hidden_states = hidden_states.gather(1, order.unsqueeze(-1).expand_as(hidden_states))
    return hidden_states, attention_mask.gather(1, order), length


def add_side_outputs(
    hidden_states: torch.Tensor, block_outputs: Sequence[torch.Tensor], groups: RowModules
) -> torch.Tensor:
    """The last hidden states plus each group's `SideNetwork` output over its rows' block outputs."""
    if all(side is None for _, side in groups):
        return hidden_states
    pieces = [
        hidden_states[rows] + side([output[rows] for output in block_outputs])
        if side is not None
        else hidden_states[rows]
        for rows, side in groups
    ]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


# ---------------------------------------------------------------------------------------------------------------
# Building a patch
# ---------------------------------------------------------------------------------------------------------------


class PlaceShape(NamedTuple):
    """A place of a backbone: the widths of its input and output, and for a dilated convolution its taps (kernel
    size, dilation, padding)."""

    in_features: int
    out_features: int
    taps: tuple[int, int, tuple[int, int]] | None = None


class PatchHost(Protocol):
    """What a backbone tells `build_patch`: its blocks' places, and the widths of its hidden states and input."""

    def patch_places(self, block: int) -> dict[str, PlaceShape]: ...

    def patch_holders(self) -> list[nn.ModuleDict]: ...


def _serial(kind: PatchKind, shape: PlaceShape, rule: PHMRule | None, std: float) -> nn.Module:
    return Adapter(shape.out_features, shape.out_features, kind.bottleneck_size, kind.activation, False)


def _parallel(kind: PatchKind, shape: PlaceShape, rule: PHMRule | None, std: float) -> nn.Module:
    return Adapter(shape.in_features, shape.out_features, kind.bottleneck_size, kind.activation, True)


def _lora(kind: PatchKind, shape: PlaceShape, rule: PHMRule | None, std: float) -> nn.Module:
    return LoRA(shape.in_features, shape.out_features, kind.lora_rank, kind.lora_alpha, shape.taps)


def _compacter(kind: PatchKind, shape: PlaceShape, rule: PHMRule | None, std: float) -> nn.Module:
    def projection(in_features: int, out_features: int, zero: bool) -> PHMLinear:
        return PHMLinear(in_features, out_features, rule, kind.phm_rank, zero, std)

    width = shape.out_features
    return Adapter(width, width, kind.bottleneck_size, kind.activation, False, projection)


PlaceAdapter = Callable[[PatchKind, PlaceShape, "PHMRule | None", float], nn.Module]
"""Makes a type's adapter at a place: (kind, place, the task's shared PHM rule, the family's init std)."""

PLACE_ADAPTERS: dict[str, PlaceAdapter | None] = {
    "model_patch": _serial,
    "houlsby": _serial,
    "parallel": _parallel,
    "pfeiffer": _serial,
    "lora": _lora,
    "compacter": _compacter,
    "k_adapter": None,
    "soft_prompt": None,
}
"""The adapter each type puts at a place of a block (None: the type is task-wide only). The dilated-conv backbone
places its model patches itself (`ModelPatch` and the insertions of Figure 3)."""
require_implemented(PATCH_TYPES, PLACE_ADAPTERS, "adapters PLACE_ADAPTERS")


def build_patch(
    kind: PatchKind,
    host: PatchHost,
    hidden_size: int,
    input_width: int,
    std: float,
    place_adapter: PlaceAdapter | None = None,
) -> tuple[list[dict[str, nn.Module]], dict[str, nn.Module]]:
    """The modules of one task's patch of `kind` on `host`: for each block, its adapters by place (none in the blocks
    `kind.blocks` leaves out), and the task-wide modules (`prompt`, `side`, `phm_rule`). `place_adapter` replaces
    the type's `PLACE_ADAPTERS` entry (the dilated-conv backbone's model patches)."""
    num_blocks = len(host.patch_holders())
    chosen = chosen_blocks(kind.blocks, num_blocks)
    task_wide: dict[str, nn.Module] = {}
    if kind.phm_dim is not None:
        task_wide["phm_rule"] = PHMRule(kind.phm_dim)
    if kind.prompt_length is not None:
        task_wide["prompt"] = SoftPrompt(kind.prompt_length, input_width, std)
    make = place_adapter or PLACE_ADAPTERS[kind.patch_type]
    if make is None:
        if "hidden_states" in kind.places:
            task_wide["side"] = SideNetwork(hidden_size, kind.bottleneck_size, kind.activation, chosen)
        return [{} for _ in range(num_blocks)], task_wide
    per_block = []
    for block in range(num_blocks):
        shapes = host.patch_places(block) if block in chosen else {}
        require_implemented(
            dict.fromkeys(kind.places if shapes else ()), shapes, f"{type(host).__name__}.patch_places"
        )
        rule = task_wide.get("phm_rule")
        per_block.append({place: make(kind, shapes[place], rule, std) for place in kind.places if shapes})
    return per_block, task_wide


__all__ = [
    "PATCH_ACTIVATIONS",
    "PATCH_KIND_FIELDS",
    "PATCH_SETTING_DEFAULTS",
    "Adapter",
    "Bottleneck",
    "LoRA",
    "PHMLinear",
    "PHMRule",
    "PatchKind",
    "PlaceAdapter",
    "PlaceShape",
    "SideNetwork",
    "SoftPrompt",
    "adapt",
    "add_side_outputs",
    "build_patch",
    "chosen_blocks",
    "insert_prompts",
    "resolve_patch_kind",
]
