"""SASRec: a causal self-attention user model over item sequences.

Kang and McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018, arXiv 1808.09781). The file reads like
Section III of the paper: the embedding layer (III-A: item embedding plus a learned position embedding), the
self-attention block (III-B: causal scaled dot-product attention, then a point-wise feed-forward network), the
stacking of blocks (III-C: each sub-layer `g` becomes `x + Dropout(g(LayerNorm(x)))`), then the user model and its
heads: next-item prediction (III-D) through the family's fused output layer, and user-profile classification from
the user vector (the downstream tasks of PeterRec, Section 3.3).

Where this file departs from the paper, it follows the family: the output item embedding and bias are separate from
the input embedding (the paper shares them, III-D) and the objective is the softmax over all items (the paper uses
one sampled negative with binary cross-entropy); the final LayerNorm over the last block's output comes from the
authors' code. Positions count from a user's first item, so left padding never changes a user's outputs: pad keys
are never attended to, and each pad query attends only to itself (a row with nothing to attend to would be NaN).

Each block names its sub-layers `attention` and `feed_forward`, each a `PreNormResidual` with its own `layer_norm`,
`layer` and `dropout`, and their weights `query`, `key`, `value`, `dense_in`, `dense_out`: the places where the
adapters of `registry.PATCH_TYPES` go (`adapters.adapt`: Houlsby and Compacter after each sub-layer, Pfeiffer after
the feed-forward one, the parallel adapter beside each, LoRA on the projections), besides the soft prompt on the
input embeddings and K-Adapter's side network over the blocks' outputs.

Transfer (PeterRec, Section 3.3; `transfer.prepare_for_transfer`): the task heads read the user vector with the
task's readout (`"tcl"`: the last position). FineCLS: the frozen user model and a new head. FineAll: every weight
trained. PeterRec-style patches (insertion `sublayers`): a model patch (PeterRec's Figure 3(f), zero
up-projection) on the output of each sub-layer of every block, before its residual add, `x + Dropout(patch(g(LN(x))))`:
the serial adapter placement of Houlsby et al. (2019) that Adapter4Rec (Fu, Yuan et al., WSDM 2024) studies. Each
block holds every task's patches (`blocks.{i}.patches.<task>.attention`, `...feed_forward`); the rest stays frozen.
A patch works position by position, so pad positions still never reach a real one. FineLast1/2, which name the
dilated convolutions, have no counterpart (`registry.MODEL_TYPES["sasrec"].methods`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .adapters import PlaceShape, adapt, add_side_outputs, insert_prompts
from .configuration_sasrec import FEED_FORWARD_ACTIVATIONS, SASRecConfig
from .item_text import ItemTextEncoder, TextItemsMixin, TextTargetsMixin, id_embedding_rows, uses_item_text
from .modeling_peterrec import (
    ClassificationHead,
    ItemBagTerm,
    ItemPredictionOutput,
    ItemRankingHead,
    PatchedTaskModel,
    SlotPatches,
    UserReadout,
    UserTask,
)
from .modeling_utils import (
    PRETRAINING_HEAD_KEYS,
    FullAutoMapMixin,
    ItemPredictionMixin,
    check_item_ids,
    init_truncated_normal,
)
from .registry import READOUTS, require_implemented

AUTO_CLASSES = {
    "AutoModel": "SASRecModel",
    "AutoModelForCausalLM": "SASRecForNextItemPrediction",
    "AutoModelForSequenceClassification": "SASRecForSequenceClassification",
}
"""The Auto class that loads each model of this file (`FullAutoMapMixin` names them all in a saved `auto_map`)."""

ACTIVATION_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU}
"""The module of each `SASRecConfig.hidden_act`."""
require_implemented(
    dict.fromkeys(FEED_FORWARD_ACTIVATIONS), ACTIVATION_MODULES, "modeling_sasrec ACTIVATION_MODULES"
)

# ---------------------------------------------------------------------------------------------------------------
# Embedding layer (Section III-A)
# ---------------------------------------------------------------------------------------------------------------


def own_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, length) position of each item counted from the user's first item (0 at pad positions), so that left
    padding shifts no item's position embedding."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


class SASRecEmbeddings(nn.Module):
    """The input embedding matrix E-hat = M_s + P (Section III-A): the item embedding plus a learned position
    embedding, then dropout."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.max_positions = config.max_position_embeddings
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, item_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if attention_mask.shape[1] > self.max_positions:
            longest = int(attention_mask.sum(1).max())
            if longest > self.max_positions:
                raise ValueError(
                    f"A sequence holds {longest} items, more than max_position_embeddings={self.max_positions}; "
                    "truncate inputs to the most recent items (the tokenizer's model_max_length)."
                )
        return self.dropout(item_embeddings + self.position_embeddings(own_positions(attention_mask)))


