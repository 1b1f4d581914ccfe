"""PeterRec: a dilated-convolution user model pretrained on item sequences and transferred with model patches.

Yuan et al., "Parameter-Efficient Transfer from Sequential Behaviors for User Modeling and Recommendation"
(SIGIR 2020). The file reads like the paper: the dilated convolution (Section 3.2), the model patch (Figure 3(f))
and its insertions (Figure 3(b)-(e)), the residual block (Figure 3(a)), the readouts (Figure 2, plus the mean and
attention pooling that see the whole history), then the backbone, the two pretraining heads (Eq. 1 causal
next-item, Eq. 2 masked-item) and the two fine-tuning heads (Section 3.3), each with its task's readout.
The last section serves many tasks in one batch: it groups rows by kind of patch and applies each row's own patch.
The other model types (CmnRec, SASRec) take from here their task-owned patches on named places (`SlotPatches`) and
their task heads (`UserTask`, `ClassificationHead`, `ItemRankingHead`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, ModelOutput, SequenceClassifierOutput

from .configuration_peterrec import INSERTION_MODES, PeterRecConfig
from .modeling_utils import (
    PRETRAINING_HEAD_KEYS,
    FullAutoMapMixin,
    ItemPredictionMixin,
    check_item_ids,
    classification_loss,
    init_truncated_normal,
)
from .registry import (
    HEAD_TERMS,
    INSERTIONS,
    MODEL_TYPES,
    READOUTS,
    insertions_of,
    require_implemented,
    tcl_position,
)

AUTO_CLASSES = {
    "AutoModel": "PeterRecModel",
    "AutoModelForCausalLM": "PeterRecForNextItemPrediction",
    "AutoModelForMaskedLM": "PeterRecForMaskedItemPrediction",
    "AutoModelForSequenceClassification": "PeterRecForSequenceClassification",
}
"""The Auto class that loads each model of this file (`FullAutoMapMixin` names them all in a saved `auto_map`);
`PeterRecForItemRanking` has no matching Auto class."""

PATCH_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
}


class DilatedConv1d(nn.Module):
    """One dilated convolution layer over (batch, length, channels) inputs (Section 3.2).

    The causal variant (NextItNet) pads (k - 1) * d zeros on the left so position t sees only positions <= t;
    the non-causal variant (GRec encoder) pads symmetrically.
    """

    def __init__(self, hidden_size: int, kernel_size: int, dilation: int, is_causal: bool):
        super().__init__()
        total = (kernel_size - 1) * dilation
        self.padding = (total, 0) if is_causal else (total // 2, total - total // 2)
        self.conv = nn.Conv1d(hidden_size, hidden_size, kernel_size, dilation=dilation)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.device.type == "cpu":
            return self._forward_channels_last(hidden_states)
        hidden_states = F.pad(hidden_states.transpose(1, 2), self.padding)
        return self.conv(hidden_states).transpose(1, 2)

    def _forward_channels_last(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same convolution as one matmul in the (batch, length, channels) layout: each position's k dilated
        taps side by side (im2col) against the kernel laid out as (out, k * in). On CPU this skips the transposes
        and oneDNN's layout copies around `nn.Conv1d`, 15% of the backbone's time at hidden size 64
        (docs/performance.md, CPU section); on GPU `nn.Conv1d` is kept, as measured there."""
        length, dilation = hidden_states.shape[1], self.conv.dilation[0]
        padded = F.pad(hidden_states, (0, 0, *self.padding))
        taps = [
            padded[:, tap * dilation : tap * dilation + length] for tap in range(self.conv.kernel_size[0])
        ]
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        return F.linear(torch.cat(taps, dim=-1), weight, self.conv.bias)


class ModelPatch(nn.Module):
    """Model patch, Figure 3(f): a bottleneck with a shortcut, `x + up(act(down(x)))`.

    The projections are 1x1 convolutions, i.e. linear layers over channels, from k to d (k = 8d in the paper)
    and back. The up-projection starts at zero so that a serially inserted patch is the identity at the start
    of fine-tuning.
    """

    def __init__(self, hidden_size: int, bottleneck_size: int, activation: str):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.act = PATCH_ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck_size, hidden_size)
        self.up.zero_init = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up(self.act(self.down(hidden_states)))


Patched = Callable[[torch.Tensor], torch.Tensor]
Normalize = Callable[[torch.Tensor], torch.Tensor]


def _serial(patch: Patched, layer_input, conv_output, normalize: Normalize) -> torch.Tensor:
    """Serial insertion, Figure 3(b)/(c): the patch on the conv's output, before its LayerNorm."""
    return torch.relu(normalize(patch(conv_output)))


def _parallel_before_ln(patch: Patched, layer_input, conv_output, normalize: Normalize) -> torch.Tensor:
    """Parallel insertion, Figure 3(d): the patch beside the conv, added before its LayerNorm."""
    return torch.relu(normalize(conv_output + patch(layer_input)))


def _parallel_after_act(patch: Patched, layer_input, conv_output, normalize: Normalize) -> torch.Tensor:
    """Parallel insertion, Figure 3(e): the patch beside the conv, added after the activation."""
    return torch.relu(normalize(conv_output)) + patch(layer_input)


PLACEMENTS = {
    "serial": _serial,
    "parallel_before_ln": _parallel_before_ln,
    "parallel_after_act": _parallel_after_act,
}
"""How each placement of `registry.INSERTIONS` combines a conv layer with its patch."""
require_implemented({mode.placement: mode for mode in INSERTIONS.values()}, PLACEMENTS, "modeling PLACEMENTS")


