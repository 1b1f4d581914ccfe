"""What the family's modeling files (`modeling_peterrec.py`, `modeling_cmnrec.py`) share: saving with an `auto_map`
of every Auto class, the item-id check, the truncated normal initialisation, the pretraining heads' softmax over
all items (PeterRec Eq. 1-2, CmnRec Eq. 6), the classification heads' loss (PeterRec Section 3.3) and the distinct
histories of a batch (one backbone pass per ColdRec user, however many target rows they have).

Saved folders carry this file next to the modeling files for `trust_remote_code` loading (transformers copies
every relative import), so it imports only torch, transformers and other files copied the same way.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init

from .loss_peterrec import linear_cross_entropy, sampled_softmax_loss

PRETRAINING_HEAD_KEYS = [r"^output_layer\."]
"""A backbone folder holds its pretraining head's output layer: the backbone and the task heads load from it and
leave that layer out on purpose, which is no cause for a load report (`_keys_to_ignore_on_load_unexpected`)."""


class FullAutoMapMixin:
    """`save_pretrained` with an `auto_map` that names every Auto class of the model file's `AUTO_CLASSES`, so that
    any of them loads the folder with `trust_remote_code=True` (not only the saved class's own). Goes before
    `PreTrainedModel` in the bases."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:
            module = type(self).__module__
            auto_classes = sys.modules[module].AUTO_CLASSES
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                **{auto: f"{module.split('.')[-1]}.{name}" for auto, name in auto_classes.items()},
            }
        return super().save_pretrained(save_directory, *args, **kwargs)


def init_truncated_normal(module: nn.Module, std: float) -> None:
    """A weight drawn from a normal truncated at +-2 std (zeros where the module is marked `zero_init`), a zero
    bias: the initialisation of the family's linear, convolution and embedding layers (PeterRec Section 4.1)."""
    if getattr(module, "zero_init", False):
        init.zeros_(module.weight)
    else:
        init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    if getattr(module, "bias", None) is not None:
        init.zeros_(module.bias)


def dilated_taps(
    hidden_states: torch.Tensor, kernel_size: int, dilation: int, padding: tuple[int, int]
) -> torch.Tensor:
    """The input of a dilated convolution laid out for one matmul (im2col): for each position of a (batch, length,
    channels) input, its `kernel_size` taps `dilation` apart side by side, (batch, length, kernel_size * channels),
    against which a kernel laid out as (out, kernel_size * in) is a linear layer. `padding` is the zeros added
    (left, right) along the length."""
    length = hidden_states.shape[1]
    padded = F.pad(hidden_states, (0, 0, *padding))
    return torch.cat(
        [padded[:, tap * dilation : tap * dilation + length] for tap in range(kernel_size)], dim=-1
    )


def check_item_ids(input_ids: torch.Tensor | None, vocab_size: int) -> None:
    """Raises when `input_ids` is missing or empty, or holds ids outside the vocabulary `[0, vocab_size)`."""
    if input_ids is None or input_ids.numel() == 0 or input_ids.shape[-1] == 0:
        raise ValueError("input_ids is empty; every sequence needs at least one item.")
    if torch.compiler.is_compiling():
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"input_ids holds ids from {low} to {high}, outside the vocabulary [0, {vocab_size}); encode items "
            "with the model's ItemTokenizer."
        )


def item_prediction_loss(
    config: PreTrainedConfig,
    training: bool,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy over all items (or, in training, the sampled softmax of `config.pretraining_loss`) of
    (rows, hidden) states against (rows,) labels, with the output layer's (items, hidden) `weight` and `bias`; rows
    labelled -100 (padding) do not count."""
    if config.pretraining_loss == "sampled_softmax" and training:
        return sampled_softmax_loss(hidden, weight, bias, labels, config.num_sampled)
    return linear_cross_entropy(hidden, weight, bias, labels, chunk_size=config.loss_chunk_size)


class ItemPredictionMixin:
    """What the pretraining heads share: a softmax over all items through `output_layer`, a linear layer with its
    own item embedding and bias, separate from the input embedding. Goes before the model's base class in the
    bases; `shift_labels` says whether position t predicts item t+1 (next-item) or its own item (masked-item)."""

    shift_labels = True
    output_layer: nn.Linear

    def get_output_embeddings(self) -> nn.Linear:
        return self.output_layer

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.output_layer = value

    def _item_prediction(
        self,
        hidden: torch.Tensor,
        labels: torch.Tensor | None,
        logits_to_keep: int,
        output_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(loss, logits) from (batch, length, hidden) states: with `labels`, the loss only, the full logits are
        never materialised; without, the logits of the last `logits_to_keep` positions (0: all). `output_weights`
        replaces `output_layer`'s (weight, bias) when the items' output vectors are computed (from their text)."""
        weight, bias = output_weights or (self.output_layer.weight, self.output_layer.bias)
        if labels is None:
            return None, F.linear(hidden[:, -logits_to_keep:] if logits_to_keep else hidden, weight, bias)
        if self.shift_labels:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        loss = item_prediction_loss(
            self.config,
            self.training,
            hidden.reshape(-1, hidden.shape[-1]),
            weight,
            bias,
            labels.reshape(-1),
        )
        return loss, None


def distinct_rows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`(input_ids, attention_mask, inverse)`: the batch's distinct rows and, for each original row, the index of
    its distinct row (`inverse`), so that `per_distinct_row[inverse]` is the per-row result. `inverse` is None and
    the batch comes back as it is when no row repeats, and inside `torch.compile` or `torch.export`.

    ColdRec has one row per target item (`one_row_per_target`), so a user's history repeats once per target: a
    head reads it through the backbone once, and the gradients of the repeated rows add up through the indexing
    exactly as if each row had run on its own."""
    if torch.compiler.is_compiling():
        # A compiled or exported graph keeps static shapes; the number of distinct rows depends on the data.
        return input_ids, attention_mask, None
    keys = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)
    distinct, inverse = torch.unique(keys, dim=0, return_inverse=True)
    if distinct.shape[0] == keys.shape[0]:
        return input_ids, attention_mask, None
    length = input_ids.shape[1]
    return distinct[:, :length], distinct[:, length:].to(attention_mask.dtype), inverse


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Softmax cross-entropy of (batch, num_labels) class logits; raises on labels outside [0, num_labels)."""
    if labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(
            f"labels must lie in [0, {num_labels}); got values from {int(labels.min())} to {int(labels.max())}. "
            "Map them with config.label2id."
        )
    return F.cross_entropy(logits.float(), labels)


__all__ = [
    "FullAutoMapMixin",
    "ItemPredictionMixin",
    "check_item_ids",
    "classification_loss",
    "distinct_rows",
    "init_truncated_normal",
    "item_prediction_loss",
]
