"""training_set_spark: the Spark engine in local mode against the DuckDB engine, same files.

1M raw events of the benchmark workload x 100k spine rows (``bench.raw_workload``, the data of
``bench.training_set`` at that size), every ``user_engagement`` feature, each engine run as a
user runs it (``python -m fastbreak training-set [--engine spark] ... --out``) in a child
process, interleaved, ``REPEATS`` times each; wall time per run. No target: the Spark engine
computes every feature by the engine's own fold and merge per entity (the DuckDB engine's
reference path, spread over Spark's workers), where DuckDB computes these twelve in SQL; what
the run must show is the cost of that and that both training sets are identical.

Sizes and repeats can be changed: ``TRAINING_SET_SPARK_EVENTS``,
``TRAINING_SET_SPARK_SPINE_ROWS``, ``TRAINING_SET_SPARK_REPEATS``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from bench.raw_workload import Workload
from bench.results_format import BenchResult
from bench.training_set import child, data

EVENTS = int(os.environ.get("TRAINING_SET_SPARK_EVENTS", "1000000"))
SPINE_ROWS = int(os.environ.get("TRAINING_SET_SPARK_SPINE_ROWS", "100000"))
REPEATS = int(os.environ.get("TRAINING_SET_SPARK_REPEATS", "2"))
FEATURES = "user_engagement"


def run() -> list[BenchResult]:
    raw, spine = data(Workload(EVENTS, SPINE_ROWS))
    spark: list[float] = []
    duckdb: list[float] = []
    identical = True
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(REPEATS):
            outputs = {}
            for engine, times in (("duckdb", duckdb), ("spark", spark)):
                out = Path(scratch) / f"{engine}-{repeat}.parquet"
                seconds, _ = child(["-m", "fastbreak", "training-set", "--engine", engine,
                                    "--spine", str(spine), "--raw", str(raw),
                                    "--features", FEATURES, "--out", str(out)])
                times.append(seconds)
                outputs[engine] = pq.read_table(out)
            identical = identical and outputs["spark"].equals(outputs["duckdb"])
    seconds = statistics.median(spark)
    baseline = statistics.median(duckdb)
    return [BenchResult(
        "training_set_spark", round(seconds, 1),
        f"s, median of {REPEATS} ({_spread(spark)}); Spark local[{os.cpu_count()}], "
        f"{EVENTS:,} raw events x {SPINE_ROWS:,} spine rows, every {FEATURES} feature; "
        f"identical to DuckDB's training set: {identical}",
        f"the DuckDB engine on the same files in the same run ({_spread(duckdb)})",
        round(baseline, 2), round(seconds / baseline, 1),
        "no target (reported next to DuckDB's); the two training sets identical", identical,
        repeats=REPEATS,
    )]


def _spread(times: list[float]) -> str:
    return f"{min(times):.1f}-{max(times):.1f} s"
