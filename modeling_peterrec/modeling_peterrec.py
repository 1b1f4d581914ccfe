"""PeterRec: a dilated-convolution user model pretrained on item sequences and transferred with model patches.

Yuan et al., "Parameter-Efficient Transfer from Sequential Behaviors for User Modeling and Recommendation"
(SIGIR 2020). The file reads like the paper: the dilated convolution (Section 3.2), the model patch (Figure 3(f))
and its insertions (Figure 3(b)-(e)), the residual block (Figure 3(a)), the readouts (Figure 2, plus the mean and
attention pooling that see the whole history), then the backbone, the two pretraining heads (Eq. 1 causal
next-item, Eq. 2 masked-item) and the two fine-tuning heads (Section 3.3), each with its task's readout.
The last section serves many tasks in one batch: it groups rows by kind of patch and applies each row's own patch.
Every backbone of the family holds its tasks' patches, of any type of `registry.PATCH_TYPES` (the adapters of
`adapters.py` beside the model patch), through `TaskPatches`; the other model types (CmnRec, SASRec) take from here
that and their task heads (`UserTask`, `ClassificationHead`, `ItemRankingHead`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, ModelOutput, SequenceClassifierOutput

from .adapters import (
    Bottleneck,
    PatchKind,
    PlaceAdapter,
    PlaceShape,
    adapt,
    add_side_outputs,
    build_patch,
    insert_prompts,
    resolve_patch_kind,
)
from .configuration_peterrec import PeterRecConfig
from .modeling_utils import (
    PRETRAINING_HEAD_KEYS,
    FullAutoMapMixin,
    ItemPredictionMixin,
    check_item_ids,
    classification_loss,
    dilated_taps,
    distinct_rows,
    init_truncated_normal,
)
from .registry import DEFAULT_PATCH_TYPE, HEAD_TERMS, INSERTIONS, READOUTS, require_implemented, tcl_position

AUTO_CLASSES = {
    "AutoModel": "PeterRecModel",
    "AutoModelForCausalLM": "PeterRecForNextItemPrediction",
    "AutoModelForMaskedLM": "PeterRecForMaskedItemPrediction",
    "AutoModelForSequenceClassification": "PeterRecForSequenceClassification",
}
"""The Auto class that loads each model of this file (`FullAutoMapMixin` names them all in a saved `auto_map`);
`PeterRecForItemRanking` has no matching Auto class."""


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

    @property
    def taps(self) -> tuple[int, int, tuple[int, int]]:
        """Kernel size, dilation and padding: how `modeling_utils.dilated_taps` lays out this convolution's input."""
        return self.conv.kernel_size[0], self.conv.dilation[0], self.padding

    def _forward_channels_last(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same convolution as one matmul in the (batch, length, channels) layout: each position's k dilated
        taps side by side (im2col) against the kernel laid out as (out, k * in). On CPU this skips the transposes
        and oneDNN's layout copies around `nn.Conv1d`, 15% of the backbone's time at hidden size 64
        (docs/performance.md, CPU section); on GPU `nn.Conv1d` is kept, as measured there."""
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        return F.linear(dilated_taps(hidden_states, *self.taps), weight, self.conv.bias)


class ModelPatch(Bottleneck):
    """Model patch, Figure 3(f): a bottleneck with a shortcut, `x + up(act(down(x)))`.

    The projections are 1x1 convolutions, i.e. linear layers over channels, from k to d (k = 8d in the paper)
    and back. The up-projection starts at zero so that a serially inserted patch is the identity at the start
    of fine-tuning. The insertions of Figure 3 (`PLACEMENTS`) decide what it reads and where its output goes.
    """

    def __init__(self, hidden_size: int, bottleneck_size: int, activation: str):
        super().__init__(hidden_size, bottleneck_size, hidden_size, activation)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.delta(hidden_states)


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


class DilatedResidualBlock(nn.Module):
    """Residual block of Figure 3(a): conv(d) -> LayerNorm -> ReLU -> conv(2d) -> LayerNorm -> ReLU, plus the input.

    `patches` holds each task's model patches or adapters on `conv1`/`conv2` (a `ModuleDict` keyed by task name,
    like PEFT's tuners), so one frozen block serves many tasks. A task's patch may also carry its own copy of a
    LayerNorm (`norm1`/`norm2`), which then replaces the shared one for that task's rows.
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
        if group.kind.insertion is None:
            # An adapter (one task per group) on the conv's output, before its LayerNorm: where Houlsby's and
            # Pfeiffer's go after a sub-layer, and where LoRA's update of the kernel adds up.
            return torch.relu(normalize(adapt(patches[0], slot, layer_input, conv_output)))

        def patch(hidden: torch.Tensor) -> torch.Tensor:
            return apply_patches([p[slot] for p in patches], group.row_task, hidden)

        placement = PLACEMENTS[INSERTIONS[group.kind.insertion].placement]
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
        if self.patch_config is not None and self.patch_config.task in self.base_model.patched_tasks:
            return self.patch_config.task
        return None


class TaskPatches:
    """Each task's patch on a frozen backbone, of any type of `registry.PATCH_TYPES` (PeterRec's model patch, the
    adapters of `adapters`), so several tasks attach to one backbone under their names, like PEFT's tuners.

    A backbone declares `patch_holders()` (one `ModuleDict` per block, holding `{task: {place: adapter}}` under
    `.patches.` names), `patch_places(block)` (the shape of each place of that block) and `layer_norms_of(block)`
    (the LayerNorms a task may own copies of; `block=None`: those outside the blocks); it keeps the task-wide parts
    of each patch (soft prompt, side network, shared PHM factors, LayerNorm copies outside the blocks) in its own
    `patches` `ModuleDict`, and calls `_init_patches()` in its `__init__`. `patch_kinds` records each task's
    `adapters.PatchKind`.
    """

    patches: nn.ModuleDict

    def _init_patches(self) -> None:
        self.patch_kinds: dict[str, PatchKind] = {}

    @property
    def patched_tasks(self) -> set[str]:
        """Every task with a patch in this backbone: in its user encoder (`patch_kinds`), or in an item encoder
        that the backbone has (SASRec over item texts)."""
        return set(self.patch_kinds)

    def patch_holders(self) -> list[nn.ModuleDict]:
        raise NotImplementedError(f"{type(self).__name__} must define patch_holders.")

    def patch_places(self, block: int) -> dict[str, PlaceShape]:
        raise NotImplementedError(f"{type(self).__name__} must define patch_places.")

    def layer_norms_of(self, block: int | None) -> dict[str, nn.LayerNorm]:
        """The LayerNorms of `block` (None: outside the blocks) that a task may train as its own copies."""
        return {}

    def _place_adapter(self, kind: PatchKind) -> PlaceAdapter | None:
        """What makes `kind`'s adapter at a place, when the backbone places it itself (None: `adapters.PLACE_ADAPTERS`)."""
        return None

    def add_patch(
        self,
        task: str,
        insertion: str | None = None,
        bottleneck_size: int | None = None,
        activation: str | None = None,
        layer_norms: Sequence[str] = (),
        tcl_embedding: bool = False,
        *,
        patch_type: str = DEFAULT_PATCH_TYPE,
        places: Sequence[str] | None = None,
        blocks: str | None = None,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        phm_dim: int | None = None,
        phm_rank: int | None = None,
        prompt_length: int | None = None,
    ) -> PatchKind:
        """Adds `task`'s patch of `patch_type` (`registry.PATCH_TYPES`; PeterRec's model patch by default) and returns
        its resolved kind.

        Args:
            task: name of the patch; one backbone holds many.
            insertion: the model patch's place (`registry.INSERTIONS`; default: the model type's).
            bottleneck_size, activation: a bottleneck's width and nonlinearity (default: the configuration's).
            layer_norms: LayerNorms (`layer_norms_of`: `norm1`/`norm2` of PeterRec's blocks; `attention_norm`,
                `feed_forward_norm`, `final_norm` of SASRec; `["all"]`: every one) this task trains as its own copies, in every block,
                so the shared backbone stays untouched (the original PeterRec code retrained `norm2`).
            tcl_embedding: give the task its own trainable copy of the `[TCL]` embedding (PeterRec only).
            patch_type, places, blocks, lora_rank, lora_alpha, phm_dim, phm_rank, prompt_length: the type and its
                settings (`adapters.resolve_patch_kind`; None: the default).

        Raises:
            ValueError: the name is taken or malformed, or the type, a place or a setting does not fit.
        """
        if not task or "." in task:
            raise ValueError(f"Patch name {task!r} must be non-empty and contain no '.'.")
        if task in self.patch_kinds:
            raise ValueError(
                f"A patch named {task!r} already exists; remove it first or choose another name."
            )
        if tcl_embedding and not hasattr(self, "tcl_embeddings"):
            raise ValueError(
                f"{type(self).__name__} has no [TCL] embedding to train (train_tcl_embedding is PeterRec's)."
            )
        layer_norms = self.tuned_layer_norms(layer_norms)
        kind = resolve_patch_kind(
            self.config,
            patch_type,
            places,
            blocks,
            insertion=insertion,
            bottleneck_size=bottleneck_size,
            activation=activation,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            phm_dim=phm_dim,
            phm_rank=phm_rank,
            prompt_length=prompt_length,
        )
        weight = self.embed_items.weight
        per_block, task_wide = build_patch(
            kind,
            self,
            self.config.hidden_size,
            weight.shape[1],
            self.config.initializer_range,
            self._place_adapter(kind),
        )
        for block, (holder, modules) in enumerate(zip(self.patch_holders(), per_block, strict=True)):
            holder[task] = self._task_modules(modules, self.layer_norms_of(block), layer_norms, weight)
        # Added after the blocks' (CmnRec's one holder is its `patches`): the task-wide parts join its entry.
        wide = self._task_modules(task_wide, self.layer_norms_of(None), layer_norms, weight)
        if task in self.patches:
            self.patches[task].update(wide)
        else:
            self.patches[task] = wide
        if tcl_embedding:
            self.tcl_embeddings[task] = nn.Parameter(
                self.embed_items.weight[self.config.tcl_token_id].detach().clone()
            )
        self.patch_kinds[task] = kind
        return kind

    def tuned_layer_norms(self, names: Sequence[str]) -> list[str]:
        """The LayerNorms `names` asks a task to train (`["all"]`: every one this backbone has), checked against
        `layer_norms_of`."""
        tunable = sorted(
            {
                name
                for block in (None, *range(len(self.patch_holders())))
                for name in self.layer_norms_of(block)
            }
        )
        if list(names) == ["all"]:
            return tunable
        unknown = sorted(set(names) - set(tunable))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no LayerNorms {unknown} to train (train_layer_norms); it may name "
                f"{tunable}, or 'all'."
            )
        return list(names)

    def _task_modules(
        self,
        modules: dict[str, nn.Module],
        norms: dict[str, nn.LayerNorm],
        trained_norms: Sequence[str],
        like: torch.Tensor,
    ) -> nn.ModuleDict:
        """One holder's entry of a task: its new modules in the family's initialisation, and copies of the shared
        LayerNorms it trains, on the backbone's device and dtype."""
        entry = nn.ModuleDict(modules)
        for module in entry.modules():
            self._init_weights(module)
        for name in trained_norms:
            if name in norms:
                entry[name] = copy.deepcopy(norms[name])
        return entry.to(device=like.device, dtype=like.dtype)

    def remove_patch(self, task: str) -> None:
        """Removes `task`'s patch."""
        if task not in self.patch_kinds:
            raise KeyError(f"No patch named {[task]}; this backbone has {sorted(self.patch_kinds)}.")
        for holder in (*self.patch_holders(), self.patches):
            if task in holder:
                del holder[task]
        if task in getattr(self, "tcl_embeddings", {}):
            del self.tcl_embeddings[task]
        del self.patch_kinds[task]


