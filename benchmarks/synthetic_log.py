"""A synthetic interaction log with a real log's skew, written as user-partitioned sorted Parquet (or CSV) shards.

Item popularity follows a Zipf law (the item of rank r is drawn with probability proportional to r^-a, a = 1 by
default, over a finite catalogue), user history lengths a log-normal law (sigma 1.2: most users have a few events,
a few have thousands), and each user's events have non-decreasing timestamps with ties (as in MovieLens, SPEC §5).
Users are numbered 0..num_users-1 and shard k holds a contiguous range of them, sorted by (user, timestamp): the
layout `data.streaming` reads. Memory stays bounded whatever the size: users are drawn `users_per_chunk` at a time
and each chunk is written as one Parquet row group (or appended to the CSV), so 10M users x 1M items (~500M
events, `--num_users 10000000 --num_items 1000000 --mean_length 50`) needs the same few hundred MB as 10K users.

    python -m benchmarks.synthetic_log /tmp/log --num_users 200000 --num_items 100000 --num_shards 8
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

LENGTH_SIGMA = 1.2
"""Spread of the log-normal history lengths: about 1% of users have more than 10x the mean length."""


def zipf_cdf(num_items: int, exponent: float) -> np.ndarray:
    """Cumulative probabilities of the item ranks 0..num_items-1 under a finite Zipf law (float64, 8 bytes an item)."""
    weights = np.arange(1, num_items + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def history_lengths(rng: np.random.Generator, num_users: int, mean_length: float) -> np.ndarray:
    """Long-tailed history lengths (log-normal with mean `mean_length`), at least 1 each."""
    mu = math.log(mean_length) - LENGTH_SIGMA**2 / 2
    return np.maximum(np.rint(rng.lognormal(mu, LENGTH_SIGMA, num_users)), 1).astype(np.int64)


def chunk_table(
    rng: np.random.Generator, first_user: int, num_users: int, cdf: np.ndarray, mean_length: float
) -> pa.Table:
    """(user, item, timestamp) rows of users `first_user`.. `first_user + num_users - 1`, sorted by (user, time)."""
    lengths = history_lengths(rng, num_users, mean_length)
    users = np.repeat(np.arange(first_user, first_user + num_users, dtype=np.int64), lengths)
    items = np.searchsorted(cdf, rng.random(len(users)), side="right").astype(np.int64)
    # Gaps of 0 (a tie, 3 times in 4 as in MovieLens) or 1..3600 seconds after a per-user start time.
    gaps = np.where(rng.random(len(users)) < 0.75, 0, rng.integers(1, 3600, len(users)))
    starts = np.cumsum(lengths) - lengths
    times = np.cumsum(gaps)
    times -= np.repeat(times[starts], lengths)
    times += np.repeat(rng.integers(1_500_000_000, 1_600_000_000, num_users), lengths)
    return pa.table({"user": users, "item": items, "timestamp": times})


def write_log(
    folder: str | Path,
    num_users: int,
    num_items: int,
    mean_length: float = 50.0,
    num_shards: int = 8,
    zipf_exponent: float = 1.0,
    users_per_chunk: int = 20_000,
    file_format: str = "parquet",
    seed: int = 0,
) -> dict:
    """Writes the log into `folder` as `part-00000.parquet`, ... (or `.csv`); returns its sizes.

    Each shard draws from its own seeded generator, so a shard's content depends only on (seed, shard).
    """
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cdf = zipf_cdf(num_items, zipf_exponent)
    bounds = np.linspace(0, num_users, num_shards + 1).astype(np.int64)
    num_events = 0
    files = []
    for shard in range(num_shards):
        rng = np.random.default_rng([seed, shard])
        path = folder / f"part-{shard:05d}.{file_format}"
        writer = None
        for first in range(int(bounds[shard]), int(bounds[shard + 1]), users_per_chunk):
            count = min(users_per_chunk, int(bounds[shard + 1]) - first)
            table = chunk_table(rng, first, count, cdf, mean_length)
            num_events += table.num_rows
            if writer is None:
                writer = (
                    pq.ParquetWriter(path, table.schema)
                    if file_format == "parquet"
                    else pa_csv.CSVWriter(path, table.schema)
                )
            writer.write_table(table)
        if writer is not None:
            writer.close()
            files.append(str(path))
    return {"files": files, "num_users": num_users, "num_items": num_items, "num_events": num_events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--num_users", type=int, default=100_000)
    parser.add_argument("--num_items", type=int, default=100_000)
    parser.add_argument("--mean_length", type=float, default=50.0)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--zipf_exponent", type=float, default=1.0)
    parser.add_argument("--users_per_chunk", type=int, default=20_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = write_log(
        args.folder,
        args.num_users,
        args.num_items,
        args.mean_length,
        args.num_shards,
        args.zipf_exponent,
        args.users_per_chunk,
        args.format,
        args.seed,
    )
    print(
        f"{written['num_events']:,} events of {written['num_users']:,} users in {len(written['files'])} files"
    )


if __name__ == "__main__":
    main()