# ---------------------------------------------------------------------------------------------------------------
# Self-attention block (Section III-B) and its stacking (Section III-C)
# ---------------------------------------------------------------------------------------------------------------


def attention_mask_matrix(attention_mask: torch.Tensor, is_causal: bool) -> torch.Tensor:
    """(batch, 1, length, length) boolean mask, True where query i may attend to key j: key j is an item and, for
    the causal model, j <= i ("Causality", Section III-B). Every query also attends to itself, so a pad query (whose
    output nobody reads) is never left with no key at all."""
    length = attention_mask.shape[1]
    allowed = attention_mask.bool()[:, None, None, :].expand(-1, 1, length, -1)
    if is_causal:
        allowed = allowed.tril()
    itself = torch.eye(length, dtype=torch.bool, device=attention_mask.device)
    return allowed | itself


class SelfAttention(nn.Module):
    """S = SA(E-hat) = Attention(E-hat W^Q, E-hat W^K, E-hat W^V) with scaled dot-product attention (Eq. 2-3),
    split over `num_attention_heads` heads whose outputs are concatenated (the paper: one head)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob

    def _heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = hidden_states.shape
        return hidden_states.view(batch, length, self.num_heads, hidden // self.num_heads).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor, patches: Mapping[str, nn.Module]
    ) -> torch.Tensor:
        query, key, value = (
            self._heads(adapt(patches, name, hidden_states, getattr(self, name)(hidden_states)))
            for name in ("query", "key", "value")
        )
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout_prob if self.training else 0.0
        )
        return attended.transpose(1, 2).flatten(2)


class PointWiseFeedForward(nn.Module):
    """F_i = ReLU(S_i W^(1) + b^(1)) W^(2) + b^(2), the same weights at every position (Eq. 4)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.dense_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATION_MODULES[config.hidden_act]()
        self.dense_out = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, patches: Mapping[str, nn.Module]) -> torch.Tensor:
        inner = self.activation(adapt(patches, "dense_in", hidden_states, self.dense_in(hidden_states)))
        return adapt(patches, "dense_out", inner, self.dense_out(inner))


class PreNormResidual(nn.Module):
    """g(x) = x + Dropout(g(LayerNorm(x))) around a sub-layer g (Section III-C: residual connection, layer
    normalisation and dropout); with a task's adapter at the sub-layer (its `place`),
    x + Dropout(adapter(LN(x), g(LN(x)))), e.g. Houlsby's x + Dropout(a(g(LN(x)))), and with the task's own copy of
    the LayerNorm (`<place>_norm`) in place of the shared one."""

    def __init__(self, config: SASRecConfig, layer: nn.Module, place: str):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layer = layer
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.place = place

    def forward(
        self, hidden_states: torch.Tensor, *args: torch.Tensor, patches: Mapping[str, nn.Module]
    ) -> torch.Tensor:
        norm = f"{self.place}_norm"
        normed = (patches[norm] if norm in patches else self.layer_norm)(hidden_states)
        output = adapt(patches, self.place, normed, self.layer(normed, *args, patches=patches))
        return hidden_states + self.dropout(output)