class SlotPatches(TaskPatches):
    """Task patches of a backbone that runs one task's patch per call (CmnRec, SASRec); a server runs a mixed batch
    one task at a time (`serving.MultiTaskPeterRec`)."""

    def task_patches(self, patch: str | None) -> dict[str, nn.Module]:
        """The modules of `patch`'s entry in the backbone's own `patches` (task-wide parts; CmnRec's places too), or
        none without a patch."""
        if self._check_patch(patch) is None or patch not in self.patches:
            return {}
        return dict(self.patches[patch].items())

    def _check_patch(self, patch: str | None) -> str | None:
        """`patch` when it names one of this backbone's tasks (`patched_tasks`, or is None); one task per call."""
        if patch is not None and not isinstance(patch, str):
            raise ValueError(
                f"{type(self).__name__} runs one task's patch per call; pass a task name, not one per row."
            )
        if patch is not None and patch not in self.patched_tasks:
            raise KeyError(f"No patch named {[patch]}; this user model has {sorted(self.patched_tasks)}.")
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


class PeterRecModel(TaskPatches, PeterRecPreTrainedModel):
    """The pretrained backbone: item embedding and a stack of dilated residual blocks (Figure 3(a)).

    Causal (NextItNet, `config.is_causal=True`) or non-causal (GRec encoder). Patches (model patches, Figure 3, or
    any type of `registry.PATCH_TYPES`) are added by task name with [`~TaskPatches.add_patch`] (or built in by
    `config.patch_insertion`) and chosen per call, or per row, with `patch=`.
    """

    def __init__(self, config: PeterRecConfig):
        super().__init__(config)
        self.embed_items = nn.Embedding(config.vocab_size, config.hidden_size)
        dilations = config.dilations
        self.blocks = nn.ModuleList(
            DilatedResidualBlock(config, dilations[i], dilations[i + 1]) for i in range(0, len(dilations), 2)
        )
        self.tcl_embeddings = nn.ParameterDict()
        self.patches = nn.ModuleDict()
        self._init_patches()
        if config.patch_insertion is not None:
            self.add_patch(config.patch_task, config.patch_insertion)
        self.post_init()

    @property
    def patch_insertions(self) -> dict[str, str | None]:
        """Insertion mode of each task's patch (None for the adapter types)."""
        return {task: kind.insertion for task, kind in self.patch_kinds.items()}

    def patch_holders(self) -> list[nn.ModuleDict]:
        """One holder per residual block (`blocks.{i}.patches.<task>.<conv>`)."""
        return [block.patches for block in self.blocks]

    def patch_places(self, block: int) -> dict[str, PlaceShape]:
        """The two dilated convolutions of a block, with their taps (LoRA updates their kernels)."""
        width = self.config.hidden_size
        return {
            slot: PlaceShape(width, width, getattr(self.blocks[block], slot).taps)
            for slot in ("conv1", "conv2")
        }

    def layer_norms_of(self, block: int | None) -> dict[str, nn.LayerNorm]:
        """A block's two LayerNorms (`norm1`, `norm2`); none outside the blocks."""
        if block is None:
            return {}
        return {name: getattr(self.blocks[block], name) for name in ("norm1", "norm2")}

    def _place_adapter(self, kind: PatchKind) -> PlaceAdapter | None:
        """Model patches go in with their insertion's placement (Figure 3(b)-(e), `DilatedResidualBlock`)."""
        if kind.insertion is None:
            return None
        return lambda kind, shape, rule, std: ModelPatch(
            shape.out_features, kind.bottleneck_size, kind.activation
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_items

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_items = value

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
        hidden_states, attention_mask, prompt_length = insert_prompts(
            hidden_states, attention_mask, self._group_modules(routing, "prompt")
        )
        padding_mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        block_outputs = [hidden_states]
        for block in self.blocks:
            hidden_states = block(hidden_states, padding_mask, routing)
            block_outputs.append(hidden_states)
        hidden_states = add_side_outputs(
            hidden_states, block_outputs[1:], self._group_modules(routing, "side")
        )
        # The outputs at soft-prompt positions are dropped: every item is back where the input had it.
        hidden_states = hidden_states[:, prompt_length:]
        all_hidden_states = (
            tuple(h[:, prompt_length:] for h in block_outputs[:-1]) + (hidden_states,)
            if output_hidden_states
            else None
        )
        if order is not None:
            restore = torch.empty_like(order)
            restore[order] = torch.arange(order.numel(), device=order.device)
            hidden_states = hidden_states[restore]
            all_hidden_states = tuple(h[restore] for h in all_hidden_states) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states)

    def _group_modules(self, routing: PatchRouting, name: str) -> list[tuple[slice, nn.Module | None]]:
        """Each group's task-wide module `name` (`prompt`, `side`), where its one task has one."""
        modules = []
        for group in routing:
            entry = self.patches[group.tasks[0]] if len(group.tasks) == 1 else {}
            modules.append((group.rows, entry[name] if name in entry else None))
        return modules

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
            logits_to_keep: without labels, compute logits for the last `logits_to_keep` positions only (0: all);
                the backbone then runs on the positions they depend on alone (`last_positions`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last_logits_only = labels is None and logits_to_keep > 0 and not output_hidden_states
        if last_logits_only and not torch.compiler.is_compiling():
            input_ids, attention_mask = self.last_positions(input_ids, attention_mask, logits_to_keep)
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

    def last_positions(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, logits_to_keep: int
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """The last positions of `input_ids` (and its mask) that the outputs at the last `logits_to_keep` positions
        depend on (Section 3.2): one output reads `receptive_field` positions up to itself (causal) or `reach` on
        its left (non-causal, whose right side here is the input's end). Pad positions act as the convolutions'
        zero padding and every other operation is position-wise, so those outputs are the same, for a fraction of
        the work on long histories (ranking the next item, `PretrainingTrainer`, `recommend`)."""
        field = self.config.receptive_field if self.config.is_causal else self.config.reach
        window = field + logits_to_keep - 1
        if input_ids.shape[1] <= window:
            return input_ids, attention_mask
        return input_ids[:, -window:], None if attention_mask is None else attention_mask[:, -window:]


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

    def readout_positions(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """(batch, n) indices, in order, of the only positions a row's user vector depends on, when n is less than
        the input's length: the backbone then runs on those alone. None (every position) unless a backbone
        defines it."""
        return None

    def user_vectors(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, hidden) user representations through the task's patch and readout; the backbone reads only
        the positions they depend on (`readout_positions`), and each distinct history once (`distinct_rows`)."""
        if self.readout is None:
            raise ValueError(f"head_terms={self.config.head_terms!r} reads no user vector from the backbone.")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        # An exported or compiled graph keeps every length; fewer positions would add a guard on it.
        positions = None if torch.compiler.is_compiling() else self.readout_positions(attention_mask)
        if positions is not None:
            input_ids, attention_mask = input_ids.gather(1, positions), attention_mask.gather(1, positions)
        input_ids, attention_mask, inverse = distinct_rows(input_ids, attention_mask)
        hidden = self.base_model(
            input_ids, attention_mask=attention_mask, patch=self.patch_name
        ).last_hidden_state
        users = self.readout(hidden, attention_mask)
        return users if inverse is None else users[inverse]

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

    def readout_positions(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The `[TCL]` readouts read one receptive field (Section 3.2) and nothing beyond it, so the backbone runs on
        that alone: the same user vectors, for a fraction of the work on long histories. Pad positions act as the
        convolutions' zero padding, and every other operation is position-wise, so a position's output depends on
        its receptive field only, and so does every value it is computed from.

        - Causal (Figure 2(a)): the last `receptive_field` positions, the last one `[TCL]`.
        - Non-causal (Figure 2(c)): each `[TCL]` sees `reach` positions on its side of the history, itself
          included (`(receptive_field + 1) // 2` for an odd kernel); the first `reach` positions from the first
          `[TCL]` on and the last `reach`, side by side (a history of at most `2 * reach` positions stays whole).

        A soft prompt still goes right before the first position given, outside the window of the last `[TCL]`.
        None for the pooling readouts, which read every position."""
        if self.readout is None or self.readout.name != "tcl":
            return None
        batch, length = attention_mask.shape
        if self.config.is_causal:
            if length <= self.config.receptive_field:
                return None
            window = torch.arange(length - self.config.receptive_field, length, device=attention_mask.device)
            return window.expand(batch, -1)
        reach = self.config.reach
        if length <= 2 * reach:
            return None
        offsets = torch.arange(reach, device=attention_mask.device)
        first = length - attention_mask.long().sum(1, keepdim=True)
        start = first.clamp(max=length - 2 * reach)
        return torch.cat([start + offsets, (length - reach + offsets).expand(batch, -1)], dim=1)


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
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        all_hidden_states = None
        if output_hidden_states and self.readout is not None:
            # Every position's hidden states were asked for, so the backbone runs on the whole input.
            outputs = self.peterrec(
                input_ids, attention_mask=attention_mask, patch=self.patch_name, output_hidden_states=True
            )
            logits = self.task_logits(input_ids, attention_mask, outputs.last_hidden_state)
            all_hidden_states = outputs.hidden_states
        else:
            logits = self.task_logits(input_ids, attention_mask)
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


@dataclass
class PatchGroup:
    """Rows of a batch that run through patches of one kind (`adapters.PatchKind`: same type, insertion, sizes), or
    through none (`tasks` empty, `kind` None).

    `rows` is a contiguous slice of the batch (a mixed batch is sorted by group first, in `route_rows` only). Model
    patches (`PatchType.batched_rows`) of several `tasks` share a group: `row_task[i]` says which task's patch row i
    uses, and the patches are applied to all rows at once with per-row weights, so a mixed batch costs a few batched
    matmuls instead of one pass per task. The other types run one group per task.
    """

    tasks: list[str]
    kind: PatchKind | None
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
        return [PatchGroup([patch], model.patch_kinds[patch], slice(None))], None
    if len(patch) != batch_size:
        raise ValueError(f"patch names one task per row: got {len(patch)} names for {batch_size} rows.")
    model._check_patch_names([name for name in patch if name is not None])

    def group_of(name: str | None) -> tuple[PatchKind, str | None] | None:
        if name is None:
            return None
        kind = model.patch_kinds[name]
        return kind, None if kind.record.batched_rows else name

    row_groups = [group_of(name) for name in patch]
    keys = list(dict.fromkeys(row_groups))
    order = sorted(range(batch_size), key=lambda row: keys.index(row_groups[row]))
    groups, start = [], 0
    for key in keys:
        rows = [row for row in order if row_groups[row] == key]
        tasks = list(dict.fromkeys(patch[row] for row in rows)) if key else []
        row_task = to_device([tasks.index(patch[row]) for row in rows], device) if len(tasks) > 1 else None
        groups.append(PatchGroup(tasks, key[0] if key else None, slice(start, start + len(rows)), row_task))
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
    "TaskPatches",
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
