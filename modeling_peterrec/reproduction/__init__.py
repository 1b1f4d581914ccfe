"""Reproduction of the paper's experiments (Section 4, RQ1-RQ4) on MovieLens-1M: `peterrec reproduce`."""

from .runner import *  # noqa: F403
from .runner import __all__  # noqa: F401