def build_block_patches(
    hidden_size: int, insertion: str, bottleneck_size: int, activation: str
) -> nn.ModuleDict:
    """The patches of one residual block for one task, on the convolutions its insertion names (Figure 3)."""
    return nn.ModuleDict(
        {slot: ModelPatch(hidden_size, bottleneck_size, activation) for slot in INSERTIONS[insertion].slots}
    )


class DilatedResidualBlock(nn.Module):
    """Residual block of Figure 3(a): conv(d) -> LayerNorm -> ReLU -> conv(2d) -> LayerNorm -> ReLU, plus the input.

    `patches` holds each task's model patches (a `ModuleDict` keyed by task name, like PEFT's tuners), so one
    frozen block serves many tasks. A task's patch may also carry its own copy of a LayerNorm (`norm1`/`norm2`),
    which then replaces the shared one for that task's rows.
    """

    def __init__(self, config: PeterRecConfig, dilation1: int, dilation2: int):
        super().__init__()
        self.conv1 = DilatedConv1d(config.hidden_size, config.kernel_size, dilation1, config.is_causal)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv2 = DilatedConv1d(config.hidden_size, config.kernel_size, dilation2, config.is_causal)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.patches = nn.ModuleDict()

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor, routing: PatchRouting
    ) -> torch.Tensor:
        # Pad positions are zeroed before every convolution, so they act exactly like the convolution's own
        # zero padding: a user's outputs do not depend on how much left padding the batch needed.
        layer_input = hidden_states
        for slot, norm in (("conv1", "norm1"), ("conv2", "norm2")):
            layer_input = layer_input * padding_mask
            conv_output = getattr(self, slot)(layer_input)
            groups = [
                self._layer(slot, norm, group, layer_input[group.rows], conv_output[group.rows])
                for group in routing
            ]
            layer_input = torch.cat(groups) if len(groups) > 1 else groups[0]
        return hidden_states + layer_input

    def _layer(
        self, slot: str, norm: str, group: PatchGroup, layer_input: torch.Tensor, conv_output: torch.Tensor
    ) -> torch.Tensor:
        """One conv layer's normalisation and activation for one group of rows, with the group's patches."""
        shared_norm = getattr(self, norm)
        if not group.tasks:
            return torch.relu(shared_norm(conv_output))
        patches = [self.patches[task] for task in group.tasks]
        norms = [patch[norm] if norm in patch else shared_norm for patch in patches]

        def normalize(hidden: torch.Tensor) -> torch.Tensor:
            return apply_layer_norms(norms, group.row_task, hidden)

        if slot not in patches[0]:
            return torch.relu(normalize(conv_output))

        def patch(hidden: torch.Tensor) -> torch.Tensor:
            return apply_patches([p[slot] for p in patches], group.row_task, hidden)

        placement = PLACEMENTS[INSERTIONS[group.insertion].placement]
        return placement(patch, layer_input, conv_output, normalize)


class AttentionPooler(nn.Module):
    """Learned attention pooling over positions: `softmax_t(w^T tanh(W h_t + b))` weights the hidden states h_t.

    It sees every non-pad position, so the whole history, unlike the causal `[TCL]` state, which sees one receptive
    field. With the small initialisation the scores start near zero, so the pooling starts near the mean readout.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.proj(hidden_states))).squeeze(-1).float()
        weights = torch.softmax(scores.masked_fill(~attention_mask.bool(), float("-inf")), dim=-1)
        return torch.einsum("bt,bth->bh", weights.to(hidden_states.dtype), hidden_states)


def _tcl_readout(
    readout: UserReadout, hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """[TCL] readout: the last position for the causal encoder (Figure 2(a)), the sum of the `[TCL]` at both ends
    for the non-causal one (Figure 2(c)). Sequences are left-padded, so the last position is always real."""
    last = hidden_states[:, -1]
    if readout.is_causal:
        return last
    first_index = attention_mask.shape[1] - attention_mask.long().sum(1)
    return last + hidden_states[torch.arange(hidden_states.shape[0], device=last.device), first_index]


def _masked_sum(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    # Pad positions carry the pad embedding in the residual stream, so they must be masked out, never summed.
    return (hidden_states * attention_mask.unsqueeze(-1).to(hidden_states.dtype)).sum(1)


def _sum_readout(
    readout: UserReadout, hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Sum readout, Figure 2(d): the sum of the hidden states at all non-pad positions."""
    return _masked_sum(hidden_states, attention_mask)


