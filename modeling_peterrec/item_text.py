"""The item encoder over item text: items from their text (TransRec; Adapter4Rec, Fu, Yuan et al., WSDM 2024).

Adapter4Rec's TransRec encodes each item from its raw text with a pretrained text model (BERT or RoBERTa on the
item title) and a "dimension transformation layer", a linear map to the user encoder's width, trained end to end
with next-item prediction. [`ItemTextEncoder`] is that encoder for any Hugging Face text model (`AutoModel`, from a
Hub id, a local folder or a bare configuration) with its tokenizer: it pools the text model's token states (first
token or masked mean) and projects them. The configuration's `item_representation` (`ITEM_REPRESENTATIONS`) says
whether an item is its ID embedding, its text vector or their sum; the special tokens ([PAD], [UNK], [MASK], [TCL])
always keep ID embeddings.

The catalogue's texts are tokenized once and kept as tensors (rebuilt from `item_texts.json` and the text
tokenizer when a model loads, never part of the weights or their fingerprint). Item `first_item_id + i` has text
row `i`.

What it costs: the output layer scores every item, so a training step encodes the whole catalogue once (the item
matrix, shared by the input sequence and the output layer): the text model's forward and backward pass over N texts
of at most `max_text_length` tokens, whatever the batch size; on top of the user model's cost, about 6 x P x N x T
FLOPs (P: the text model's parameters outside its embeddings, T: tokens per text). Texts go through sorted by
length, `TEXT_GROUP_SIZE` a forward pass cut to the group's longest text, so T is close to the mean length, not the
longest (ML-1M's catalogue: 2.8x faster than one batch padded to the longest, `benchmarks/item_text_encoding.py`).
The catalogue goes through in chunks of `item_encoder_batch_size` texts; with more than one chunk each chunk's
forward pass is recomputed in the backward pass (activation checkpointing), so memory holds one chunk's activations
at a time, for one more forward pass (about 8 instead of 6 x P x N x T). Without gradients (evaluation, serving),
and in training when nothing in the encoder is trained (a frozen item encoder: the patching methods and FineCLS
without an adapter in it), the item matrix is encoded once, in eval mode, and reused until a weight or a text
changes. A task model (`SASRecModel` without the output layer) that trains its item encoder encodes only the
distinct items of its batch; its ColdRec head encodes its target items from their texts (`TextTargetsMixin`), in
such a training step only the distinct targets of the batch. docs/text_items.md has measured step times.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers.utils import logging
from transformers.utils.hub import cached_file

from .configuration_item_text import ITEM_REPRESENTATIONS

if TYPE_CHECKING:
    from .tokenization_peterrec import ItemTokenizer

logger = logging.get_logger(__name__)

ITEM_TEXTS_NAME = "item_texts.json"
"""The item texts in a saved folder: `{"format_version": 1, "first_item_id": 4, "items": [[item, text], ...]}`,
in item-id order from `first_item_id`."""
ITEM_TEXTS_FORMAT_VERSION = 1
ITEM_ENCODER_FOLDER = "item_encoder"
"""The subfolder of a saved folder that holds the text model's tokenizer (its weights are in the model's file)."""
TEXT_GROUP_SIZE = 256
"""Texts per forward pass of the text model. The texts to encode go through sorted by length, in groups of this many,
each group cut to its longest text: short texts do not pay for the catalogue's longest (ML-1M's titles and genres:
11.7 tokens on average, 28 at most, with the small encoder's vocabulary)."""
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision")
"""The `from_pretrained` options that also apply to reading the item texts and the text tokenizer."""


def first_item_id(config: PreTrainedConfig) -> int:
    """The first item id: every id below it is a special token, which keeps its ID embedding."""
    return max(config.pad_token_id, config.unk_token_id, config.mask_token_id, config.tcl_token_id) + 1


def id_embedding_rows(config: PreTrainedConfig) -> int:
    """Rows of the ID embedding tables (input and output): every id, or the special tokens only when items are
    their text alone."""
    return (
        config.vocab_size
        if ITEM_REPRESENTATIONS[config.item_representation].id_embeddings
        else first_item_id(config)
    )


def uses_item_text(config: PreTrainedConfig) -> bool:
    """Whether the configuration's items are (partly) encoded from their text (model types without the
    `item_representation` field have ID embeddings)."""
    return ITEM_REPRESENTATIONS[getattr(config, "item_representation", "id")].text


