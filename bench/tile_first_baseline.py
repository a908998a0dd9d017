"""The baseline of ``bench.training_set``: a bare DuckDB tile-first SQL that computes the counts and
sums of ``user_engagement`` for every spine row, nothing else.

Tile-first, as feature stores compute windows (Chronon, Tecton): events are aggregated to (user,
tile) once per tile size; a spine row's window takes the full tiles before its own (a RANGE
window over the tiles and the spine rows, robust to a hot user) plus the events of its own tile
up to its time (a running total inside the tile, joined ASOF). No duplicate or lateness rule, no
exact sums, no sketch: the least a training set of these counts and sums needs.

    python -m bench.tile_first_baseline RAW_FOLDER SPINE OUT
"""

from __future__ import annotations

import sys

import duckdb

# (tile seconds, window seconds, [(output column, the event column it sums)])
SIZES = (
    (60, 3600, [("views_1h", "is_view"), ("clicks_1h", "is_click"),
                ("watch_seconds_1h", "watch_seconds")]),
    (3600, 86400, [("views_24h", "is_view"), ("clicks_24h", "is_click"),
                   ("watch_seconds_24h", "watch_seconds"), ("plays_24h", "is_play")]),
    (86400, 604800, [("views_7d", "is_view"), ("watch_seconds_7d", "watch_seconds"),
                     ("push_opens_7d", "is_push")]),
)


def build(raw: str, spine: str, out: str) -> None:
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"""
            CREATE TEMP TABLE ev AS
            SELECT user_id, epoch_ms(event_time) AS t, watch_seconds,
                   (event_type = 'content_view')::INTEGER AS is_view,
                   (event_type = 'content_click')::INTEGER AS is_click,
                   (event_type = 'push_open')::INTEGER AS is_push,
                   (watch_seconds IS NOT NULL)::INTEGER AS is_play
            FROM read_parquet('{raw}/**/*.parquet', hive_partitioning = true)
            WHERE rejection IS NULL
              AND event_type IN ('content_view', 'content_click', 'video_play', 'push_open')
        """)
        con.execute(f"""
            CREATE TEMP TABLE labels AS
            SELECT row_number() OVER () - 1 AS row, user_id, epoch_ms(timestamp) AS t
            FROM read_parquet('{spine}')
        """)
        selects = []
        for tile, window, columns in SIZES:
            ms = tile * 1000
            names = [name for name, _ in columns]
            con.execute(f"""
                CREATE TEMP TABLE tiles_{tile} AS
                SELECT user_id, t // {ms} * {tile} AS s,
                       {', '.join(f'sum({column}) AS {name}' for name, column in columns)}
                FROM ev GROUP BY ALL
            """)
            con.execute(f"""
                CREATE TEMP TABLE base_{tile} AS
                SELECT row, {', '.join(f'sum({n}) OVER w AS {n}' for n in names)}
                FROM (
                    SELECT user_id, s, NULL::BIGINT AS row, {', '.join(names)} FROM tiles_{tile}
                    UNION ALL
                    SELECT user_id, t // {ms} * {tile}, row,
                           {', '.join('NULL' for _ in names)} FROM labels
                )
                WINDOW w AS (PARTITION BY user_id ORDER BY s
                             RANGE BETWEEN {window - tile} PRECEDING AND {tile} PRECEDING)
                QUALIFY row IS NOT NULL
            """)
            con.execute(f"""
                CREATE TEMP TABLE head_{tile} AS
                SELECT l.row, {', '.join(
                    f'CASE WHEN h.s = l.t // {ms} * {tile} THEN h.{n} END AS {n}' for n in names)}
                FROM labels l ASOF LEFT JOIN (
                    SELECT user_id, t, t // {ms} * {tile} AS s,
                           {', '.join(f'sum({c}) OVER w AS {n}' for n, c in columns)}
                    FROM ev WINDOW w AS (PARTITION BY user_id, t // {ms} ORDER BY t)
                ) h ON l.user_id = h.user_id AND l.t >= h.t
            """)
            selects += [f"coalesce(b{tile}.{n}, 0) + coalesce(h{tile}.{n}, 0) AS {n}"
                        for n in names]
        joins = " ".join(
            f"JOIN base_{tile} b{tile} USING (row) JOIN head_{tile} h{tile} USING (row)"
            for tile, _, _ in SIZES
        )
        con.execute(f"""
            COPY (
                SELECT s.* EXCLUDE (row), {', '.join(selects)}
                FROM (SELECT row_number() OVER () - 1 AS row, * FROM read_parquet('{spine}')) s
                {joins}
                ORDER BY row
            ) TO '{out}' (FORMAT parquet)
        """)


if __name__ == "__main__":
    build(*sys.argv[1:4])