def _mean_readout(
    readout: UserReadout, hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean readout: the sum readout divided by the number of non-pad positions, so users with long and short
    histories get vectors of one scale. `[TCL]` counts like an item when the input carries it (as in Figure 2(d)):
    it is the position that holds a task-owned `[TCL]` embedding (`train_tcl_embedding`)."""
    count = attention_mask.sum(1, keepdim=True).clamp(min=1).to(hidden_states.dtype)
    return _masked_sum(hidden_states, attention_mask) / count


def _attention_readout(
    readout: UserReadout, hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Attention readout: the task's `AttentionPooler` over all non-pad positions (`[TCL]` included if present)."""
    return readout.pooler(hidden_states, attention_mask)


READOUT_FUNCTIONS = {
    "tcl": _tcl_readout,
    "sum": _sum_readout,
    "mean": _mean_readout,
    "attention": _attention_readout,
}
"""The code of each readout of `registry.READOUTS`."""
require_implemented(READOUTS, READOUT_FUNCTIONS, "modeling READOUT_FUNCTIONS")


class UserReadout(nn.Module):
    """Reads one vector per user from the hidden states with `config.readout` (Figure 2, `registry.READOUTS`).

    Each task head holds its own, so tasks on one backbone may read users differently, and the weights of a learned
    readout (`Readout.learned`: the attention pooler) belong to the task: every method trains them, the patch file
    stores them (`readout.pooler.*`, a name without the task), and a mixed batch reads each row with its task's.
    """

    def __init__(self, config: PeterRecConfig):
        super().__init__()
        require_implemented({config.readout: None}, READOUT_FUNCTIONS, "modeling READOUT_FUNCTIONS")
        self.name = config.readout
        self.is_causal = config.is_causal
        self.pooler = AttentionPooler(config.hidden_size) if READOUTS[config.readout].learned else None

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return READOUT_FUNCTIONS[self.name](self, hidden_states, attention_mask)


class ItemBagTerm(nn.Module):
    """The wide term of a wide & deep head (`registry.HEAD_TERMS`; Cheng et al., DLRS 2016): a linear function of
    the bag of the user's items, `b + sum_i w_i / sqrt(n)` over the n item positions of the input, one weight per
    item and output.

    The 1/sqrt(n) weights make the bag a unit vector (for distinct items), so long and short histories give terms
    of one scale, as the TF-IDF regression baseline's normalised bag does. Special tokens never count. The weights
    start at zero: a wide & deep head starts as its deep head. They belong to the task head (the patch stores them
    as `wide.*`).
    """

    def __init__(self, config: PeterRecConfig, num_outputs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(config.vocab_size, num_outputs))
        self.bias = nn.Parameter(torch.zeros(num_outputs))
        # The tokenizer gives the special tokens the ids below the first item.
        self.first_item_id = 1 + max(
            config.pad_token_id, config.unk_token_id, config.mask_token_id, config.tcl_token_id
        )

    def reset_parameters(self) -> None:
        init.zeros_(self.weight)
        init.zeros_(self.bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_item = input_ids.ge(self.first_item_id)
        count = is_item.sum(1, keepdim=True).clamp(min=1)
        weights = is_item.to(self.weight.dtype) / count.to(self.weight.dtype).sqrt()
        return F.embedding_bag(input_ids, self.weight, per_sample_weights=weights, mode="sum") + self.bias


# ---------------------------------------------------------------------------------------------------------------
# Task-owned model patches on named places: what the backbones other than the dilated-conv one share
# ---------------------------------------------------------------------------------------------------------------


class PatchedTaskModel:
    """A model whose backbone may hold task-owned patches: a task model prepared for transfer (`prepare_for_transfer`,
    `load_patch`) carries `patch_config`, and runs its backbone with that task's patch."""

    patch_config = None

    @property
    def patch_name(self) -> str | None:
        """The patch this model runs its backbone with: its transfer patch's task, or None."""
        if self.patch_config is not None and self.patch_config.task in self.base_model.patch_kinds:
            return self.patch_config.task
        return None


class SlotPatches:
    """Each task's model patches (Figure 3(f), zero up-projection: the identity at the start) on the places
    (`InsertionMode.slots`) of the backbone's insertions, one patch per place and holder, so several tasks attach to
    one frozen backbone and one call runs one task's patches.

    A backbone sets `patch_widths` (the width of each place of each of its insertions) and `patch_holders()` (the
    `ModuleDict`s that hold a `{task: {place: ModelPatch}}` each, under `.patches.` names: the backbone's own, or
    one per block), and calls `_init_patches()` in its `__init__`.
    """

    patch_widths: dict[str, dict[str, Callable[[PreTrainedConfig], int]]]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        require_implemented(
            insertions_of(cls.config_class.model_type), cls.patch_widths, f"{cls.__name__}.patch_widths"
        )

    def _init_patches(self) -> None:
        self.patch_kinds: dict[str, PatchKind] = {}

    def patch_holders(self) -> list[nn.ModuleDict]:
        raise NotImplementedError(f"{type(self).__name__} must define patch_holders.")

    def add_patch(
        self,
        task: str,
        insertion: str | None = None,
        bottleneck_size: int | None = None,
        activation: str | None = None,
        layer_norms: Sequence[str] = (),
        tcl_embedding: bool = False,
    ) -> None:
        """Adds `task`'s model patches on the places of `insertion` (`registry.INSERTIONS`; default: the model
        type's, `registry.MODEL_TYPES`).

        `layer_norms` and `tcl_embedding` are PeterRec's (task-owned copies of block LayerNorms and of `[TCL]`);
        these backbones keep the shared ones, so they must be empty."""
        if not task or "." in task:
            raise ValueError(f"Patch name {task!r} must be non-empty and contain no '.'.")
        if task in self.patch_kinds:
            raise ValueError(
                f"A patch named {task!r} already exists; remove it first or choose another name."
            )
        if layer_norms or tcl_embedding:
            raise ValueError(
                f"{type(self).__name__} patches train no LayerNorm copies or [TCL] embedding (train_layer_norms, "
                "train_tcl_embedding are PeterRec's)."
            )
        insertion = insertion or MODEL_TYPES[self.config.model_type].default_insertion
        self.config._check_choice("insertion", insertion, tuple(self.patch_widths))
        bottleneck_size = bottleneck_size or self.config.patch_bottleneck_size
        activation = activation or self.config.patch_activation
        self.config._check_choice("patch_activation", activation, tuple(PATCH_ACTIVATIONS))
        if not isinstance(bottleneck_size, int) or bottleneck_size <= 0:
            raise ValueError(f"bottleneck_size must be a positive integer, got {bottleneck_size!r}.")
        weight = self.embed_items.weight
        for holder in self.patch_holders():
            patches = nn.ModuleDict(
                {
                    slot: ModelPatch(
                        self.patch_widths[insertion][slot](self.config), bottleneck_size, activation
                    )
                    for slot in INSERTIONS[insertion].slots
                }
            )
            for module in patches.modules():
                self._init_weights(module)
            holder[task] = patches.to(device=weight.device, dtype=weight.dtype)
        self.patch_kinds[task] = PatchKind(insertion, bottleneck_size, activation)

    def remove_patch(self, task: str) -> None:
        """Removes `task`'s patches."""
        self._check_patch(task)
        for holder in self.patch_holders():
            del holder[task]
        del self.patch_kinds[task]

    def _check_patch(self, patch: str | None) -> str | None:
        """`patch` when it names one of this backbone's tasks (or is None); one task per call."""
        if patch is not None and not isinstance(patch, str):
            raise ValueError(
                f"{type(self).__name__} runs one task's patch per call; pass a task name, not one per row."
            )
        if patch is not None and patch not in self.patch_kinds:
            raise KeyError(f"No patch named {[patch]}; this user model has {sorted(self.patch_kinds)}.")
        return patch


class PeterRecPreTrainedModel(FullAutoMapMixin, PreTrainedModel):
    """Base class: configuration, weight initialisation (truncated normal, Section 4.1) and loading.

    A task model prepared for transfer (`prepare_for_transfer`, `load_patch`) carries `patch_config`, the one
    description of its patch (`modeling_peterrec.patch_config.PatchConfig`, what `patch_config.json` records).
    """

    config_class = PeterRecConfig
    config: PeterRecConfig
    base_model_prefix = "peterrec"
    main_input_name = "input_ids"
    # forward takes no **kwargs; Trainer must not rescale the loss by the number of processes.
    accepts_loss_kwargs = False
    _no_split_modules = ["DilatedResidualBlock"]
    _keys_to_ignore_on_load_unexpected = PRETRAINING_HEAD_KEYS
    patch_config = None

    @property
    def patch_name(self) -> str | None:
        """The patch this model runs its backbone with: its transfer patch's task, the patch its configuration
        builds in, or None."""
        if self.patch_config is not None:
            return self.patch_config.task if self.patch_config.task in self.base_model.patch_kinds else None
        return self.config.patch_task if self.config.patch_insertion else None

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            init_truncated_normal(module, self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ItemBagTerm):
            module.reset_parameters()


class PeterRecModel(PeterRecPreTrainedModel):
    """The pretrained backbone: item embedding and a stack of dilated residual blocks (Figure 3(a)).

    Causal (NextItNet, `config.is_causal=True`) or non-causal (GRec encoder). Model patches are added by task name
    with [`~PeterRecModel.add_patch`] (or built in by `config.patch_insertion`) and chosen per call with `patch=`.
    """

    def __init__(self, config: PeterRecConfig):
        super().__init__(config)
        self.embed_items = nn.Embedding(config.vocab_size, config.hidden_size)
        dilations = config.dilations
        self.blocks = nn.ModuleList(
            DilatedResidualBlock(config, dilations[i], dilations[i + 1]) for i in range(0, len(dilations), 2)
        )
        self.tcl_embeddings = nn.ParameterDict()
        self.patch_kinds: dict[str, PatchKind] = {}
        if config.patch_insertion is not None:
            self.add_patch(config.patch_task, config.patch_insertion)
        self.post_init()

    @property
    def patch_insertions(self) -> dict[str, str]:
        """Insertion mode of each task's patch."""
        return {task: kind.insertion for task, kind in self.patch_kinds.items()}

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_items

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_items = value

    def add_patch(
        self,
        task: str,
        insertion: str,
        bottleneck_size: int | None = None,
        activation: str | None = None,
        layer_norms: Sequence[str] = (),
        tcl_embedding: bool = False,
    ) -> None:
        """Inserts a new model patch for `task` into every residual block (Figure 3(b)-(e)).

        Args:
            task: name of the patch; one backbone holds many.
            insertion: a name of `registry.INSERTIONS` (`"serial_one"`, `"serial_two"`, `"parallel_before_ln"`,
                `"parallel_after_act"`).
            bottleneck_size: defaults to `config.patch_bottleneck_size`.
            activation: defaults to `config.patch_activation`.
            layer_norms: names of the block LayerNorms (`"norm1"`, `"norm2"`) that this task trains: each gets a
                task-owned copy so the shared backbone stays untouched (the original code retrained `norm2`).
            tcl_embedding: give the task its own trainable copy of the `[TCL]` embedding.
        """
        if not task or "." in task:
            raise ValueError(f"Patch name {task!r} must be non-empty and contain no '.'.")
        if task in self.patch_kinds:
            raise ValueError(
                f"A patch named {task!r} already exists; remove it first or choose another name."
            )
        bottleneck_size = bottleneck_size or self.config.patch_bottleneck_size
        activation = activation or self.config.patch_activation
        PeterRecConfig._check_choice("patch_insertion", insertion, INSERTION_MODES)
        PeterRecConfig._check_choice("patch_activation", activation, tuple(PATCH_ACTIVATIONS))
        if not isinstance(bottleneck_size, int) or bottleneck_size <= 0:
            raise ValueError(f"bottleneck_size must be a positive integer, got {bottleneck_size!r}.")
        unknown = set(layer_norms) - {"norm1", "norm2"}
        if unknown:
            raise ValueError(f"layer_norms may name 'norm1' and 'norm2' only, got {sorted(unknown)}.")
        for block in self.blocks:
            patches = build_block_patches(self.config.hidden_size, insertion, bottleneck_size, activation)
            for module in patches.modules():
                self._init_weights(module)
            for name in layer_norms:
                patches[name] = copy.deepcopy(getattr(block, name))
            block.patches[task] = patches.to(device=block.norm1.weight.device, dtype=block.norm1.weight.dtype)
        if tcl_embedding:
            self.tcl_embeddings[task] = nn.Parameter(
                self.embed_items.weight[self.config.tcl_token_id].detach().clone()
            )
        self.patch_kinds[task] = PatchKind(insertion, bottleneck_size, activation)

    def remove_patch(self, task: str) -> None:
        """Removes `task`'s patch from every block."""
        self._check_patch_names([task])
        for block in self.blocks:
            del block.patches[task]
        if task in self.tcl_embeddings:
            del self.tcl_embeddings[task]
        del self.patch_kinds[task]

    def _check_patch_names(self, tasks: Sequence[str]) -> None:
        missing = sorted(set(tasks) - set(self.patch_kinds))
        if missing:
            raise KeyError(f"No patch named {missing}; this backbone has {sorted(self.patch_kinds)}.")

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        patch: str | Sequence[str | None] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """Encodes left-padded item sequences.

        Args:
            input_ids: (batch, length) item ids, left-padded with `[PAD]`.
            attention_mask: (batch, length), 1 on items and 0 on padding; derived from `[PAD]` when omitted.
            patch: the model patch to run with: a task name for the whole batch; one entry per row (a task name,
                or None for no patch) for a mixed-task batch; or None for the patch this configuration builds in
                (`config.patch_insertion`), if any.
            inputs_embeds: precomputed input embeddings instead of `input_ids`.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if inputs_embeds is None:
            check_item_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embed_items(input_ids)
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        routing, order = route_rows(self, patch, inputs_embeds.shape[0], inputs_embeds.device)
        if order is not None:
            inputs_embeds, attention_mask = inputs_embeds[order], attention_mask[order]
            input_ids = input_ids[order] if input_ids is not None else None
        hidden_states = inputs_embeds
        if input_ids is not None and len(self.tcl_embeddings):
            hidden_states = task_tcl_embeddings(self, input_ids, hidden_states, routing)
        padding_mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states, padding_mask, routing)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        if order is not None:
            restore = torch.empty_like(order)
            restore[order] = torch.arange(order.numel(), device=order.device)
            hidden_states = hidden_states[restore]
            all_hidden_states = tuple(h[restore] for h in all_hidden_states) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states)

    def user_representation(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reads one vector per user with the backbone's own `config.readout` (Figure 2; `registry.READOUTS`).

        A learned readout has no weights in the backbone (they belong to each task head): use the task model's
        `readout` for it."""
        if READOUTS[self.config.readout].learned:
            raise ValueError(
                f"The {self.config.readout!r} readout has weights that belong to a task head; read users with the "
                "task model's `readout` (prepare_for_transfer(..., readout=...))."
            )
        return UserReadout(self.config)(hidden_states, attention_mask)

    def check_readout_input(self, input_ids: torch.Tensor, readout: str | None = None) -> None:
        """Readouts that read `[TCL]` (`readout`, default `config.readout`) need it where the tokenizer puts it
        (Figure 2): at the end, and for the non-causal encoder also before the first item. Anything else would
        return logits of the wrong position."""
        readout = readout or self.config.readout
        if not READOUTS[readout].uses_tcl or torch.compiler.is_compiling():
            return
        tcl = self.config.tcl_token_id
        missing = input_ids[:, -1].ne(tcl)
        if not self.config.is_causal:
            first = (input_ids.shape[1] - input_ids.ne(self.config.pad_token_id).sum(1)).clamp(
                max=input_ids.shape[1] - 1
            )
            missing |= input_ids.gather(1, first.unsqueeze(1)).squeeze(1).ne(tcl)
        if bool(missing.any()):
            rows = missing.nonzero().flatten().tolist()[:5]
            raise ValueError(
                f"Rows {rows} of input_ids lack the [TCL] token (id {tcl}) that the {readout!r} "
                "readout reads; encode task inputs with the backbone's ItemTokenizer (tcl_position="
                f"{tcl_position(self.config.is_causal)!r}) or a task collator."
            )


@dataclass
class ItemPredictionOutput(ModelOutput):
    """Output of the pretraining heads. `logits` is None when a loss was computed: the full
    (batch, length, items) logits are never materialised for training (`loss_peterrec`)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class _PeterRecForItemPrediction(ItemPredictionMixin, PeterRecPreTrainedModel):
    """Shared machinery of the two pretraining objectives: a softmax over all items with its own output
    embedding and bias, separate from the input embedding."""

    def __init__(self, config: PeterRecConfig):
        super().__init__(config)
        self.peterrec = PeterRecModel(config)
        self.output_layer = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ItemPredictionOutput | tuple:
        """
        Args:
            labels: target item ids, -100 where there is none (see the subclass for their alignment).
            logits_to_keep: without labels, compute logits for the last `logits_to_keep` positions only (0: all).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.peterrec(
            input_ids,
            attention_mask=attention_mask,
            patch=self.patch_name,
            output_hidden_states=output_hidden_states,
        )
        loss, logits = self._item_prediction(outputs.last_hidden_state, labels, logits_to_keep)
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.hidden_states) if v is not None)
        return ItemPredictionOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class PeterRecForNextItemPrediction(_PeterRecForItemPrediction):
    """Causal pretraining, Eq. (1): predict the next item at every non-pad position (NextItNet).

    `labels` are aligned with `input_ids` (the model shifts them), -100 marks positions without a target.
    """

    shift_labels = True

    def __init__(self, config: PeterRecConfig):
        if not config.is_causal:
            raise ValueError(
                "Next-item prediction needs a causal backbone; set is_causal=True or use "
                "PeterRecForMaskedItemPrediction."
            )
        super().__init__(config)