def item_encoder_fields(item_encoder: str | os.PathLike) -> dict:
    """The configuration fields of an item encoder over the text model `item_encoder` (a Hub id or a folder): its
    name and its configuration."""
    return {
        "item_encoder": str(item_encoder),
        "item_encoder_config": AutoConfig.from_pretrained(item_encoder).to_dict(),
    }


def grow_rows(module: nn.Embedding | nn.Linear, rows: int) -> None:
    """Extends an ID table (embedding or output layer) to `rows` rows in place; the new rows and biases are zero,
    so an item known only by its text gets no ID signal."""
    weight = module.weight
    extra = rows - weight.shape[0]
    if extra <= 0:
        return
    with torch.no_grad():
        module.weight = nn.Parameter(
            torch.cat([weight, weight.new_zeros(extra, weight.shape[1])]), requires_grad=weight.requires_grad
        )
        if getattr(module, "bias", None) is not None:
            bias = module.bias
            module.bias = nn.Parameter(
                torch.cat([bias, bias.new_zeros(extra)]), requires_grad=bias.requires_grad
            )
    if isinstance(module, nn.Embedding):
        module.num_embeddings = rows
    else:
        module.out_features = rows


class ItemTextEncoder(nn.Module):
    """Item vectors from item texts: a Hugging Face text model, a pooling of its token states (`"first"`: the [CLS]
    state; `"mean"`: the masked mean) and the linear "dimension transformation layer" to the user encoder's
    `hidden_size` (Adapter4Rec's TransRec item encoder).

    The text model is built from `config.item_encoder_config` (random weights; `from_item_encoder` loads pretrained
    ones). The texts and the text tokenizer are set with `put_texts` and `text_tokenizer`, or read from a saved
    folder by `load`.

    `patches` holds each task's PEFT adapter on the text model (`item_text_patches`): the PEFT model over a copy of
    the text model's modules that shares its (frozen) weights, so the text model itself and its weights' names stay
    as they are. Every encoding method takes `patch`, the task whose adapter runs (None, or a task without one: the
    text model alone)."""

    def __init__(self, config: PreTrainedConfig):
        super().__init__()
        self.representation = ITEM_REPRESENTATIONS[config.item_representation]
        text_config = AutoConfig.for_model(**config.item_encoder_config)
        self.text_model = AutoModel.from_config(text_config)
        self.projection = nn.Linear(text_config.hidden_size, config.hidden_size)
        # After text_model: its shared weights keep their text_model names in named_parameters().
        self.patches = nn.ModuleDict()
        self.first_item_id = first_item_id(config)
        self.pooling = config.item_text_pooling
        self.max_text_length = config.max_text_length
        self.chunk_size = config.item_encoder_batch_size
        empty = torch.zeros(0, config.max_text_length, dtype=torch.long)
        self.register_buffer("text_input_ids", empty, persistent=False)
        self.register_buffer("text_attention_mask", empty.clone(), persistent=False)
        self.items: list[str] = []
        self.texts: list[str] = []
        self.text_tokenizer = None
        self._texts_version = 0
        self._reused: dict[str, tuple[tuple, torch.Tensor]] = {}
        self._kept_as_constants = False

    @property
    def num_items(self) -> int:
        """Items with a text: ids `first_item_id` to `first_item_id + num_items - 1`."""
        return len(self.texts)

    # --- texts ----------------------------------------------------------------------------------------------------

    def put_texts(self, ids: Sequence[int], items: Sequence[str], texts: Sequence[str]) -> None:
        """Sets the texts of items `ids` (named `items`), replacing known ones and appending new ones; afterwards
        every id from `first_item_id` to the largest must have a text. Only the given texts are tokenized."""
        rows = [int(item_id) - self.first_item_id for item_id in ids]
        if not rows:
            return
        if min(rows) < 0:
            raise ValueError(
                f"Ids below {self.first_item_id} are special tokens, which keep their ID embeddings and have no text."
            )
        size = max(self.num_items, max(rows) + 1)
        all_items = self.items + [None] * (size - self.num_items)
        all_texts = self.texts + [None] * (size - self.num_items)
        for row, item, text in zip(rows, items, texts, strict=True):
            if not isinstance(text, str):
                raise ValueError(f"The text of item {item!r} is {text!r}; an item's text is a string.")
            all_items[row], all_texts[row] = str(item), text
        missing = [self.first_item_id + row for row, text in enumerate(all_texts) if text is None]
        if missing:
            raise ValueError(
                f"Item ids {missing[:5]} would have no text; every item after the special tokens needs one, in id "
                "order."
            )
        grown = size - self.num_items
        index = torch.tensor(rows, device=self.text_input_ids.device)
        for name, values in zip(("text_input_ids", "text_attention_mask"), self.tokenize(texts), strict=True):
            buffer = getattr(self, name)
            buffer = torch.cat([buffer, buffer.new_zeros(grown, self.max_text_length)])
            buffer[index] = values.to(buffer)
            setattr(self, name, buffer)
        self.items, self.texts = all_items, all_texts
        self._texts_version += 1

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of `texts` for the text model: right-padded to `max_text_length` tokens."""
        if self.text_tokenizer is None:
            raise ValueError(
                "The item encoder has no text tokenizer; set `text_tokenizer` (AutoTokenizer.from_pretrained of the "
                "text model) before giving items their texts."
            )
        encoded = self.text_tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_text_length,
            padding_side="right",
            return_tensors="pt",
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def save(self, folder: str | os.PathLike) -> None:
        """Writes `item_texts.json` and the text tokenizer (`item_encoder/`) into a saved model's folder."""
        folder = Path(folder)
        payload = {
            "format_version": ITEM_TEXTS_FORMAT_VERSION,
            "first_item_id": self.first_item_id,
            "items": [[item, text] for item, text in zip(self.items, self.texts, strict=True)],
        }
        (folder / ITEM_TEXTS_NAME).write_text(
            json.dumps(payload, ensure_ascii=False, indent=0), encoding="utf-8"
        )
        if self.text_tokenizer is not None:
            self.text_tokenizer.save_pretrained(folder / ITEM_ENCODER_FOLDER)

    def load(self, source: str | os.PathLike, subfolder: str = "", **hub_kwargs) -> None:
        """Reads the item texts and the text tokenizer of a saved folder or Hub repo (`save`), if it has them."""
        path = cached_file(
            str(source),
            ITEM_TEXTS_NAME,
            subfolder=subfolder,
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        )
        if path is None:
            logger.warning(
                f"{source} has no {ITEM_TEXTS_NAME}: the model's items have no texts yet; give them theirs with "
                "`set_item_texts`."
            )
            return
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if payload.get("format_version", 0) > ITEM_TEXTS_FORMAT_VERSION or payload.get("first_item_id") != (
            self.first_item_id
        ):
            raise ValueError(
                f"{path} has format version {payload.get('format_version')} and first item id "
                f"{payload.get('first_item_id')}; this version reads format {ITEM_TEXTS_FORMAT_VERSION} with first "
                f"item id {self.first_item_id}."
            )
        self.text_tokenizer = AutoTokenizer.from_pretrained(
            str(source), subfolder=str(Path(subfolder) / ITEM_ENCODER_FOLDER), **hub_kwargs
        )
        items = payload["items"]
        self.put_texts(
            range(self.first_item_id, self.first_item_id + len(items)),
            [item for item, _ in items],
            [text for _, text in items],
        )

    # --- encoding -------------------------------------------------------------------------------------------------

    def _encode_group(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, patch: str | None
    ) -> torch.Tensor:
        width = max(1, int(attention_mask.sum(1).max()))  # right-padded: drop the all-padding columns
        mask = attention_mask[:, :width]
        text_model = self.patches[patch] if patch in self.patches else self.text_model
        states = text_model(input_ids=input_ids[:, :width], attention_mask=mask).last_hidden_state
        # A prompt-tuning adapter puts its virtual tokens in front: the text's own positions are the last ones.
        states = states[:, -width:]
        if self.pooling == "first":
            pooled = states[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.projection(pooled)

    def _encode_chunk(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, patch: str | None
    ) -> torch.Tensor:
        """Texts sorted by length, `TEXT_GROUP_SIZE` per forward pass of the text model."""
        groups = zip(input_ids.split(TEXT_GROUP_SIZE), attention_mask.split(TEXT_GROUP_SIZE), strict=True)
        return torch.cat([self._encode_group(*group, patch) for group in groups])

    def encode_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, patch: str | None = None
    ) -> torch.Tensor:
        """(n, hidden_size) vectors of n tokenized texts (`tokenize`), through `patch`'s adapter if it has one: sorted
        by length (`TEXT_GROUP_SIZE`), encoded in chunks of `item_encoder_batch_size`; with gradients and several
        chunks, each chunk is recomputed in the backward pass (see the module docstring for the cost)."""
        order = attention_mask.sum(1).argsort(stable=True)
        chunks = list(
            zip(
                input_ids[order].split(self.chunk_size),
                attention_mask[order].split(self.chunk_size),
                strict=True,
            )
        )
        if not chunks:
            return self.projection.weight.new_zeros(0, self.projection.out_features)
        recompute = torch.is_grad_enabled() and len(chunks) > 1
        vectors = torch.cat(
            [
                checkpoint(self._encode_chunk, *chunk, patch, use_reentrant=False)
                if recompute
                else self._encode_chunk(*chunk, patch)
                for chunk in chunks
            ]
        )
        return vectors[order.argsort()]

    def encode(self, rows: torch.Tensor, patch: str | None = None) -> torch.Tensor:
        """(n, hidden_size) vectors of the items of text rows `rows` (item id minus `first_item_id`), through
        `patch`'s adapter if it has one."""
        if rows.numel() and int(rows.max()) >= self.num_items:
            raise ValueError(
                f"Item id {int(rows.max()) + self.first_item_id} has no text ({self.num_items} items have one); "
                "give new items their texts with `add_item_texts`."
            )
        return self.encode_tokens(self.text_input_ids[rows], self.text_attention_mask[rows], patch)

    def frozen(self, patch: str | None = None) -> bool:
        """Whether no weight that `patch`'s encoding goes through is trained: the text model, the projection and the
        task's adapter, if it has one."""
        modules = [self.text_model, self.projection]
        if patch in self.patches:
            modules.append(self.patches[patch])
        return not any(weight.requires_grad for module in modules for weight in module.parameters())

    def reusable(self, patch: str | None = None) -> bool:
        """Whether encodings through `patch` are constants that can be kept: nothing is being trained through them
        (no gradients, eval mode), or the encoder is `frozen` for that task."""
        return not (torch.is_grad_enabled() or self.training) or self.frozen(patch)

    def _weights_key(self) -> tuple:
        """What tells the encoder's current weights apart: each weight's storage, version counter and sum. The sum
        is there because fused optimizers (the Trainer's default `adamw_torch_fused`) update weights in place
        without bumping their version counters."""
        weights = list(self.parameters())
        with torch.no_grad():
            sums = torch.stack([w.detach().float().sum() for w in weights]).tolist() if weights else []
        return tuple((w.data_ptr(), w._version) for w in weights), tuple(sums)

    def reuse(
        self, name: str, version: int, compute: Callable[[], torch.Tensor], patch: str | None = None
    ) -> torch.Tensor:
        """`compute()`, an encoding of texts through `patch`. When it is `reusable`, its last result is kept under
        `name` while no weight of the encoder and not the texts' `version` has changed, and computed without
        gradients in eval mode: a frozen item encoder (the patching methods and FineCLS without an adapter in it) is
        then an item table like ID embeddings, encoded once, with no dropout, instead of at every training step."""
        if not self.reusable(patch):
            return compute()
        if self._kept_as_constants and name in self._reused:
            return self._reused[name][1]
        key = (version, self._weights_key())
        if name not in self._reused or self._reused[name][0] != key:
            training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    self._reused[name] = (key, compute())
            finally:
                self.train(training)
        return self._reused[name][1]

    @contextmanager
    def kept_as_constants(self) -> Iterator[None]:
        """Within it, kept encodings are used as they are, without looking at the weights, and the text model, the
        projection and the adapters are set aside: for exporters, whose tracing sees weights without data
        (`export.py`). Encode once before (an eager call in eval mode, without gradients) and change no text inside:
        the traced program then holds the item matrix as a constant and none of the text model's weights."""
        set_aside = {"text_model": self.text_model, "projection": self.projection, "patches": self.patches}
        self._modules.update(text_model=nn.Module(), projection=nn.Module())
        self._modules["patches"] = nn.ModuleDict(
            {task: nn.Module() for task in self.patches}
        )  # tasks stay known
        self._kept_as_constants = True
        try:
            yield
        finally:
            self._kept_as_constants = False
            self._modules.update(set_aside)

    def item_matrix(self, patch: str | None = None) -> torch.Tensor:
        """(num_items, hidden_size) vectors of every item with a text, in id order, through `patch`'s adapter if it
        has one: encoded once per call, or, when `reusable`, reused while no weight and no text has changed."""
        if self.num_items == 0:
            raise ValueError(
                "The item encoder has no item texts; give every item its text with `set_item_texts` (or load a "
                "folder saved with them)."
            )
        rows = torch.arange(self.num_items, device=self.text_input_ids.device)
        return self.reuse(f"catalogue.{patch}", self._texts_version, lambda: self.encode(rows, patch), patch)

    def embed(
        self,
        input_ids: torch.Tensor,
        id_embeddings: nn.Embedding,
        item_matrix: torch.Tensor | None = None,
        patch: str | None = None,
    ) -> torch.Tensor:
        """Input vectors of (batch, length) ids: special tokens from their ID rows, items from their text (plus their
        ID rows for `"text_id"`). The items' vectors come from `item_matrix` when given (the step's catalogue), from
        the kept catalogue when the encoding is `reusable`, else from encoding the batch's distinct items through
        `patch`'s adapter if it has one."""
        is_item = input_ids >= self.first_item_id
        if self.representation.id_embeddings:
            vectors = id_embeddings(input_ids)
        else:
            vectors = id_embeddings(input_ids.masked_fill(is_item, 0)) * (~is_item).unsqueeze(-1)
        rows = input_ids[is_item] - self.first_item_id
        if item_matrix is None and self.reusable(patch):
            item_matrix = self.item_matrix(patch)
        if item_matrix is not None:
            text = item_matrix[rows]
        else:
            unique, inverse = rows.unique(return_inverse=True)
            text = self.encode(unique, patch)[inverse]
        text_vectors = vectors.new_zeros(vectors.shape)
        text_vectors[is_item] = text.to(vectors.dtype)
        return vectors + text_vectors

    def output_weights(
        self, item_matrix: torch.Tensor, output_layer: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) of the output layer over every id: the special tokens' rows of `output_layer`, then each
        item's text vector (`"text"`: no bias) or its text vector plus its output ID row and bias (`"text_id"`)."""
        if self.representation.id_embeddings:
            return output_layer.weight + F.pad(item_matrix, (0, 0, self.first_item_id, 0)), output_layer.bias
        bias = output_layer.bias
        if bias is not None:
            bias = torch.cat([bias, bias.new_zeros(len(item_matrix))])
        return torch.cat([output_layer.weight, item_matrix.to(output_layer.weight.dtype)]), bias


