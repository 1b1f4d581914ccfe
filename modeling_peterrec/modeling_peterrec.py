"""PeterRec: a dilated-convolution user model pretrained on item sequences and transferred with model patches.

Yuan et al., "Parameter-Efficient Transfer from Sequential Behaviors for User Modeling and Recommendation"
(SIGIR 2020). The file reads like the paper: the dilated convolution and the residual block (Section 3.2,
Figure 3(a)), the model patch (Figure 3(f)) and its insertions (Figure 3(b)-(e)), then the backbone, the two
pretraining heads (Eq. 1 causal next-item, Eq. 2 masked-item) and the two fine-tuning heads (Section 3.3).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, ModelOutput, SequenceClassifierOutput

from .configuration_peterrec import INSERTION_MODES, PeterRecConfig
from .loss_peterrec import linear_cross_entropy, sampled_softmax_loss

PATCH_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
}


@dataclass
class PatchGroup:
    """Rows of a batch that run through patches of one kind (same insertion, size and activation).

    `rows` is a contiguous slice of the batch (a mixed batch is sorted by group first). With several `tasks`,
    `row_task[i]` says which task's patch row i uses, and the patches are applied to all rows at once with
    per-row weights, so a mixed batch costs a few batched matmuls instead of one pass per task.
    """

    tasks: list[str]
    insertion: str | None
    rows: slice
    row_task: torch.Tensor | None = None


PatchRouting = list[PatchGroup]


class PatchKind(NamedTuple):
    """What must match for patches of several tasks to run as one group of a mixed batch."""

    insertion: str
    bottleneck_size: int
    activation: str


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
        hidden_states = F.pad(hidden_states.transpose(1, 2), self.padding)
        return self.conv(hidden_states).transpose(1, 2)


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


def to_device(indices: list[int], device: torch.device) -> torch.Tensor:
    """An index tensor on `device` without waiting for the work already queued there (pinned, asynchronous)."""
    tensor = torch.tensor(indices)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def build_block_patches(
    hidden_size: int, insertion: str, bottleneck_size: int, activation: str
) -> nn.ModuleDict:
    """The patches of one residual block for one task: on the second conv only for insertion (b), on both convs
    for (c), (d) and (e) (Figure 3)."""
    slots = ("conv2",) if insertion == "serial_one" else ("conv1", "conv2")
    return nn.ModuleDict({slot: ModelPatch(hidden_size, bottleneck_size, activation) for slot in slots})


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
        for slot in ("conv1", "conv2"):
            layer_input = layer_input * padding_mask
            conv_output = getattr(self, slot)(layer_input)
            layer_input = self._normalize_and_patch(slot, layer_input, conv_output, routing)
        return hidden_states + layer_input

    def _normalize_and_patch(
        self, slot: str, layer_input: torch.Tensor, conv_output: torch.Tensor, routing: PatchRouting
    ) -> torch.Tensor:
        norm_name = "norm1" if slot == "conv1" else "norm2"
        shared_norm = getattr(self, norm_name)
        if len(routing) == 0:
            return torch.relu(shared_norm(conv_output))
        outputs = []
        for group in routing:
            x, h = layer_input[group.rows], conv_output[group.rows]
            if len(group.tasks) == 0:
                outputs.append(torch.relu(shared_norm(h)))
                continue
            patches = [self.patches[task] for task in group.tasks]
            norms = [p[norm_name] if norm_name in p else shared_norm for p in patches]
            has_patch = slot in patches[0]
            if has_patch and group.insertion in ("serial_one", "serial_two"):
                # serial, Figure 3(b)/(c): on the conv's output, before its LayerNorm
                h = apply_patches([p[slot] for p in patches], group.row_task, h)
            elif has_patch and group.insertion == "parallel_before_ln":
                # parallel, Figure 3(d): beside the conv, added before its LayerNorm
                h = h + apply_patches([p[slot] for p in patches], group.row_task, x)
            activated = torch.relu(apply_layer_norms(norms, group.row_task, h))
            if has_patch and group.insertion == "parallel_after_act":
                # parallel, Figure 3(e): added after the activation
                activated = activated + apply_patches([p[slot] for p in patches], group.row_task, x)
            outputs.append(activated)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class PeterRecPreTrainedModel(PreTrainedModel):
    """Base class: configuration, weight initialisation (truncated normal, Section 4.1) and loading."""

    config_class = PeterRecConfig
    config: PeterRecConfig
    base_model_prefix = "peterrec"
    main_input_name = "input_ids"
    # forward takes no **kwargs; Trainer must not rescale the loss by the number of processes.
    accepts_loss_kwargs = False
    _no_split_modules = ["DilatedResidualBlock"]

    @property
    def patch_name(self) -> str | list:
        """The patch a task model runs its backbone with: the one its configuration names, or none."""
        return self.config.patch_task if self.config.patch_insertion else []

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            if getattr(module, "zero_init", False):
                init.zeros_(module.weight)
            else:
                init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class PeterRecModel(PeterRecPreTrainedModel):
    """The pretrained backbone: item embedding and a stack of dilated residual blocks (Figure 3(a)).

    Causal (NextItNet, `config.is_causal=True`) or non-causal (GRec encoder). Model patches are added by task name
    with [`~PeterRecModel.add_patch`]; the active patch(es) are chosen per call or with `set_active_patch`.
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
        self.active_patch: str | None = None
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
        """Inserts a new model patch for `task` into every residual block (Figure 3(b)-(e)) and activates it.

        Args:
            task: name of the patch; one backbone holds many.
            insertion: `"serial_one"`, `"serial_two"`, `"parallel_before_ln"` or `"parallel_after_act"`.
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
        self.active_patch = task

    def remove_patch(self, task: str) -> None:
        """Removes `task`'s patch from every block."""
        self._check_patch_names([task])
        for block in self.blocks:
            del block.patches[task]
        if task in self.tcl_embeddings:
            del self.tcl_embeddings[task]
        del self.patch_kinds[task]
        if self.active_patch == task:
            self.active_patch = None

    def set_active_patch(self, task: str | None) -> None:
        """Chooses the patch used when `forward` is called without `patch` (None: the plain backbone)."""
        if task is not None:
            self._check_patch_names([task])
        self.active_patch = task

    def _check_patch_names(self, tasks: Sequence[str]) -> None:
        missing = sorted(set(tasks) - set(self.patch_kinds))
        if missing:
            raise KeyError(f"No patch named {missing}; this backbone has {sorted(self.patch_kinds)}.")

    def _routing(
        self, patch: str | Sequence[str | None] | None, batch_size: int, device: torch.device
    ) -> tuple[PatchRouting, torch.Tensor | None]:
        """Groups the rows by kind of patch; returns the groups and the row order that makes them contiguous
        (None when the batch is already in that order)."""
        if patch is None:
            patch = self.active_patch
        if patch is None or len(patch) == 0:
            return [], None
        if isinstance(patch, str):
            self._check_patch_names([patch])
            return [PatchGroup([patch], self.patch_kinds[patch].insertion, slice(None))], None
        if len(patch) != batch_size:
            raise ValueError(f"patch names one task per row: got {len(patch)} names for {batch_size} rows.")
        names = [name or None for name in patch]
        self._check_patch_names([name for name in names if name])
        row_kinds = [self.patch_kinds[name] if name else None for name in names]
        kinds = list(dict.fromkeys(row_kinds))
        order = sorted(range(batch_size), key=lambda row: kinds.index(row_kinds[row]))
        groups, start = [], 0
        for kind in kinds:
            rows = [row for row in order if row_kinds[row] == kind]
            tasks = list(dict.fromkeys(names[row] for row in rows)) if kind else []
            row_task = (
                to_device([tasks.index(names[row]) for row in rows], device) if len(tasks) > 1 else None
            )
            groups.append(
                PatchGroup(tasks, kind.insertion if kind else None, slice(start, start + len(rows)), row_task)
            )
            start += len(rows)
        permutation = None if order == list(range(batch_size)) else to_device(order, device)
        return groups, permutation

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        patch: str | Sequence[str] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """Encodes left-padded item sequences.

        Args:
            input_ids: (batch, length) item ids, left-padded with `[PAD]`.
            attention_mask: (batch, length), 1 on items and 0 on padding; derived from `[PAD]` when omitted.
            patch: the model patch to use: a task name for the whole batch, one name per row (a mixed-task batch),
                None for the active patch (see `set_active_patch`), or an empty list for none.
            inputs_embeds: precomputed input embeddings instead of `input_ids`.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if inputs_embeds is None:
            self._check_item_ids(input_ids)
            inputs_embeds = self.embed_items(input_ids)
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        routing, order = self._routing(patch, inputs_embeds.shape[0], inputs_embeds.device)
        if order is not None:
            inputs_embeds, attention_mask = inputs_embeds[order], attention_mask[order]
            input_ids = input_ids[order] if input_ids is not None else None
        hidden_states = inputs_embeds
        if input_ids is not None and len(self.tcl_embeddings):
            hidden_states = self._task_tcl_embeddings(input_ids, hidden_states, routing)
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

    def _task_tcl_embeddings(
        self, input_ids: torch.Tensor, hidden_states: torch.Tensor, routing: PatchRouting
    ) -> torch.Tensor:
        """Puts each task's own `[TCL]` embedding, where it has one, at its rows' `[TCL]` positions."""
        pieces = []
        for group in routing:
            hidden = hidden_states[group.rows]
            if any(task in self.tcl_embeddings for task in group.tasks):
                shared = self.embed_items.weight[self.config.tcl_token_id]
                vectors = torch.stack(
                    [self.tcl_embeddings[t] if t in self.tcl_embeddings else shared for t in group.tasks]
                )
                vectors = vectors[group.row_task] if group.row_task is not None else vectors
                is_tcl = input_ids[group.rows].eq(self.config.tcl_token_id).unsqueeze(-1)
                hidden = torch.where(is_tcl, vectors.unsqueeze(1).to(hidden.dtype), hidden)
            pieces.append(hidden)
        if len(pieces) == 0:
            return hidden_states
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _check_item_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.numel() == 0 or input_ids.shape[-1] == 0:
            raise ValueError("input_ids is empty; every sequence needs at least one item.")
        if torch.compiler.is_compiling():
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(
                f"input_ids holds ids from {low} to {high}, outside the vocabulary [0, "
                f"{self.config.vocab_size}); encode items with the backbone's ItemTokenizer."
            )

    def user_representation(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reads one vector per user (Figure 2).

        Causal encoder with `readout="tcl"`: the last position, where `[TCL]` was appended (Figure 2(a)).
        Non-causal encoder: the sum of the `[TCL]` at both ends (Figure 2(c)). `readout="sum"`: the sum over all
        non-pad positions (Figure 2(d)). Sequences are left-padded, so the last position is always real.
        """
        if self.config.readout == "sum":
            return (hidden_states * attention_mask.unsqueeze(-1).to(hidden_states.dtype)).sum(1)
        last = hidden_states[:, -1]
        if self.config.is_causal:
            return last
        first_index = attention_mask.shape[1] - attention_mask.long().sum(1)
        return last + hidden_states[torch.arange(hidden_states.shape[0], device=last.device), first_index]


