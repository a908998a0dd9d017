"""``python -m fastbreak training-set``: a point-in-time training set from the raw events table.

See ``docs/training-sets.md``. Every row of the spine is kept, in order, with two columns per
feature: its value as the feature API would have answered at the row's time, and the event time
of the newest event in it.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

from fastbreak.cli import UsageError, key_value
from fastbreak.cli._progress import RichProgress
from fastbreak.offline.engines import DEFAULT_ENGINE, ENGINES

if TYPE_CHECKING:
    from rich.console import Console

NAME = "training-set"
HELP = "build a point-in-time training set: a spine of labels plus features, as Parquet"
RAW_ENVIRONMENT = "FASTBREAK_RAW"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spine", required=True, metavar="PATH",
                        help="labels: Parquet (file or folder) or CSV, local or s3://")
    parser.add_argument("--features", required=True, nargs="+", metavar="NAME",
                        help="group or group.feature_window names (space or comma separated), "
                        "e.g. user_engagement or user_engagement.views_1h")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="the training set to write (Parquet), local or s3://")
    parser.add_argument("--raw", default=os.environ.get(RAW_ENVIRONMENT), metavar="PATH_OR_S3_URL",
                        help="the raw events table: a folder or s3://bucket/raw (default: "
                        f"${RAW_ENVIRONMENT})")
    parser.add_argument("--engine", choices=sorted(ENGINES), default=DEFAULT_ENGINE,
                        help=f"default {DEFAULT_ENGINE}")
    parser.add_argument("--as-served", action="store_true",
                        help="only events that had reached the stream by each row's time (what "
                        "was really served), instead of every event dated up to it")
    parser.add_argument("--timestamp-column", default="timestamp", metavar="COLUMN",
                        help="the spine's time column (default timestamp): a timestamp with a "
                        "time zone, or epoch milliseconds")
    parser.add_argument("--key-column", action="append", type=key_value, default=[],
                        metavar="FIELD=COLUMN",
                        help="read an entity key from another column, e.g. user_id=fan_id "
                        "(default: the column named as the key field)")
    parser.add_argument("--timezone", metavar="ZONE",
                        help="the zone of a spine time column without one, e.g. UTC or "
                        "Europe/Paris")
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="S3 endpoint for s3:// locations, e.g. the local platform's")
    parser.add_argument("--region", help="S3 region for s3:// locations")


def run(args: argparse.Namespace, console: Console) -> int:
    from fastbreak.offline.engines import engine
    from fastbreak.offline.raw_files import S3Options
    from fastbreak.offline.request import TrainingSetRequest
    from fastbreak.offline.selection import TrainingSetError

    if not args.raw:
        raise UsageError(f"no raw events table: pass --raw or set ${RAW_ENVIRONMENT}")
    request = TrainingSetRequest(
        spine=args.spine,
        features=tuple(name for given in args.features for name in given.split(",") if name),
        raw=args.raw, out=args.out, timestamp_column=args.timestamp_column,
        key_columns=dict(args.key_column), timezone=args.timezone, as_served=args.as_served,
        s3=S3Options(args.endpoint_url, args.region),
    )
    started = time.perf_counter()
    _retaining_memory_pool()
    with RichProgress(console) as progress:
        try:
            _, summary = engine(args.engine)(request, progress=progress)
        except TrainingSetError as error:
            raise UsageError(str(error)) from None
    per_entity = len(summary.reference_features)
    console.print(
        f"wrote {args.out}: {summary.rows:,} rows, {len(summary.features)} features "
        f"({len(summary.features) - per_entity} in SQL, {per_entity} per entity), "
        f"{summary.duplicates_dropped:,} duplicate copies dropped, "
        f"in {time.perf_counter() - started:.1f} s",
        markup=False, highlight=False, soft_wrap=True,
    )
    return 0


def _retaining_memory_pool() -> None:
    """Have Arrow allocate from jemalloc and keep the pages it frees (the system allocator
    where the wheel lacks jemalloc). The builder allocates and frees arrays of hundreds of MB
    many times over; mimalloc, pyarrow's default, hands their pages back to the kernel and
    faults them in again, which costs about 1.5 s of system time on 10M events x 1M spine
    rows. This process is ours to tune, and it ends with the build."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(-1)
    except NotImplementedError:
        pa.set_memory_pool(pa.system_memory_pool())