class PeterRecForMaskedItemPrediction(_PeterRecForItemPrediction):
    """Non-causal pretraining, Eq. (2): predict the masked items (GRec encoder, Section 3.2).

    `labels` hold the original item at masked positions and -100 elsewhere.
    """

    shift_labels = False


class UserTask:
    """The contract of a fine-tuning head on any backbone of the family (Section 3.3), which a server relies on to
    run many tasks on one backbone, and the head terms (`config.head_terms`, `registry.HEAD_TERMS`) it adds up:

    - the deep term: `user_vectors` reads (batch, hidden) user vectors through the backbone (`base_model`) with the
      task's patch and the task's `readout`; `logits_from_user_vectors` turns them into task outputs;
    - the wide term (`wide`, an `ItemBagTerm`): a linear function of the bag of the user's items.

    `task_logits` sums them, from the backbone's hidden states when a caller (a server running many tasks in one
    batch) has already run it."""

    def _add_head_terms(self, config, num_outputs: int) -> None:
        terms = HEAD_TERMS[config.head_terms]
        self.readout = UserReadout(config) if terms.deep else None
        self.wide = ItemBagTerm(config, num_outputs) if terms.wide else None

    def user_vectors(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, hidden) user representations through the task's patch and readout."""
        if self.readout is None:
            raise ValueError(f"head_terms={self.config.head_terms!r} reads no user vector from the backbone.")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        hidden = self.base_model(
            input_ids, attention_mask=attention_mask, patch=self.patch_name
        ).last_hidden_state
        return self.readout(hidden, attention_mask)

    def logits_from_user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """The deep term: the task's outputs for (batch, hidden) user vectors; each head defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define logits_from_user_vectors.")

    def task_logits(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The task's outputs for every class or target item: the deep term, the wide term, or their sum.

        `hidden_states`: the backbone's last hidden states for these rows when the caller has run it; otherwise
        the backbone runs here if the deep term needs it."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        users = self._user_vectors_from(input_ids, attention_mask, hidden_states)
        return self._candidate_scores(users, self._wide_scores(input_ids), None)

    def _user_vectors_from(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden_states: torch.Tensor | None
    ) -> torch.Tensor | None:
        if self.readout is None:
            return None
        if hidden_states is None:
            return self.user_vectors(input_ids, attention_mask)
        return self.readout(hidden_states, attention_mask)

    def _wide_scores(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        return self.wide(input_ids) if self.wide is not None else None

    def _candidate_scores(
        self, users: torch.Tensor | None, wide: torch.Tensor | None, candidates: torch.Tensor | None
    ) -> torch.Tensor:
        """Outputs for the (batch, n) `candidates`, or for every class or target item when None, summed over the
        head's terms: the deep term of the `users` vectors and the `wide` scores of every output (each None when
        the head does not have it)."""
        terms = []
        if users is not None:
            terms.append(self._deep_scores(users, candidates))
        if wide is not None:
            terms.append(wide if candidates is None else wide.gather(1, candidates))
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def _deep_scores(self, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        return self.logits_from_user_vectors(users)


class PeterRecForUserTask(UserTask, PeterRecPreTrainedModel):
    """What the two fine-tuning heads share (Section 3.3): the backbone, the task's readout (`config.readout`, the
    [TCL] readout of Figure 2 by default), the task's head terms and the contract of `UserTask`.

    For the `[TCL]` readouts `input_ids` already carry `[TCL]` (appended for the causal backbone, at both ends for
    the non-causal one; see `ItemTokenizer(tcl_position=...)`).
    """

    def __init__(self, config: PeterRecConfig, num_outputs: int):
        super().__init__(config)
        self.peterrec = PeterRecModel(config)
        self._add_head_terms(config, num_outputs)


class ClassificationHead:
    """User-profile prediction (GenEst, AgeEst, LifeEst; Section 3.3) on any user model of the family (a `UserTask`):
    the task's user vector and a linear layer (and/or the wide term, `config.head_terms`), trained with softmax
    cross-entropy."""

    def _add_classifier(self, config) -> None:
        self.num_labels = config.num_labels
        self.classifier = (
            nn.Linear(config.hidden_size, config.num_labels) if self.readout is not None else None
        )

    def logits_from_user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Class logits of (batch, hidden) user vectors."""
        return self.classifier(users)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits = self.task_logits(input_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.num_labels)
        if not return_dict:
            return tuple(v for v in (loss, logits) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PeterRecForSequenceClassification(ClassificationHead, PeterRecForUserTask):
    """User-profile prediction (GenEst, AgeEst, LifeEst): the task's user vector and a linear layer (and/or the
    wide term, `config.head_terms`), trained with softmax cross-entropy; see `ClassificationHead`. Its `forward`
    also returns the backbone's hidden states on request."""

    def __init__(self, config: PeterRecConfig):
        super().__init__(config, config.num_labels)
        self._add_classifier(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        outputs = None
        if self.readout is not None:
            outputs = self.peterrec(
                input_ids,
                attention_mask=attention_mask,
                patch=self.patch_name,
                output_hidden_states=output_hidden_states,
            )
        hidden_states = outputs.last_hidden_state if outputs is not None else None
        logits = self.task_logits(input_ids, attention_mask, hidden_states)
        all_hidden_states = outputs.hidden_states if outputs is not None else None
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.num_labels)
        if not return_dict:
            return tuple(v for v in (loss, logits, all_hidden_states) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=all_hidden_states)


class ItemRankingHead:
    """Cold-start item recommendation (ColdRec, Section 3.3), on any user model of the family (a `UserTask`): a new
    target-item embedding table scored by dot product with the task's user representation, plus or instead of
    the wide term's item-to-target weights (`config.head_terms`).

    Losses (`config.ranking_loss`): BPR against uniformly sampled negatives (the paper), binary logistic loss with
    sampled negatives (the original code), or a full softmax over all target items.
    """

    def _add_target_embeddings(self, config) -> None:
        if config.num_target_items < 2:
            raise ValueError(
                f"{type(self).__name__} needs config.num_target_items >= 2, got {config.num_target_items}."
            )
        self.target_embeddings = (
            nn.Embedding(config.num_target_items, config.hidden_size) if self.readout is not None else None
        )

    def score(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of `candidates` (batch, n) target items, or of every target item when None."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        users = self._user_vectors_from(input_ids, attention_mask, None)
        return self._candidate_scores(users, self._wide_scores(input_ids), candidates)

    def target_matrix(self) -> torch.Tensor:
        """(num_target_items, hidden) vectors of every target item: the target-item table (a head over items from
        their text encodes them, `item_text.TextTargetsMixin`)."""
        return self.target_embeddings.weight

    def target_vectors(self, candidates: torch.Tensor) -> torch.Tensor:
        """(batch, n, hidden) vectors of (batch, n) target items."""
        return self.target_embeddings(candidates)

    def logits_from_user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every target item for (batch, hidden) user representations."""
        return users @ self.target_matrix().T

    def _candidate_scores(
        self, users: torch.Tensor | None, wide: torch.Tensor | None, candidates: torch.Tensor | None
    ) -> torch.Tensor:
        if candidates is not None:
            self._check_targets(candidates, "candidates")
        return super()._candidate_scores(users, wide, candidates)

    def _deep_scores(self, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        if candidates is None:
            return self.logits_from_user_vectors(users)
        return torch.einsum("bh,bnh->bn", users, self.target_vectors(candidates))

    def _check_targets(self, ids: torch.Tensor, name: str) -> None:
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.num_target_items):
            raise ValueError(
                f"{name} must be target-item indices in [0, {self.config.num_target_items}); got values "
                f"from {int(ids.min())} to {int(ids.max())}."
            )

    def sample_negatives(self, labels: torch.Tensor, num_negatives: int) -> torch.Tensor:
        """Uniform negatives over the target items, never the positive itself."""
        draws = torch.randint(
            0, self.config.num_target_items - 1, (labels.shape[0], num_negatives), device=labels.device
        )
        return draws + (draws >= labels.unsqueeze(1)).long()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        negative_ids: torch.LongTensor | None = None,
        candidate_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """
        Args:
            labels: (batch,) index of the positive target item.
            negative_ids: (batch, n) sampled negatives for the BPR / binary losses; drawn uniformly when omitted.
            candidate_ids: (batch, n) items to score in `logits` (e.g. the positive and 99 sampled negatives of
                the paper's evaluation protocol); every target item when omitted.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        users = self._user_vectors_from(input_ids, attention_mask, None)
        wide = self._wide_scores(input_ids)
        logits = self._candidate_scores(users, wide, candidate_ids)
        loss = None
        if labels is not None:
            self._check_targets(labels, "labels")
            loss = self._ranking_loss(users, wide, labels, negative_ids)
        if not return_dict:
            return tuple(v for v in (loss, logits) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _ranking_loss(
        self,
        users: torch.Tensor | None,
        wide: torch.Tensor | None,
        labels: torch.Tensor,
        negative_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.config.ranking_loss == "full_softmax":
            return F.cross_entropy(self._candidate_scores(users, wide, None).float(), labels)
        if negative_ids is None:
            negative_ids = self.sample_negatives(labels, self.config.num_negatives)
        self._check_targets(negative_ids, "negative_ids")
        positive = self._candidate_scores(users, wide, labels.unsqueeze(1)).float()
        negative = self._candidate_scores(users, wide, negative_ids).float()
        if self.config.ranking_loss == "bpr":
            return -F.logsigmoid(positive - negative).mean()
        return -(F.logsigmoid(positive).mean() + F.logsigmoid(-negative).mean())


class PeterRecForItemRanking(ItemRankingHead, PeterRecForUserTask):
    """Cold-start item recommendation (ColdRec, Section 3.3) from the task's readout of the dilated-conv backbone
    (`config.readout`, the [TCL] readout of Figure 2 by default); see `ItemRankingHead`."""

    def __init__(self, config: PeterRecConfig):
        super().__init__(config, config.num_target_items)
        self._add_target_embeddings(config)
        self.post_init()


# ---------------------------------------------------------------------------------------------------------------
# Many tasks in one batch: rows grouped by kind of patch, each row through its own task's patch
# ---------------------------------------------------------------------------------------------------------------


class PatchKind(NamedTuple):
    """What must match for patches of several tasks to run as one group of a mixed batch."""

    insertion: str
    bottleneck_size: int
    activation: str


@dataclass
class PatchGroup:
    """Rows of a batch that run through patches of one kind (same insertion, size and activation), or through none
    (`tasks` empty).

    `rows` is a contiguous slice of the batch (a mixed batch is sorted by group first, in `route_rows` only). With
    several `tasks`, `row_task[i]` says which task's patch row i uses, and the patches are applied to all rows at
    once with per-row weights, so a mixed batch costs a few batched matmuls instead of one pass per task.
    """

    tasks: list[str]
    insertion: str | None
    rows: slice
    row_task: torch.Tensor | None = None


PatchRouting = list[PatchGroup]


def route_rows(
    model: PeterRecModel, patch: str | Sequence[str | None] | None, batch_size: int, device: torch.device
) -> tuple[PatchRouting, torch.Tensor | None]:
    """Groups the rows by kind of patch; returns the groups and the row order that makes them contiguous (None
    when the batch is already in that order). The one place where a mixed batch is sorted."""
    patch = model.patch_name if patch is None else patch
    if patch is None:
        return [PatchGroup([], None, slice(None))], None
    if isinstance(patch, str):
        model._check_patch_names([patch])
        return [PatchGroup([patch], model.patch_kinds[patch].insertion, slice(None))], None
    if len(patch) != batch_size:
        raise ValueError(f"patch names one task per row: got {len(patch)} names for {batch_size} rows.")
    model._check_patch_names([name for name in patch if name is not None])
    row_kinds = [model.patch_kinds[name] if name is not None else None for name in patch]
    kinds = list(dict.fromkeys(row_kinds))
    order = sorted(range(batch_size), key=lambda row: kinds.index(row_kinds[row]))
    groups, start = [], 0
    for kind in kinds:
        rows = [row for row in order if row_kinds[row] == kind]
        tasks = list(dict.fromkeys(patch[row] for row in rows)) if kind else []
        row_task = to_device([tasks.index(patch[row]) for row in rows], device) if len(tasks) > 1 else None
        groups.append(
            PatchGroup(tasks, kind.insertion if kind else None, slice(start, start + len(rows)), row_task)
        )
        start += len(rows)
    permutation = None if order == list(range(batch_size)) else to_device(order, device)
    return groups, permutation


def apply_patches(
    patches: list[ModelPatch], row_task: torch.Tensor | None, hidden_states: torch.Tensor
) -> torch.Tensor:
    """Applies `patches[row_task[i]]` to row i, in batched matmuls (one patch: the plain module)."""
    if row_task is None:
        return patches[0](hidden_states)

    def per_row(weights: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(weights)[row_task]

    down = torch.baddbmm(
        per_row([p.down.bias for p in patches]).unsqueeze(1),
        hidden_states,
        per_row([p.down.weight for p in patches]).transpose(1, 2),
    )
    up = torch.baddbmm(
        per_row([p.up.bias for p in patches]).unsqueeze(1),
        patches[0].act(down),
        per_row([p.up.weight for p in patches]).transpose(1, 2),
    )
    return hidden_states + up


def apply_layer_norms(
    norms: list[nn.LayerNorm], row_task: torch.Tensor | None, hidden_states: torch.Tensor
) -> torch.Tensor:
    """LayerNorm with each row's own affine parameters where tasks own a copy of the shared LayerNorm."""
    if all(norm is norms[0] for norm in norms):
        return norms[0](hidden_states)
    weight = torch.stack([norm.weight for norm in norms])[row_task].unsqueeze(1)
    bias = torch.stack([norm.bias for norm in norms])[row_task].unsqueeze(1)
    normalized = F.layer_norm(hidden_states, hidden_states.shape[-1:], eps=norms[0].eps)
    return normalized * weight + bias


def task_tcl_embeddings(
    model: PeterRecModel, input_ids: torch.Tensor, hidden_states: torch.Tensor, routing: PatchRouting
) -> torch.Tensor:
    """Puts each task's own `[TCL]` embedding, where it has one, at its rows' `[TCL]` positions."""
    pieces = []
    for group in routing:
        hidden = hidden_states[group.rows]
        if any(task in model.tcl_embeddings for task in group.tasks):
            shared = model.embed_items.weight[model.config.tcl_token_id]
            vectors = torch.stack(
                [model.tcl_embeddings[t] if t in model.tcl_embeddings else shared for t in group.tasks]
            )
            vectors = vectors[group.row_task] if group.row_task is not None else vectors
            is_tcl = input_ids[group.rows].eq(model.config.tcl_token_id).unsqueeze(-1)
            hidden = torch.where(is_tcl, vectors.unsqueeze(1).to(hidden.dtype), hidden)
        pieces.append(hidden)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def to_device(indices: list[int], device: torch.device) -> torch.Tensor:
    """An index tensor on `device` without waiting for the work already queued there (pinned, asynchronous)."""
    tensor = torch.tensor(indices)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


__all__ = [
    "DilatedConv1d",
    "ModelPatch",
    "DilatedResidualBlock",
    "AttentionPooler",
    "UserReadout",
    "ItemBagTerm",
    "PeterRecPreTrainedModel",
    "PeterRecModel",
    "PeterRecForNextItemPrediction",
    "PeterRecForMaskedItemPrediction",
    "PatchedTaskModel",
    "SlotPatches",
    "UserTask",
    "PeterRecForUserTask",
    "PeterRecForSequenceClassification",
    "PeterRecForItemRanking",
    "ClassificationHead",
    "ItemRankingHead",
    "ItemPredictionOutput",
]