@dataclass
class ItemPredictionOutput(ModelOutput):
    """Output of the pretraining heads. `logits` is None when a loss was computed: the full
    (batch, length, items) logits are never materialised for training (Section 6 of the project spec)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class _PeterRecForItemPrediction(PeterRecPreTrainedModel):
    """Shared machinery of the two pretraining objectives: a softmax over all items with its own output
    embedding and bias, separate from the input embedding."""

    def __init__(self, config: PeterRecConfig):
        super().__init__(config)
        self.peterrec = PeterRecModel(config)
        self.output_layer = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.output_layer

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.output_layer = value

    def _item_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over all items (or the sampled softmax); rows labelled -100 (padding) do not count."""
        if self.config.pretraining_loss == "sampled_softmax" and self.training:
            return sampled_softmax_loss(
                hidden, self.output_layer.weight, self.output_layer.bias, labels, self.config.num_sampled
            )
        return linear_cross_entropy(
            hidden,
            self.output_layer.weight,
            self.output_layer.bias,
            labels,
            chunk_size=self.config.loss_chunk_size,
        )

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
        hidden = outputs.last_hidden_state
        loss = logits = None
        if labels is not None:
            if self.shift_labels:
                hidden, labels = hidden[:, :-1], labels[:, 1:]
            loss = self._item_loss(hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1))
        else:
            logits = self.output_layer(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
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


class PeterRecForSequenceClassification(PeterRecPreTrainedModel):
    """User-profile prediction (GenEst, AgeEst, LifeEst): the [TCL] readout of Figure 2 and a linear layer,
    trained with softmax cross-entropy. `input_ids` already carry `[TCL]` (appended for the causal backbone,
    at both ends for the non-causal one; see `ItemTokenizer(add_tcl=...)`)."""

    def __init__(self, config: PeterRecConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.peterrec = PeterRecModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def logits_from_user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Class logits of (batch, hidden) user representations."""
        return self.classifier(users)

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
        outputs = self.peterrec(
            input_ids,
            attention_mask=attention_mask,
            patch=self.patch_name,
            output_hidden_states=output_hidden_states,
        )
        logits = self.logits_from_user_vectors(
            self.peterrec.user_representation(outputs.last_hidden_state, attention_mask)
        )
        loss = None
        if labels is not None:
            if labels.min() < 0 or labels.max() >= self.num_labels:
                raise ValueError(
                    f"labels must lie in [0, {self.num_labels}); got values from {int(labels.min())} "
                    f"to {int(labels.max())}. Map them with config.label2id."
                )
            loss = F.cross_entropy(logits.float(), labels)
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.hidden_states) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class PeterRecForItemRanking(PeterRecPreTrainedModel):
    """Cold-start item recommendation (ColdRec, Section 3.3): a new target-item embedding table scored by dot
    product with the [TCL] user representation.

    Losses (`config.ranking_loss`): BPR against uniformly sampled negatives (the paper), binary logistic loss with
    sampled negatives (the original code), or a full softmax over all target items.
    """

    def __init__(self, config: PeterRecConfig):
        super().__init__(config)
        if config.num_target_items < 2:
            raise ValueError(
                f"PeterRecForItemRanking needs config.num_target_items >= 2, got {config.num_target_items}."
            )
        self.peterrec = PeterRecModel(config)
        self.target_embeddings = nn.Embedding(config.num_target_items, config.hidden_size)
        self.post_init()

    def user_vectors(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, hidden) user representations through the [TCL] readout."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        hidden = self.peterrec(
            input_ids, attention_mask=attention_mask, patch=self.patch_name
        ).last_hidden_state
        return self.peterrec.user_representation(hidden, attention_mask)

    def score(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of `candidates` (batch, n) target items, or of every target item when None."""
        return self._scores(self.user_vectors(input_ids, attention_mask), candidates)

    def logits_from_user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every target item for (batch, hidden) user representations."""
        return users @ self.target_embeddings.weight.T

    def _scores(self, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        if candidates is None:
            return self.logits_from_user_vectors(users)
        self._check_targets(candidates, "candidates")
        return torch.einsum("bh,bnh->bn", users, self.target_embeddings(candidates))

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
        users = self.user_vectors(input_ids, attention_mask)
        logits = self._scores(users, candidate_ids)
        loss = None
        if labels is not None:
            self._check_targets(labels, "labels")
            loss = self._ranking_loss(users, labels, negative_ids)
        if not return_dict:
            return tuple(v for v in (loss, logits) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _ranking_loss(
        self, users: torch.Tensor, labels: torch.Tensor, negative_ids: torch.Tensor | None
    ) -> torch.Tensor:
        if self.config.ranking_loss == "full_softmax":
            return F.cross_entropy(self.logits_from_user_vectors(users).float(), labels)
        if negative_ids is None:
            negative_ids = self.sample_negatives(labels, self.config.num_negatives)
        self._check_targets(negative_ids, "negative_ids")
        positive = (users * self.target_embeddings(labels)).sum(-1, keepdim=True).float()
        negative = self._scores(users, negative_ids).float()
        if self.config.ranking_loss == "bpr":
            return -F.logsigmoid(positive - negative).mean()
        return -(F.logsigmoid(positive).mean() + F.logsigmoid(-negative).mean())


__all__ = [
    "DilatedConv1d",
    "ModelPatch",
    "DilatedResidualBlock",
    "PeterRecPreTrainedModel",
    "PeterRecModel",
    "PeterRecForNextItemPrediction",
    "PeterRecForMaskedItemPrediction",
    "PeterRecForSequenceClassification",
    "PeterRecForItemRanking",
    "ItemPredictionOutput",
]
