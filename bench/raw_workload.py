"""The benchmark workload as raw-table files, generated in DuckDB (millions of rows in seconds).

The shape of ``bench.workload`` (Zipf(1.1) over 100,000 users and 20,000 contents; half content
views, 30 % video plays, 10 % clicks, 10 % game follows), spread over several days of event
time and written as the raw table's Parquet partitions (``fastbreak.offline.raw``), with what
the processor drops mixed in: late copies (some beyond the two-hour lateness of user groups),
producer duplicates, events dated ahead of their arrival, and refused records. Four shards,
partitioned by user, with 56-digit sequence numbers in arrival order.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from fastbreak.definitions import CATALOG
from fastbreak.definitions.model import FieldType
from fastbreak.offline.raw import raw_columns

T0 = 1_795_717_800_000  # 2026-11-26T18:30:00Z, as bench.workload
DAY_MS = 86_400_000
SHARDS = 4
_SEQUENCE_PREFIX = "49590338271490256608559692538361571095"  # + 18 digits: 56
_SQL_TYPES = {FieldType.STRING: "VARCHAR", FieldType.INT: "BIGINT", FieldType.DOUBLE: "DOUBLE",
              FieldType.BOOL: "BOOLEAN", FieldType.TIMESTAMP: "TIMESTAMPTZ"}


@dataclass(frozen=True)
class Workload:
    events: int
    spine_rows: int
    days: int = 8
    users: int = 100_000
    contents: int = 20_000
    seed: float = 0.42
    late_share: float = 0.004  # 1 to 3 hours late: about half beyond the two-hour lateness
    duplicate_share: float = 0.005
    future_share: float = 0.001
    refused_share: float = 0.001


def generate(workload: Workload, raw: Path, spine: Path) -> None:
    """Write the raw table under ``raw`` and a spine (``user_id``, ``timestamp``, ``label``:
    users drawn as the events draw them, times uniform over the span) to ``spine``."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SELECT setseed({workload.seed})")
        _zipf(con, "zipf_users", workload.users)
        _zipf(con, "zipf_contents", workload.contents)
        span = workload.days * DAY_MS
        con.execute(f"""
            CREATE TABLE draws AS
            SELECT i, {T0} + i * {span} // {workload.events} AS t_ms, random() AS kind,
                   random() AS u, random() AS c, random() AS w, random() AS g,
                   random() AS delay, random() AS fate
            FROM range({workload.events}) t(i)
        """)
        late = workload.late_share
        future = late + workload.future_share
        duplicate = future + workload.duplicate_share
        refused = duplicate + workload.refused_share
        con.execute(f"""
            CREATE TABLE events AS
            SELECT d.i, d.t_ms,
                   CASE WHEN d.fate < {late} THEN d.t_ms + 3600000 + (d.delay * 7200000)::BIGINT
                        WHEN d.fate < {future} THEN d.t_ms - (d.delay * 240000)::BIGINT
                        ELSE d.t_ms + 200 + (d.delay * 3000)::BIGINT END AS a_ms,
                   d.fate, zu.rank AS user_rank, d.kind, zc.rank AS content_rank, d.w, d.g
            FROM draws d
            ASOF JOIN zipf_users zu ON d.u <= zu.cum
            ASOF JOIN zipf_contents zc ON d.c <= zc.cum
        """)
        con.execute("DROP TABLE draws")
        # A producer retry is a second copy, a few seconds later; a refused record keeps
        # only its Kinesis metadata and the processor's reason.
        con.execute(f"""
            COPY (
                SELECT {_columns()},
                       strftime(make_timestamp(partition_ms * 1000), '%Y-%m-%d') AS event_date,
                       strftime(make_timestamp(partition_ms * 1000), '%H') AS event_hour
                FROM (
                    SELECT *, CASE WHEN refused THEN a_ms ELSE t_ms END AS partition_ms
                    FROM (
                        SELECT *, 0 AS copy, fate >= {duplicate} AND fate < {refused} AS refused
                        FROM events
                    UNION ALL
                        SELECT * REPLACE (a_ms + 1000 + (w * 4000)::BIGINT AS a_ms), 1, false
                        FROM events WHERE fate >= {future} AND fate < {duplicate}
                    )
                )
            ) TO '{raw}' (FORMAT parquet, PARTITION_BY (event_date, event_hour),
                          OVERWRITE_OR_IGNORE)
        """)
        con.execute(f"""
            COPY (
                SELECT 'user-' || lpad(zu.rank::VARCHAR, 6, '0') AS user_id,
                       make_timestamp(({T0} + (s.t * {span})::BIGINT) * 1000)::TIMESTAMPTZ
                           AS timestamp,
                       (s.l * 2)::INTEGER AS label
                FROM (SELECT i, random() AS u, random() AS t, random() AS l
                      FROM range({workload.spine_rows}) r(i)) s
                ASOF JOIN zipf_users zu ON s.u <= zu.cum
                ORDER BY s.i
            ) TO '{spine}' (FORMAT parquet)
        """)


