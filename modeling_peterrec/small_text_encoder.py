"""A small text encoder built on the spot, for where no pretrained text model can be downloaded (SPEC §10).

Adapter4Rec's item encoder is a pretrained BERT-base or RoBERTa-base from the Hub (`--item_encoder
bert-base-uncased`). Offline, `build_small_text_encoder` makes a stand-in with the same interface: a word-level
vocabulary built with `tokenizers` over the texts it is given (lower-cased, split on spaces and punctuation; words it
has not seen read as [UNK]) and a small randomly initialised BERT (`transformers.BertConfig`, by default 2 layers of
width 64). It is saved as a normal Hugging Face folder (model and tokenizer) that the item encoder loads like any Hub
model; its weights learn only from next-item prediction, so it is no pretrained language model.

`pretrain` builds the vocabulary over every item text of the catalogue, all domains: a pretrained tokenizer knows
the target domain's words too, and a vocabulary of the source items alone would read ML-1M ColdRec's target genres
(Animation, Fantasy, Musical) as [UNK]. This leaks no label: an item's text is item metadata (title, year, genres),
known for every item of the catalogue before any user interacts with it; the vocabulary is the set of words of those
texts, their ids ordered by how often a word occurs in them, and nothing in it depends on a user, an interaction, a
split or a task label. A word that only target items' texts contain gets its own embedding row, which gets no
gradient in pretraining (no source item's text contains it): apart from weight decay it stays at its random
initialisation until a transfer method trains the item encoder (FineAll), but it is a word of its own instead of one
[UNK] shared by all unknown words.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from ._io import atomic_folder

TEXT_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
"""BERT's special tokens, which the small encoder's vocabulary starts with ([PAD] has id 0)."""


def word_level_tokenizer(
    texts: Iterable[str], max_length: int, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """A BERT-style tokenizer whose vocabulary is every word of `texts` seen at least `min_frequency` times:
    lower-cased, split on whitespace and punctuation, "[CLS] text [SEP]"."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=TEXT_SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        special_tokens=list(TEXT_SPECIAL_TOKENS.values()), min_frequency=min_frequency
    )
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = TEXT_SPECIAL_TOKENS["cls_token"], TEXT_SPECIAL_TOKENS["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=max_length, **TEXT_SPECIAL_TOKENS
    )


def build_small_text_encoder(
    texts: Iterable[str],
    folder: str | os.PathLike,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    max_length: int = 64,
    min_frequency: int = 1,
    seed: int = 0,
) -> Path:
    """Writes a small text encoder to `folder`: the word-level tokenizer of `texts` and a randomly initialised BERT
    (`hidden_size` wide, feed-forward 4x, `num_hidden_layers` layers, `max_length` positions), loadable with
    `AutoModel` / `AutoTokenizer` or as `--item_encoder folder`. The folder appears complete or not at all."""
    tokenizer = word_level_tokenizer(texts, max_length, min_frequency)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return folder


__all__ = ["TEXT_SPECIAL_TOKENS", "build_small_text_encoder", "word_level_tokenizer"]