class TargetItemTexts(nn.Module):
    """The texts of a ranking head's target items, tokenized for the backbone's item encoder. The token ids are
    non-persistent buffers: the texts themselves travel in the patch's configuration (`PatchConfig.target_texts`)."""

    def __init__(self, max_text_length: int):
        super().__init__()
        empty = torch.zeros(0, max_text_length, dtype=torch.long)
        self.register_buffer("input_ids", empty, persistent=False)
        self.register_buffer("attention_mask", empty.clone(), persistent=False)
        self.texts: list[str] = []
        self.version = 0

    def put(self, texts: Sequence[str], encoder: ItemTextEncoder) -> None:
        input_ids, attention_mask = encoder.tokenize(texts)
        self.input_ids = input_ids.to(self.input_ids.device)
        self.attention_mask = attention_mask.to(self.attention_mask.device)
        self.texts = list(texts)
        self.version += 1


class TextTargetsMixin:
    """The ColdRec ranking head (`ItemRankingHead`; goes before it in the bases) over a backbone whose items come from
    their text: a target item's vector is the backbone's item encoder over the target's text, plus its row of the
    target-item table for `"text_id"` (`"text"` has no table), so a target item with a text and no training pair is
    ranked by its text. The item encoder is part of the backbone: frozen by the patching methods (which may give it
    the task's adapter, `patch_target`, through which the targets are encoded too) and FineCLS, trained by FineAll. The target texts are recorded in the patch (`PatchConfig.target_texts`) and given by
    `set_target_texts`; with ID items the head is `ItemRankingHead` as it was."""

    def _add_target_embeddings(self, config: PreTrainedConfig) -> None:
        super()._add_target_embeddings(config)
        self.target_texts = TargetItemTexts(config.max_text_length) if uses_item_text(config) else None
        if (
            self.target_texts is not None
            and not ITEM_REPRESENTATIONS[config.item_representation].id_embeddings
        ):
            self.target_embeddings = None

    def set_target_texts(self, texts: Sequence[str] | None) -> None:
        """Gives the target items their texts, in target-index order (that of the patch's `target_names`)."""
        count = self.config.num_target_items
        if self.target_texts is None:
            raise ValueError("Target texts are for a backbone whose items come from their text.")
        if texts is None or len(texts) != count or not all(isinstance(text, str) for text in texts):
            raise ValueError(
                f"This ranking head's backbone encodes items from their text: it needs the text of each of its "
                f"{count} target items in target order (target_texts), got {None if texts is None else len(texts)}."
            )
        self.target_texts.put(texts, self.base_model.item_text)

    def _target_text_vectors(self, candidates: torch.Tensor | None) -> torch.Tensor:
        """The item encoder's vectors of every target item (None) or of (batch, n) `candidates`: a training step
        that trains the item encoder encodes only its batch's distinct candidates; otherwise every target is encoded
        and reused."""
        encoder, texts, patch = self.base_model.item_text, self.target_texts, self.patch_name
        if not texts.texts:
            raise ValueError(
                "The ranking head's target items have no texts yet; give them with set_target_texts."
            )
        if candidates is not None and not encoder.reusable(patch):
            unique, inverse = candidates.unique(return_inverse=True)
            return encoder.encode_tokens(texts.input_ids[unique], texts.attention_mask[unique], patch)[
                inverse
            ]
        matrix = encoder.reuse(
            f"targets.{id(texts)}",
            texts.version,
            lambda: encoder.encode_tokens(texts.input_ids, texts.attention_mask, patch),
            patch,
        )
        return matrix if candidates is None else matrix[candidates]

    def target_matrix(self) -> torch.Tensor:
        if self.target_texts is None:
            return super().target_matrix()
        vectors = self._target_text_vectors(None)
        return vectors if self.target_embeddings is None else vectors + self.target_embeddings.weight

    def target_vectors(self, candidates: torch.Tensor) -> torch.Tensor:
        if self.target_texts is None:
            return super().target_vectors(candidates)
        vectors = self._target_text_vectors(candidates)
        return vectors if self.target_embeddings is None else vectors + self.target_embeddings(candidates)


