"""The backbone folder (SPEC §4) that `pretrain` writes and `finetune` and `evaluate` read: weights and config,
tokenizer, and the model card with the pretraining metrics."""

from __future__ import annotations

import os
from pathlib import Path

from hub_cards.cards import render_backbone_card

from .._io import atomic_folder
from ..configuration_peterrec import PeterRecConfig
from ..modeling_peterrec import (
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecPreTrainedModel,
)
from ..tokenization_peterrec import ItemTokenizer


def pretraining_model_class(is_causal: bool) -> type[PeterRecPreTrainedModel]:
    """Next-item prediction for the causal backbone (NextItNet), masked-item prediction otherwise (GRec)."""
    return PeterRecForNextItemPrediction if is_causal else PeterRecForMaskedItemPrediction


def save_backbone(
    model: PeterRecPreTrainedModel,
    tokenizer: ItemTokenizer,
    folder: str | os.PathLike,
    metrics: dict[str, float],
    dataset: str,
    training_summary: str,
) -> Path:
    """Writes a backbone folder: weights and config, tokenizer, and the model card with the pretraining metrics.
    The folder appears complete or not at all."""
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = model.config
        card = render_backbone_card(
            folder.name,
            is_causal=config.is_causal,
            hidden_size=config.hidden_size,
            dilations=config.dilations,
            vocab_size=config.vocab_size,
            num_parameters=model.num_parameters(),
            dataset=dataset,
            metrics=metrics,
            kernel_size=config.kernel_size,
            pretraining_loss=config.pretraining_loss,
            training_summary=training_summary,
        )
        card.save(staging / "README.md")
    return folder


def load_backbone(folder: str | os.PathLike) -> tuple[PeterRecPreTrainedModel, ItemTokenizer]:
    """The pretraining model and tokenizer of a backbone folder written by `pretrain`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a backbone folder (no config.json); pass the folder written by `peterrec pretrain`."
        )
    config = PeterRecConfig.from_pretrained(folder)
    return pretraining_model_class(config.is_causal).from_pretrained(folder), ItemTokenizer.from_pretrained(
        folder
    )


__all__ = ["load_backbone", "pretraining_model_class", "save_backbone"]
