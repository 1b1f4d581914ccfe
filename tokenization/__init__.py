"""The public home of PeterRec's item tokenizer: `from tokenization import ItemTokenizer`.

The implementation lives beside the model, in `modeling_peterrec/tokenization_peterrec.py`, so that the package
never imports this top-level name (a folder holding an unrelated `tokenization.py` cannot shadow it).
"""

from modeling_peterrec.tokenization_peterrec import SPECIAL_TOKENS, ItemTokenizer, UnknownItems

__all__ = ["ItemTokenizer", "SPECIAL_TOKENS", "UnknownItems"]
