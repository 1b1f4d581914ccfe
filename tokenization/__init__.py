"""Item-vocabulary tokenizer of PeterRec."""

from .tokenization_peterrec import SPECIAL_TOKENS, ItemTokenizer

__all__ = ["ItemTokenizer", "SPECIAL_TOKENS"]