class SASRecBlock(nn.Module):
    """One self-attention block (Section III-B, stacked as in III-C): causal self-attention, then the point-wise
    feed-forward network, each inside its residual connection. `patches` holds each task's adapters by place
    (`{task: {"attention": ..., "query": ..., "feed_forward_norm": ...}}`)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.attention = PreNormResidual(config, SelfAttention(config), "attention")
        self.feed_forward = PreNormResidual(config, PointWiseFeedForward(config), "feed_forward")
        self.patches = nn.ModuleDict()

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor, patch: str | None = None
    ) -> torch.Tensor:
        patches = dict(self.patches[patch].items()) if patch is not None else {}
        hidden_states = self.attention(hidden_states, mask, patches=patches)
        return self.feed_forward(hidden_states, patches=patches)


# ---------------------------------------------------------------------------------------------------------------
# The user model and its heads
# ---------------------------------------------------------------------------------------------------------------


class SASRecPreTrainedModel(PatchedTaskModel, TextItemsMixin, FullAutoMapMixin, PreTrainedModel):
    """Base class: configuration, weight initialisation (truncated normal, as the family) and loading."""

    config_class = SASRecConfig
    config: SASRecConfig
    base_model_prefix = "sasrec"
    main_input_name = "input_ids"
    # forward takes no **kwargs; Trainer must not rescale the loss by the number of processes.
    accepts_loss_kwargs = False
    _no_split_modules = ["SASRecBlock"]
    _keys_to_ignore_on_load_unexpected = PRETRAINING_HEAD_KEYS

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init_truncated_normal(module, self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ItemBagTerm):
            module.reset_parameters()


class SASRecModel(SlotPatches, SASRecPreTrainedModel):
    """The user model (Section III-A to III-C): embeddings, `num_hidden_layers` self-attention blocks and a final
    LayerNorm; one hidden state F_t per position, which for the causal model has seen the items up to t only.

    Patches of any type (`registry.PATCH_TYPES`) are added by task name with [`~TaskPatches.add_patch`] and chosen
    per call with `patch=`."""

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.embed_items = nn.Embedding(id_embedding_rows(config), config.hidden_size)
        # Items from their text (TransRec, `item_text.py`): the item encoder is part of the item embedding.
        self.item_text = ItemTextEncoder(config) if uses_item_text(config) else None
        self.embeddings = SASRecEmbeddings(config)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.patches = nn.ModuleDict()
        self._init_patches()
        self.post_init()

    def patch_holders(self) -> list[nn.ModuleDict]:
        """One holder per block: each task's adapters by place (`blocks.{i}.patches.<task>.<place>`)."""
        return [block.patches for block in self.blocks]

    def patch_places(self, block: int) -> dict[str, PlaceShape]:
        """A block's sub-layers and the weights in them, with their widths."""
        width, inner = self.config.hidden_size, self.config.intermediate_size
        same = PlaceShape(width, width)
        return {
            **dict.fromkeys(("attention", "feed_forward", "query", "key", "value"), same),
            "dense_in": PlaceShape(width, inner),
            "dense_out": PlaceShape(inner, width),
        }

    def layer_norms_of(self, block: int | None) -> dict[str, nn.LayerNorm]:
        """Each sub-layer's LayerNorm (`attention_norm`, `feed_forward_norm`); outside the blocks the final one
        (`final_norm`)."""
        if block is None:
            return {"final_norm": self.final_layer_norm}
        return {
            f"{name}_norm": getattr(self.blocks[block], name).layer_norm
            for name in ("attention", "feed_forward")
        }

    @property
    def patched_tasks(self) -> set[str]:
        """Tasks with a patch in the user encoder (`patch_kinds`) or an adapter in the item encoder
        (`item_text_patches`)."""
        return set(self.patch_kinds) | set(self.item_text.patches if self.item_text is not None else ())

    def remove_patch(self, task: str) -> None:
        """Removes `task`'s patch from the user encoder and its adapter from the item encoder."""
        if self.item_text is not None and task in self.item_text.patches:
            del self.item_text.patches[task]
            if task not in self.patch_kinds:
                return
        super().remove_patch(task)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_items

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_items = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        patch: str | None = None,
    ) -> BaseModelOutput | tuple:
        """Encodes left-padded item sequences.

        Args:
            input_ids: (batch, length) item ids, left-padded with `[PAD]`.
            attention_mask: (batch, length), 1 on items and 0 on padding; derived from `[PAD]` when omitted.
            inputs_embeds: precomputed item embeddings instead of `input_ids` (positions are added here).
            output_hidden_states: also return the input of every block and the last block's output.
            patch: run with this task's patches (`add_patch`) and its item-encoder adapter, if it has them; one task
                per call.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if inputs_embeds is None:
            check_item_ids(input_ids, self.config.vocab_size)
            inputs_embeds = (
                self.embed_items(input_ids)
                if self.item_text is None
                else self.item_text.embed(input_ids, self.embed_items, patch=self._check_patch(patch))
            )
        if attention_mask is None:
            attention_mask = (
                input_ids.ne(self.config.pad_token_id)
                if input_ids is not None
                else torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
            )
        task_wide = self.task_patches(patch)
        patch = patch if patch in self.patch_kinds else None  # the blocks hold user-encoder patches only
        hidden_states = self.embeddings(inputs_embeds, attention_mask)
        # The prompt joins after the position embeddings: items keep the positions they had in pretraining, and a
        # full-length input still fits the position table.
        hidden_states, attention_mask, prompt_length = insert_prompts(
            hidden_states, attention_mask, [(slice(None), task_wide.get("prompt"))]
        )
        mask = attention_mask_matrix(attention_mask, self.config.is_causal)
        block_outputs = [hidden_states]
        for block in self.blocks:
            hidden_states = block(hidden_states, mask, patch)
            block_outputs.append(hidden_states)
        hidden_states = task_wide.get("final_norm", self.final_layer_norm)(hidden_states)
        hidden_states = add_side_outputs(
            hidden_states, block_outputs[1:], [(slice(None), task_wide.get("side"))]
        )
        # The outputs at soft-prompt positions are dropped: every item is back where the input had it.
        hidden_states = hidden_states[:, prompt_length:]
        all_hidden_states = (
            tuple(h[:, prompt_length:] for h in block_outputs) if output_hidden_states else None
        )
        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states)

    def user_representation(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reads one vector per user with the model's own `config.readout` (as `PeterRecModel` does): with `"tcl"`,
        the last position, which the causal model computes from every item of the user."""
        if READOUTS[self.config.readout].learned:
            raise ValueError(
                f"The {self.config.readout!r} readout has weights that belong to a task head; read users with the "
                "task model's `readout`."
            )
        return UserReadout(self.config)(hidden_states, attention_mask)