class TextItemsMixin:
    """What a model whose items may come from their text adds to `PreTrainedModel` (goes before it in the bases):
    the item texts and the text tokenizer travel with `save_pretrained` / `from_pretrained` (`item_texts.json`,
    `item_encoder/`), `set_item_texts` gives every item its text, `add_item_texts` adds items by text at any time,
    and `from_item_encoder` builds a model around a pretrained text model. The encoder is the backbone's
    `item_text` (None for `item_representation="id"`)."""

    @property
    def item_text_encoder(self) -> ItemTextEncoder | None:
        return getattr(self.base_model, "item_text", None)

    def _require_item_text_encoder(self) -> ItemTextEncoder:
        encoder = self.item_text_encoder
        if encoder is None:
            raise ValueError(
                f"This model represents items by {self.config.item_representation!r}; item texts need "
                "item_representation='text' or 'text_id'."
            )
        return encoder

    def save_pretrained(self, save_directory, *args, **kwargs):
        result = super().save_pretrained(save_directory, *args, **kwargs)
        encoder = self.item_text_encoder
        if encoder is not None and kwargs.get("is_main_process", True):
            encoder.save(save_directory)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        encoder = model.item_text_encoder
        if encoder is not None:
            hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
            encoder.load(pretrained_model_name_or_path, subfolder=kwargs.get("subfolder") or "", **hub_kwargs)
            if encoder.num_items and encoder.first_item_id + encoder.num_items != model.config.vocab_size:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds texts of {encoder.num_items} items, but the model has "
                    f"{model.config.vocab_size - encoder.first_item_id}; its {ITEM_TEXTS_NAME} does not belong to "
                    "its config.json. Save the model again with save_pretrained."
                )
        return loaded

    @classmethod
    def from_item_encoder(
        cls,
        item_encoder: str | os.PathLike,
        item_tokenizer: ItemTokenizer,
        item_texts: Mapping[str, str],
        **config_kwargs,
    ) -> PreTrainedModel:
        """A new model whose items are encoded by the text model `item_encoder` (a Hub id, or a folder with
        `AutoModel` weights and its tokenizer): its configuration's other fields are `config_kwargs`
        (`item_representation` defaults to `"text"`), the rest of the model is newly initialised, and every item of
        `item_tokenizer` gets its text from `item_texts` (`load_item_encoder`)."""
        config_kwargs.setdefault("item_representation", "text")
        config = cls.config_class(
            vocab_size=len(item_tokenizer), **item_encoder_fields(item_encoder), **config_kwargs
        )
        model = cls(config)
        model.load_item_encoder(item_encoder, item_tokenizer, item_texts)
        return model

    def load_item_encoder(
        self, item_encoder: str | os.PathLike, item_tokenizer: ItemTokenizer, item_texts: Mapping[str, str]
    ) -> None:
        """Loads the pretrained weights and tokenizer of the text model `item_encoder` (the one the configuration was
        built for, `item_encoder_fields`) into the item encoder, and gives every item its text (`set_item_texts`)."""
        encoder = self._require_item_text_encoder()
        encoder.text_model.load_state_dict(AutoModel.from_pretrained(item_encoder).state_dict())
        encoder.text_tokenizer = AutoTokenizer.from_pretrained(item_encoder)
        self.set_item_texts(item_texts, item_tokenizer)

    def set_item_texts(self, item_texts: Mapping[str, str], item_tokenizer: ItemTokenizer) -> None:
        """Gives every item of `item_tokenizer`'s vocabulary its text from `item_texts` (item id -> text; texts of
        other items are ignored). Raises if a vocabulary item has none."""
        encoder = self._require_item_text_encoder()
        self._check_vocabulary(item_tokenizer)
        first = encoder.first_item_id
        items = item_tokenizer.convert_ids_to_tokens(list(range(first, len(item_tokenizer))))
        missing = [item for item in items if item not in item_texts]
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(items)} vocabulary items have no text, e.g. {missing[:5]}; every item "
                "needs one."
            )
        encoder.put_texts(range(first, len(item_tokenizer)), items, [item_texts[item] for item in items])

    def add_item_texts(self, item_texts: Mapping[str, str], item_tokenizer: ItemTokenizer) -> list[int]:
        """Adds items by their text, without training: items new to `item_tokenizer` join its vocabulary
        (`ItemTokenizer.add_items`) and the catalogue, known items get the given text. The new items are scored from
        their text at once (with `"text_id"`, their ID rows and output bias are zero). Returns the items' ids."""
        encoder = self._require_item_text_encoder()
        self._check_vocabulary(item_tokenizer)
        ids = item_tokenizer.add_items(list(item_texts))
        encoder.put_texts(ids, [str(item) for item in item_texts], list(item_texts.values()))
        vocab_size = len(item_tokenizer)
        for config in {id(c): c for c in (self.config, self.base_model.config)}.values():
            config.vocab_size = vocab_size
        if encoder.representation.id_embeddings:
            for table in (self.base_model.get_input_embeddings(), self.get_output_embeddings()):
                if table is not None:
                    grow_rows(table, vocab_size)
        return ids

    def _check_vocabulary(self, item_tokenizer: ItemTokenizer) -> None:
        if len(item_tokenizer) != self.config.vocab_size:
            raise ValueError(
                f"The item tokenizer has {len(item_tokenizer)} ids, the model {self.config.vocab_size}; pass the "
                "tokenizer saved with this model."
            )


__all__ = [
    "HUB_KWARGS",
    "ITEM_ENCODER_FOLDER",
    "ITEM_TEXTS_NAME",
    "ItemTextEncoder",
    "TargetItemTexts",
    "TextItemsMixin",
    "TextTargetsMixin",
    "first_item_id",
    "grow_rows",
    "id_embedding_rows",
    "item_encoder_fields",
    "uses_item_text",
]
