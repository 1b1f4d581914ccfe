"""Trainer collators: left-padded item sequences for pretraining (causal and masked), classification with the
[TCL] token (Figure 2) and cold-start item ranking with sampled negatives (Section 3.4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` (batch, longest row) of id rows padded on the left, so the last position
    of every row is its latest item (what the causal [TCL] readout reads, Figure 2(a))."""
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for position, row in enumerate(rows):
        input_ids[position, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[position, length - len(row) :] = 1
    return input_ids, attention_mask


@dataclass
class _ItemSequenceCollator:
    """Left-pads rows of item ids (`input_ids`, no specials, no padding), keeping the most recent items."""

    tokenizer: Any
    max_length: int

    def _num_special_tokens(self) -> int:
        return 0

    def __post_init__(self) -> None:
        if self.max_length <= self._num_special_tokens():
            raise ValueError(
                f"max_length={self.max_length} leaves no room for items next to {self._num_special_tokens()} "
                "special token(s); raise it."
            )

    def _item_ids(self, features: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Each row's `input_ids`, checked, and truncated from the left to fit `max_length` with the specials."""
        budget = self.max_length - self._num_special_tokens()
        specials = {self.tokenizer.pad_token_id, self.tokenizer.mask_token_id, self.tokenizer.tcl_token_id}
        vocab_size = len(self.tokenizer)
        rows = []
        for position, feature in enumerate(features):
            ids = list(feature["input_ids"])
            if not ids:
                raise ValueError(
                    f"Row {position} of the batch has an empty `input_ids`; drop empty histories."
                )
            bad = sorted({i for i in ids if i in specials or not 0 <= i < vocab_size})
            if bad:
                raise ValueError(
                    f"Row {position} of the batch has ids {bad[:10]} that are not items of the {vocab_size}-token "
                    "vocabulary; build `input_ids` with tokenizer.encode_items (no special tokens, no padding)."
                )
            if len(ids) > budget:
                logger.warning_once(
                    f"Sequences longer than {budget} items are truncated from the left to fit max_length="
                    f"{self.max_length} (the most recent items are kept)."
                )
                ids = ids[-budget:]
            rows.append(ids)
        return rows


@dataclass
class NextItemCollator(_ItemSequenceCollator):
    """Causal pretraining batches (NextItNet objective, Section 3.2): left-padded `input_ids`, `attention_mask`
    and `labels` equal to `input_ids` with padding set to -100 (the model shifts the labels itself)."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = left_pad(self._item_ids(features), self.tokenizer.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100),
        }


@dataclass
class MaskedItemCollator(_ItemSequenceCollator):
    """Non-causal (GRec) pretraining batches: `mask_probability` of each row's items (at least one) are chosen;
    of those, 80% become [MASK], 10% a uniformly random item and 10% stay unchanged. A share `last_item_rows` of
    the rows instead has its last item alone chosen and always replaced by [MASK]: the next-item question that
    evaluation asks (the held-out last item in place of a [MASK], `PretrainingTrainer`), as BERT4Rec (Sun et al.,
    CIKM 2019, Section 3.6) adds samples that mask only the last item. `labels` hold the original id at chosen
    positions and -100 elsewhere. Every call draws anew, so each epoch is masked differently; `seed` makes the
    draws reproducible (default: torch's global generator, which the Trainer seeds per worker).
    """

    mask_probability: float = 0.3
    last_item_rows: float = 0.0
    seed: int | None = None
    _generator: torch.Generator | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mask_probability <= 1:
            raise ValueError(f"mask_probability must be in (0, 1], got {self.mask_probability}.")
        if not 0 <= self.last_item_rows <= 1:
            raise ValueError(f"last_item_rows must be in [0, 1], got {self.last_item_rows}.")
        self._generator = _generator(self.seed)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        original, attention_mask = left_pad(self._item_ids(features), self.tokenizer.pad_token_id)
        is_item = attention_mask.bool()
        num_chosen = (attention_mask.sum(1) * self.mask_probability).round().clamp(min=1)
        scores = torch.rand(original.shape, generator=self._generator).masked_fill(~is_item, 2.0)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        chosen = ranks < num_chosen[:, None]
        action = torch.rand(original.shape, generator=self._generator)
        if self.last_item_rows > 0:
            last_only = torch.rand(len(original), generator=self._generator) < self.last_item_rows
            chosen[last_only] = False
            chosen[last_only, -1] = True
            action[last_only, -1] = 0.0  # below 0.8: always [MASK]
        random_items = torch.randint(
            self.tokenizer.first_item_id, len(self.tokenizer), original.shape, generator=self._generator
        )
        input_ids = original.masked_fill(chosen & (action < 0.8), self.tokenizer.mask_token_id)
        input_ids = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_items, input_ids)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": original.masked_fill(~chosen, -100),
        }


@dataclass
class SequenceClassificationCollator(_ItemSequenceCollator):
    """Fine-tuning batches with the [TCL] token (Figure 2): appended at the end (`tcl_position="end"`, causal
    readout, Figure 2a) or at both ends (`"both"`, non-causal readout, Figure 2c). Items are truncated from the
    left so that the row fits `max_length` with its [TCL] token(s); `labels` come from the `label_column`."""

    tcl_position: str = "end"
    label_column: str = "label"

    def _num_special_tokens(self) -> int:
        return 2 if self.tcl_position == "both" else 1

    def __post_init__(self) -> None:
        if self.tcl_position not in ("end", "both"):
            raise ValueError(f"tcl_position must be 'end' or 'both', got {self.tcl_position!r}.")
        super().__post_init__()

    def _with_tcl(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tcl = [self.tokenizer.tcl_token_id]
        prefix = tcl if self.tcl_position == "both" else []
        input_ids, attention_mask = left_pad(
            [prefix + ids + tcl for ids in self._item_ids(features)], self.tokenizer.pad_token_id
        )
        labels = torch.tensor([int(feature[self.label_column]) for feature in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._with_tcl(features)


@dataclass(kw_only=True)
class ItemRankingCollator(SequenceClassificationCollator):
    """Cold-start recommendation batches: like `SequenceClassificationCollator`, with `labels` = the row's target
    item index (`target` column, see `one_row_per_target`) and `negative_ids` (batch, `num_negatives`) drawn
    uniformly from the other target items (BPR against uniform negatives, Section 3.4)."""

    label_column: str = "target"
    num_target_items: int
    num_negatives: int = 1
    seed: int | None = None
    _generator: torch.Generator | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_target_items < 2:
            raise ValueError(f"Need at least 2 target items to draw negatives, got {self.num_target_items}.")
        self._generator = _generator(self.seed)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self._with_tcl(features)
        labels = batch["labels"]
        if labels.min() < 0 or labels.max() >= self.num_target_items:
            raise ValueError(
                f"Target indices must lie in [0, {self.num_target_items}), got {labels.tolist()}; set "
                "num_target_items to the size of the target-item label set."
            )
        # Draw from the num_target_items - 1 other items, then shift past the positive.
        draws = torch.randint(
            0, self.num_target_items - 1, (len(labels), self.num_negatives), generator=self._generator
        )
        batch["negative_ids"] = draws + (draws >= labels[:, None]).long()
        return batch


__all__ = [
    "ItemRankingCollator",
    "MaskedItemCollator",
    "NextItemCollator",
    "SequenceClassificationCollator",
]
