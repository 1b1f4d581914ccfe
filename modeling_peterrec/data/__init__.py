"""Data for PeterRec (see `movielens.py`)."""

from .movielens import *  # noqa: F403
from .movielens import __all__, default_cache_dir, movielens_raw_files  # noqa: F401