def _zipf(con: duckdb.DuckDBPyConnection, name: str, n: int) -> None:
    """Ranks 0..n-1 with P(k) proportional to 1 / (k + 1) ** 1.1, by cumulative share."""
    con.execute(f"""
        CREATE TABLE {name} AS
        SELECT rank, sum(1.0 / pow(rank + 1, 1.1)) OVER (ORDER BY rank) /
                     sum(1.0 / pow(rank + 1, 1.1)) OVER () AS cum
        FROM range({n}) t(rank)
    """)


def _columns() -> str:
    """The raw table's columns (``fastbreak.offline.raw``) of each generated row: the envelope
    and payload of ``bench.workload``'s events, then the Kinesis metadata."""
    view, play = "kind < 0.5", "kind >= 0.5 AND kind < 0.8"
    click, follow = "kind >= 0.8 AND kind < 0.9", "kind >= 0.9"
    content = "lpad(content_rank::VARCHAR, 5, '0')"
    user = "'user-' || lpad(user_rank::VARCHAR, 6, '0')"
    values = {
        "event_type": f"CASE WHEN {view} THEN 'content_view' WHEN {play} THEN 'video_play' "
                      f"WHEN {click} THEN 'content_click' ELSE 'game_follow' END",
        "schema_version": f"(CASE WHEN {view} THEN 2 ELSE 1 END)::BIGINT",
        "event_id": "'1-' || lpad(i::VARCHAR, 8, '0') || '-5f0c1d7e-9a4b-4c1e-8f7d'",
        "event_time": "make_timestamp(t_ms * 1000)::TIMESTAMPTZ",
        "user_id": user,
        "content_id": f"CASE WHEN {view} OR {click} THEN 'article-' || {content} "
                      f"WHEN {play} THEN 'clip-' || {content} END",
        "sport": f"CASE WHEN {view} THEN 'basketball' END",
        "surface": f"CASE WHEN {view} THEN 'game_page' END",
        "position": f"CASE WHEN {click} THEN floor(w * 21)::BIGINT END",
        "game_id": f"CASE WHEN {play} OR {follow} THEN "
                   "'game-' || lpad(floor(g * 50)::BIGINT::VARCHAR, 3, '0') END",
        "team_id": f"CASE WHEN {follow} THEN "
                   "'team-' || lpad(floor(w * 60)::BIGINT::VARCHAR, 2, '0') END",
        "watch_seconds": f"CASE WHEN {play} THEN (floor(w * 600) + 1) / 2 END",
        "kinesis_shard_id": f"'shardId-00000000000' || (user_rank % {SHARDS})::VARCHAR",
        # arrival order within a shard: 56 digits, the arrival time then a tie-breaker
        "kinesis_sequence_number": f"'{_SEQUENCE_PREFIX}' || lpad((a_ms - {T0 - DAY_MS})"
                                   "::VARCHAR, 10, '0') || lpad((i * 2 + copy)::VARCHAR, 8, '0')",
        "kinesis_sub_sequence": "0::BIGINT",
        "kinesis_partition_key": user,
        "kinesis_arrival_time": "make_timestamp(a_ms * 1000)::TIMESTAMPTZ",
        "rejection": "CASE WHEN refused THEN 'wrong_type' END",
        "raw_payload": "CASE WHEN refused THEN '{\"event_type\": \"content_view\"}' END",
    }
    metadata = {name for name, _ in raw_columns(CATALOG)} - {
        name for name, _ in CATALOG.offline_columns()}
    return ", ".join(
        f"{values[name]} AS {name}" if name in metadata
        else f"CASE WHEN refused THEN NULL ELSE {values[name]} END AS {name}" if name in values
        else f"NULL::{_SQL_TYPES[kind]} AS {name}"
        for name, kind in raw_columns(CATALOG)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.raw_workload",
        description="Write a raw events table (Parquet partitions) and a spine of labels with "
        "the benchmark's workload, to try the training-set builder on.")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--spine-rows", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True,
                        help="a folder: gets raw/ and spine.parquet (replacing earlier ones)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is not a folder")
    shutil.rmtree(args.out / "raw", ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    generate(Workload(args.events, args.spine_rows, days=args.days), args.out / "raw",
             args.out / "spine.parquet")
    print(f"wrote {args.out / 'raw'} and {args.out / 'spine.parquet'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