class SASRecForNextItemPrediction(ItemPredictionMixin, SASRecPreTrainedModel):
    """Next-item prediction (Section III-D): the output F_t predicts item t+1 at every non-pad position, by a softmax
    over all items with its own output embedding and bias, through the family's fused output layer
    (`loss_peterrec`). With items from their text (`config.item_representation`), the output layer is the item
    matrix that the item encoder computes once per step (`item_text.py`, which states the cost).

    `labels` are aligned with `input_ids` (the model shifts them), -100 marks positions without a target.
    """

    shift_labels = True

    def __init__(self, config: SASRecConfig):
        if not config.is_causal:
            raise ValueError("Next-item prediction needs the causal model; set SASRecConfig.is_causal=True.")
        super().__init__(config)
        self.sasrec = SASRecModel(config)
        self.output_layer = nn.Linear(config.hidden_size, id_embedding_rows(config))
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
            labels: target item ids aligned with `input_ids`, -100 where there is none; position t predicts t+1.
            logits_to_keep: without labels, compute logits for the last `logits_to_keep` positions only (0: all).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        item_text, inputs_embeds, output_weights = self.sasrec.item_text, None, None
        if item_text is not None:
            # The catalogue is encoded once for the step: the input items and the output layer share it.
            check_item_ids(input_ids, self.config.vocab_size)
            item_matrix = item_text.item_matrix()
            inputs_embeds = item_text.embed(input_ids, self.sasrec.embed_items, item_matrix)
            output_weights = item_text.output_weights(item_matrix, self.output_layer)
        outputs = self.sasrec(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        loss, logits = self._item_prediction(
            outputs.last_hidden_state, labels, logits_to_keep, output_weights
        )
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.hidden_states) if v is not None)
        return ItemPredictionOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class SASRecForUserTask(UserTask, SASRecPreTrainedModel):
    """What the fine-tuning heads on SASRec share (as `PeterRecForUserTask`): the user model with the task's patch,
    the task's readout of its outputs (`config.readout`; `"tcl"`, the last position, has attended to every item of
    the causal model) and head terms; `UserTask` reads the user vectors."""

    def __init__(self, config: SASRecConfig, num_outputs: int):
        super().__init__(config)
        self.sasrec = SASRecModel(config)
        self._add_head_terms(config, num_outputs)


class SASRecForSequenceClassification(ClassificationHead, SASRecForUserTask):
    """User-profile prediction (GenEst, AgeEst, LifeEst; PeterRec Section 3.3) from the SASRec user vector with a
    linear layer (and/or the wide term, `config.head_terms`), trained with softmax cross-entropy."""

    def __init__(self, config: SASRecConfig):
        super().__init__(config, config.num_labels)
        self._add_classifier(config)
        self.post_init()


class SASRecForItemRanking(TextTargetsMixin, ItemRankingHead, SASRecForUserTask):
    """Cold-start item recommendation (ColdRec, PeterRec Section 3.3) from the SASRec user vector; see
    `ItemRankingHead`. With items from their text, target items are encoded from their texts (`TextTargetsMixin`)."""

    def __init__(self, config: SASRecConfig):
        super().__init__(config, config.num_target_items)
        self._add_target_embeddings(config)
        self.post_init()


__all__ = [
    "ACTIVATION_MODULES",
    "AUTO_CLASSES",
    "PointWiseFeedForward",
    "PreNormResidual",
    "SASRecBlock",
    "SASRecEmbeddings",
    "SASRecForItemRanking",
    "SASRecForNextItemPrediction",
    "SASRecForSequenceClassification",
    "SASRecForUserTask",
    "SASRecModel",
    "SASRecPreTrainedModel",
    "SelfAttention",
    "attention_mask_matrix",
    "own_positions",
]
