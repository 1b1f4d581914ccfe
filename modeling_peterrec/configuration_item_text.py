"""How a user model represents items: by ID embedding, by an item encoder over the item's text (TransRec), or both.

Adapter4Rec (Fu, Yuan et al., WSDM 2024) encodes each item from its raw text with a pretrained text model and a
"dimension transformation layer" to the user encoder's width, so that a recommender transfers across domains and
scores items nobody has clicked yet. One record per representation, read by the configuration's checks and by the
item encoder (`item_text.py`).

Saved folders carry this file next to the configuration files for `trust_remote_code` loading, so it imports
nothing outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedConfig


@dataclass(frozen=True)
class ItemRepresentation:
    """One way of turning an item id into a vector, in the input and in the output layer.

    Attributes:
        name: the value of the configuration's `item_representation`.
        id_embeddings: every item has rows in the ID embedding tables (input and output); without it only the
            special tokens ([PAD], [UNK], [MASK], [TCL]) have ID rows.
        text: the item encoder over the item's text adds its vector.
        description: one line for help texts and docs.
    """

    name: str
    id_embeddings: bool
    text: bool
    description: str


ITEM_REPRESENTATIONS: dict[str, ItemRepresentation] = {
    record.name: record
    for record in (
        ItemRepresentation("id", True, False, "an ID embedding per item (the default)"),
        ItemRepresentation("text", False, True, "the item encoder over the item's text (TransRec)"),
        ItemRepresentation("text_id", True, True, "the sum of the text vector and an ID embedding"),
    )
}
"""The item representations, by `item_representation`."""

TEXT_POOLINGS = ("first", "mean")
"""How the item encoder reads one vector of a text: the first token's state ([CLS] for BERT), or the mean of the
states of the text's tokens."""


def check_item_text_fields(config: PreTrainedConfig) -> None:
    """Checks the item-representation fields of a configuration; each error names the field and what is allowed."""
    name = type(config).__name__
    if config.item_representation not in ITEM_REPRESENTATIONS:
        raise ValueError(
            f"{name}.item_representation={config.item_representation!r} is not supported; choose one of "
            f"{list(ITEM_REPRESENTATIONS)} ({'; '.join(f'{r.name}: {r.description}' for r in ITEM_REPRESENTATIONS.values())})."
        )
    if config.item_text_pooling not in TEXT_POOLINGS:
        raise ValueError(
            f"{name}.item_text_pooling={config.item_text_pooling!r} is not supported; choose one of "
            f"{list(TEXT_POOLINGS)}."
        )
    for field in ("max_text_length", "item_encoder_batch_size"):
        value = getattr(config, field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}.{field} must be a positive integer, got {value!r}.")
    if not ITEM_REPRESENTATIONS[config.item_representation].text:
        return
    encoder_config = config.item_encoder_config
    if not isinstance(encoder_config, dict) or "model_type" not in encoder_config:
        raise ValueError(
            f"{name}.item_representation={config.item_representation!r} needs item_encoder_config, the text "
            "model's configuration as a dict with its model_type (`AutoConfig.from_pretrained(model_id).to_dict()`); "
            "build the model with `from_item_encoder(model_id, ...)`, which fills it in."
        )


__all__ = ["ITEM_REPRESENTATIONS", "TEXT_POOLINGS", "ItemRepresentation", "check_item_text_fields"]
