"""The field checks the family's configurations share (`PeterRecConfig`, `CmnRecConfig`): each error names the
configuration class, the field, the value and what is allowed.

Saved folders carry this file next to the configuration files for `trust_remote_code` loading (transformers copies
every relative import), so it imports nothing outside the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKEN_FIELDS = ("pad_token_id", "unk_token_id", "mask_token_id", "tcl_token_id")
"""The configuration fields of the `ItemTokenizer`'s special tokens `[PAD]`, `[UNK]`, `[MASK]` and `[TCL]`."""


class FieldChecks:
    """Checks for the fields of a configuration; goes before `PreTrainedConfig` in the bases."""

    def _check_positive_integers(self, names: Iterable[str]) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}.")

    @classmethod
    def _check_choice(cls, name: str, value: object, allowed: tuple) -> None:
        if value not in allowed:
            raise ValueError(
                f"{cls.__name__}.{name}={value!r} is not supported; choose one of {list(allowed)}."
            )

    def _check_special_token_ids(self) -> None:
        """The special-token ids are distinct and inside the vocabulary `[0, vocab_size)`."""
        special = {name: getattr(self, name) for name in SPECIAL_TOKEN_FIELDS}
        if len(set(special.values())) != len(special):
            raise ValueError(f"{type(self).__name__} special token ids must be distinct, got {special}.")
        for name, value in special.items():
            if not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{type(self).__name__}.{name}={value} is outside the vocabulary [0, {self.vocab_size})."
                )


__all__ = ["FieldChecks", "SPECIAL_TOKEN_FIELDS"]
