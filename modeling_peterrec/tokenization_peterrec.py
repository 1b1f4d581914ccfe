"""Item-vocabulary tokenizer for PeterRec: one persisted vocabulary of item ids and four special tokens."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging

logger = logging.get_logger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[TCL]")
TCL_POSITIONS = (None, "end", "both")
MAX_TCL_SLOTS = 2  # tcl_position="both"

Item = str | int
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class UnknownItems:
    """How many items of some sequences are outside the vocabulary (they would all become `[UNK]`).

    `count` unknown items out of `total` items (every occurrence counts), `share = count / total` (0.0 when there
    are no items), and up to a few distinct unknown items in `examples`, in order of first appearance.
    """

    count: int
    total: int
    share: float
    examples: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"{self.share:.1%} of the items ({self.count:,} of {self.total:,}) are not in this backbone's "
            f"vocabulary, e.g. {list(self.examples)}"
        )


class ItemTokenizer(PreTrainedTokenizerFast):
    """Maps item ids (strings or integers) to vocabulary ids, on a `tokenizers` WordLevel model.

    `[PAD]`, `[UNK]`, `[MASK]` and `[TCL]` (the paper's classification token, Section 3.3) take ids 0 to 3, and
    items follow from id 4 (`first_item_id`). Sequences are lists of items, oldest first. They are left-padded,
    and truncation keeps the most recent items. With `tcl_position="end"` the tokenizer appends `[TCL]` (the
    causal readout, Figure 2(a)); with `"both"` it puts `[TCL]` at both ends (the non-causal readout,
    Figure 2(c)); `add_special_tokens=False` leaves sequences as they are (pretraining). `model_max_length` (saved
    with the tokenizer) caps a call without explicit `truncation`: longer sequences keep their most recent items,
    with one warning per tokenizer. `check_unknown_items` tells how much of some data the vocabulary misses.
    """

    vocab_files_names = {"tokenizer_file": TOKENIZER_FILE}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"
    truncation_side = "left"

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        tokenizer_file: str | None = None,
        tcl_position: str | None = "end",
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
        mask_token: str = "[MASK]",
        tcl_token: str = "[TCL]",
        **kwargs,
    ):
        if tcl_position not in TCL_POSITIONS:
            raise ValueError(
                f"tcl_position={tcl_position!r} is not supported; choose one of {list(TCL_POSITIONS)}."
            )
        kwargs.pop("tokenizer_object", None)
        kwargs.pop("extra_special_tokens", None)
        pad_token, unk_token, mask_token, tcl_token = map(str, (pad_token, unk_token, mask_token, tcl_token))
        if tokenizer_file is not None:
            backend = Tokenizer.from_file(tokenizer_file)
        else:
            specials = (pad_token, unk_token, mask_token, tcl_token)
            vocab = dict(vocab) if vocab else {}
            for index, token in enumerate(specials):
                if vocab.setdefault(token, index) != index:
                    raise ValueError(f"{token} must have id {index}, got {vocab[token]}.")
            backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
        if backend.get_vocab_size() <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"The vocabulary{f' in {tokenizer_file}' if tokenizer_file else ''} has no items, only the special "
                "tokens; build the tokenizer with ItemTokenizer.from_sequences(training_sequences) or load a saved "
                "one with ItemTokenizer.from_pretrained(folder)."
            )
        self._tcl_position = tcl_position
        self._warned_truncation = False
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("truncation_side", "left")
        super().__init__(
            tokenizer_object=backend,
            pad_token=pad_token,
            unk_token=unk_token,
            mask_token=mask_token,
            extra_special_tokens={"tcl_token": tcl_token},
            tcl_position=tcl_position,
            **kwargs,
        )
        self.add_special_tokens({"additional_special_tokens": [tcl_token]})
        self._set_tcl_processor()

    @classmethod
    def _from_pretrained(cls, resolved_vocab_files, pretrained_model_name_or_path, *args, **kwargs):
        """Refuses a folder (or Hub repo) without the vocabulary file instead of loading an empty vocabulary."""
        if resolved_vocab_files.get("tokenizer_file") is None:
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path} has no {TOKENIZER_FILE}, the item vocabulary, so no tokenizer can "
                "be loaded from it. Save the tokenizer with the backbone (tokenizer.save_pretrained(folder) next to "
                "model.save_pretrained(folder)), or pass the folder that holds the tokenizer."
            )
        return super()._from_pretrained(resolved_vocab_files, pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_sequences(
        cls,
        sequences: Iterable[Sequence[Item]],
        min_count: int = 1,
        max_items: int | None = None,
        **kwargs,
    ) -> ItemTokenizer:
        """Builds the vocabulary from training sequences: items seen at least `min_count` times, most frequent first
        (ties by item id), at most `max_items` of them (the most frequent), so that the vocabulary is the same for
        the same data. `from_counts` builds it from counts made elsewhere (e.g. `data.count_items` streaming a
        log)."""
        counts = Counter(str(item) for sequence in sequences for item in sequence)
        return cls.from_counts(counts, min_count, max_items, **kwargs)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], min_count: int = 1, max_items: int | None = None, **kwargs
    ) -> ItemTokenizer:
        """The vocabulary of `from_sequences` from item occurrence counts (item id as a string -> count)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}.")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {max_items}.")
        clash = sorted(set(counts) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(
                f"Items {clash} collide with special tokens; rename them before building the vocabulary."
            )
        kept = sorted(
            (item for item, n in counts.items() if n >= min_count), key=lambda item: (-counts[item], item)
        )[:max_items]
        if not kept:
            raise ValueError(
                f"No item occurs at least min_count={min_count} times; lower min_count or add data."
            )
        vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
        vocab.update({item: i + len(SPECIAL_TOKENS) for i, item in enumerate(kept)})
        return cls(vocab=vocab, **kwargs)

    @property
    def first_item_id(self) -> int:
        """Id of the first item: every id below it is a special token."""
        return len(SPECIAL_TOKENS)

    @property
    def tcl_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.tcl_token)

    @property
    def tcl_position(self) -> str | None:
        return self._tcl_position

    @tcl_position.setter
    def tcl_position(self, value: str | None) -> None:
        if value not in TCL_POSITIONS:
            raise ValueError(f"tcl_position={value!r} is not supported; choose one of {list(TCL_POSITIONS)}.")
        self._tcl_position = value
        self.init_kwargs["tcl_position"] = value
        self._set_tcl_processor()

    @property
    def model_max_length(self) -> int:
        """Longest input the model takes, `[TCL]` tokens included (saved in tokenizer_config.json).

        A call without an explicit `truncation` keeps the most recent items of longer sequences, warning once.
        Unset, it is transformers' "no limit" (1e30)."""
        return self._model_max_length

    @model_max_length.setter
    def model_max_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= MAX_TCL_SLOTS:
            raise ValueError(
                f"model_max_length must be an integer above {MAX_TCL_SLOTS} (room for items next to the "
                f"[TCL] tokens), got {value!r}."
            )
        self._model_max_length = value

    def _set_tcl_processor(self) -> None:
        tcl = [(self.tcl_token, self.tcl_token_id)]
        template = {None: "$A", "end": "$A [TCL]", "both": "[TCL] $A [TCL]"}[self._tcl_position]
        self.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=template.replace("[TCL]", self.tcl_token), special_tokens=tcl if self._tcl_position else []
        )

    def unknown_share(self, sequences: Iterable[Sequence[Item]], max_examples: int = 5) -> UnknownItems:
        """Counts the item occurrences of `sequences` that are outside the vocabulary (and would become `[UNK]`)."""
        vocab = self.get_vocab()
        count = total = 0
        examples: dict[str, None] = {}
        for sequence in sequences:
            for item in map(str, sequence):
                total += 1
                if item not in vocab:
                    count += 1
                    if len(examples) < max_examples:
                        examples[item] = None
        return UnknownItems(
            count=count, total=total, share=count / total if total else 0.0, examples=tuple(examples)
        )

    def check_unknown_items(
        self,
        sequences: Iterable[Sequence[Item]],
        warn_above: float = 0.05,
        error_above: float = 0.5,
        allow_unknown_items: bool = False,
    ) -> UnknownItems:
        """Measures the unknown share of `sequences` (see `unknown_share`) and returns it.

        Logs a warning when the share is above `warn_above`, and raises a `ValueError` when it is above
        `error_above` (the data and the backbone do not match), unless `allow_unknown_items` (then it only warns):
        items outside the vocabulary get a clear word, not a silent `[UNK]`.
        """
        if not 0.0 <= warn_above <= error_above <= 1.0:
            raise ValueError(f"Need 0 <= warn_above <= error_above <= 1, got {warn_above} and {error_above}.")
        unknown = self.unknown_share(sequences)
        if unknown.share > error_above and not allow_unknown_items:
            raise ValueError(
                f"{unknown.describe()}; the data and the backbone do not match (different item ids?). Pass "
                "allow_unknown_items=True to go on anyway."
            )
        if unknown.share > warn_above:
            logger.warning(f"{unknown.describe()}; they are all read as [UNK].")
        return unknown

    def add_items(self, items: Iterable[Item]) -> list[int]:
        """Appends the items not yet in the vocabulary (new ids after the last one, in the given order) and returns
        the id of every given item. Items known by their text (`add_item_texts` of a text-item model) join the
        vocabulary this way, without retraining."""
        vocab = self.get_vocab()
        tokens = [str(item) for item in items]
        clash = sorted(set(tokens) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(f"Items {clash} collide with special tokens; rename them before adding them.")
        new = [token for token in dict.fromkeys(tokens) if token not in vocab]
        if new:
            vocab.update({token: len(vocab) + i for i, token in enumerate(new)})
            # The word-level model is rebuilt rather than given "added tokens", which would also match inside
            # longer item ids.
            self.backend_tokenizer.model = models.WordLevel(vocab=vocab, unk_token=self.unk_token)
        return [vocab[token] for token in tokens]

    def encode_items(self, items: Sequence[Item]) -> list[int]:
        """Item ids of one sequence, without special tokens or padding; unknown items map to `[UNK]`."""
        return self.convert_tokens_to_ids(self._as_tokens(items, 0))

    def __call__(self, sequences: Sequence[Item] | Sequence[Sequence[Item]], **kwargs):
        """Encodes one sequence (a list of items) or a batch (a list of lists of items).

        Accepts the usual keyword arguments (`padding`, `truncation`, `max_length`, `return_tensors`,
        `add_special_tokens`); `is_split_into_words` is implied.
        """
        if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Sequence):
            raise TypeError(
                "ItemTokenizer takes a list of items or a list of such lists, not "
                f"{type(sequences).__name__}."
            )
        batched = len(sequences) > 0 and not isinstance(sequences[0], (str, int))
        batch = [self._as_tokens(seq, i) for i, seq in enumerate(sequences if batched else [sequences])]
        specials = self.num_special_tokens_to_add() if kwargs.get("add_special_tokens", True) else 0
        if kwargs.get("truncation") is None:
            budget = self.model_max_length - specials
            if any(len(tokens) > budget for tokens in batch):
                self._warn_truncation_once(budget, f"model_max_length={self.model_max_length}")
                batch = [tokens[-budget:] for tokens in batch]
        elif kwargs["truncation"] not in (False, "do_not_truncate") and kwargs.get("max_length") is not None:
            budget = kwargs["max_length"] - specials
            if any(len(tokens) > budget for tokens in batch):
                self._warn_truncation_once(budget, f"max_length={kwargs['max_length']}")
        return super().__call__(batch if batched else batch[0], is_split_into_words=True, **kwargs)

    def _warn_truncation_once(self, budget: int, limit: str) -> None:
        if not self._warned_truncation:
            self._warned_truncation = True
            logger.warning(
                f"Sequences longer than {budget} items are truncated from the left to fit {limit} (the most recent "
                "items are kept); this tokenizer warns only once."
            )

    def _as_tokens(self, items: Sequence[Item], index: int) -> list[str]:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise TypeError(f"Sequence {index} must be a list of item ids, got {type(items).__name__}.")
        if len(items) == 0:
            raise ValueError(f"Sequence {index} is empty; every user needs at least one item.")
        bad = [item for item in items if not isinstance(item, (str, int)) or isinstance(item, bool)]
        if bad:
            raise TypeError(f"Sequence {index} holds {bad[:3]!r}; item ids must be strings or integers.")
        return [str(item) for item in items]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(items={len(self) - self.first_item_id}, tcl_position={self.tcl_position!r}, "
            f"special_tokens={json.dumps(dict(zip(SPECIAL_TOKENS, range(4), strict=True)))})"
        )


__all__ = ["ItemTokenizer", "SPECIAL_TOKENS", "UnknownItems"]
