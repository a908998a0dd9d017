"""The Spark engine (local mode, Java 17) builds exactly the DuckDB engine's training sets.

Same raw table, same spine, both engines: every column and row equal, in order, floats bit for
bit, in event-time and as-served mode, over every aggregation and window kind (sketches past
linear counting, top_k past its capacity, since-kickoff sessions), with a hot key, spine rows
whose entity has no event (nulls), and late, duplicate, future-dated and refused raw rows. The
raw table is read from a local folder and from ``s3://`` on moto in server mode. Bad input is
the same one line from either engine.

One Spark session for the module (``spark_session``), small data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from fastbreak.cli import main
from fastbreak.definitions import CATALOG, Catalog
from fastbreak.engine.hll import REGISTERS
from fastbreak.offline.builder import build_training_set as build_with_duckdb
from fastbreak.offline.raw_files import S3Options, resolve, write_raw
from fastbreak.offline.request import TrainingSetRequest, TrainingSetSummary
from fastbreak.offline.spark_engine import build_training_set as build_with_spark
from fastbreak.offline.spark_engine import spark_session
from tests.fixtures.histories import (
    assert_identical,
    catalog_history,
    catalog_spine,
    offline_history,
    offline_spine,
)
from tests.fixtures.offline import OFFLINE_CATALOG, T0, s3_on_moto, stream_records
from tests.fixtures.raw_events import raw_rows

pytestmark = pytest.mark.e2e

BUCKET = "fastbreak-spark-parity"


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = spark_session(cores=2)
    yield session
    session.stop()


CASES: dict[str, tuple[Catalog, Any, Any]] = {
    "offline-catalog": (OFFLINE_CATALOG, offline_history, offline_spine),
    "shipped-catalog": (CATALOG, catalog_history, catalog_spine),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per case, a folder with its raw table (``raw/``) and spine (``spine.parquet``)."""
    made = {}
    for name, (catalog, history, spine) in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        write_raw(raw_rows(stream_records(history()), catalog), str(folder / "raw"), catalog)
        pq.write_table(spine(), folder / "spine.parquet")
        made[name] = folder
    return made


def groups(catalog: Catalog) -> tuple[str, ...]:
    return tuple(group.name for group in catalog.groups)


def both(folder: Path, catalog: Catalog, spark: SparkSession, **options: Any
         ) -> tuple[pa.Table, TrainingSetSummary, pa.Table, TrainingSetSummary]:
    request = TrainingSetRequest(str(folder / "spine.parquet"), groups(catalog),
                                 str(folder / "raw"), **options)
    with_spark, spark_summary = build_with_spark(request, catalog, spark=spark)
    with_duckdb, duckdb_summary = build_with_duckdb(request, catalog)
    return with_spark, spark_summary, with_duckdb, duckdb_summary


# ---- the tests ------------------------------------------------------------------------------
@pytest.mark.parametrize("as_served", [False, True], ids=["event-time", "as-served"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_spark_builds_the_duckdb_engines_training_set_from_a_local_raw_table(
    case: str, as_served: bool, folders: dict[str, Path], spark: SparkSession,
) -> None:
    catalog = CASES[case][0]
    found, found_summary, expected, expected_summary = both(
        folders[case], catalog, spark, as_served=as_served)
    assert_identical(found, expected)
    assert found_summary.duplicates_dropped == expected_summary.duplicates_dropped > 0
    assert found_summary.features == expected_summary.features
    # the spine as it was, every row in its order, and values that mean something
    spine = pq.read_table(folders[case] / "spine.parquet")
    assert found.select(spine.column_names).equals(spine)
    values = [name for name in found.column_names[len(spine.column_names):]
              if not name.endswith("__event_time")]
    assert all(found[name].null_count < found.num_rows for name in values), "an empty column"
    assert any(found[name].null_count > 0 for name in values), "no row without an event"


def test_the_hot_keys_sketch_is_past_linear_counting_and_equal(
    folders: dict[str, Path], spark: SparkSession,
) -> None:
    request = TrainingSetRequest(str(folders["offline-catalog"] / "spine.parquet"),
                                 ("user_stats.items_30m", "user_stats.top_items_lifetime"),
                                 str(folders["offline-catalog"] / "raw"))
    found, _ = build_with_spark(request, OFFLINE_CATALOG, spark=spark)
    expected, _ = build_with_duckdb(request, OFFLINE_CATALOG)
    assert_identical(found, expected)
    assert max(v or 0 for v in found["user_stats__items_30m"].to_pylist()) > 2.5 * REGISTERS


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_on_moto(BUCKET) as url:
        yield url


def test_spark_reads_and_writes_s3_on_moto_as_it_reads_a_local_folder(
    endpoint: str, folders: dict[str, Path], spark: SparkSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = S3Options(endpoint)
    catalog, history, spine = CASES["shipped-catalog"]
    write_raw(raw_rows(stream_records(history()), catalog), f"s3://{BUCKET}/raw", catalog, s3)
    filesystem, path = resolve(f"s3://{BUCKET}/training-sets/labels.parquet", s3)
    with filesystem.open_output_stream(path) as sink:
        pq.write_table(spine(), sink)
    out = f"s3://{BUCKET}/training-sets/all-groups.parquet"
    code = main(["training-set", "--engine", "spark", "--spine",
                 f"s3://{BUCKET}/training-sets/labels.parquet", "--raw", f"s3://{BUCKET}/raw",
                 "--features", *groups(catalog), "--out", out, "--endpoint-url", endpoint])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.startswith(f"wrote {out}: 30 rows") and err.count("\n") == 1, err
    with filesystem.open_input_file(resolve(out, s3)[1]) as source:
        from_s3 = pq.read_table(source)
    _, _, from_folder, _ = both(folders["shipped-catalog"], catalog, spark)
    assert_identical(from_s3, from_folder)


def spine_with(**columns: Any) -> pa.Table:
    data: dict[str, Any] = {"user_id": ["u1", "u2"], "timestamp": pa.array([T0, T0], pa.int64())}
    data.update(columns)
    return pa.table({name: value for name, value in data.items() if value is not None})


BAD_INPUT: dict[str, tuple[Any, list[str]]] = {
    "no key column": (spine_with(user_id=None), []),
    "naive times": (spine_with(timestamp=pa.array([1, 2], pa.timestamp("ms"))), []),
    "empty keys": (spine_with(user_id=["u1", None]), []),
    "no rows": (spine_with().slice(0, 0), []),
    "unknown feature": (spine_with(), ["--features", "user_engagement.views_2h"]),
    "missing raw table": (spine_with(), ["--raw", "{tmp}/nowhere"]),
    "raw folder without Parquet": (spine_with(), ["--raw", "{tmp}/notes"]),
    "missing bucket": (spine_with(), ["--raw", "s3://no-such-bucket/raw"]),
    "missing prefix": (spine_with(), ["--raw", f"s3://{BUCKET}/nothing-here"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_the_same_one_line_error_from_either_engine(
    case: str, endpoint: str, folders: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spine, extra = BAD_INPUT[case]
    pq.write_table(spine, tmp_path / "labels.parquet")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no Parquet here")
    arguments = ["training-set", "--spine", str(tmp_path / "labels.parquet"),
                 "--raw", str(folders["shipped-catalog"] / "raw"), "--features",
                 "user_engagement", "--endpoint-url", endpoint,
                 *(item.format(tmp=tmp_path) for item in extra)]
    answers = []
    for engine in ("duckdb", "spark"):
        out = tmp_path / f"{engine}.parquet"
        code = main([*arguments, "--engine", engine, "--out", str(out)])
        answers.append((code, capsys.readouterr().err))
        assert not out.exists()
    (duckdb_code, duckdb_err), (spark_code, spark_err) = answers
    assert duckdb_code == spark_code == 2
    assert spark_err == duckdb_err and spark_err.startswith("error: ")
    assert spark_err.count("\n") == 1, spark_err


def test_a_spine_long_after_every_event_reads_no_partition_and_gets_nulls_from_both(
    folders: dict[str, Path], spark: SparkSession, tmp_path: Path,
) -> None:
    later = T0 + 10 * 24 * 3_600_000  # ten days on: no partition within a 10-minute window
    pq.write_table(pa.table({"user_id": ["u0", "u1"], "item_id": ["i1", "i2"],
                             "timestamp": pa.array([later, later + 1], pa.int64())}),
                   tmp_path / "later.parquet")
    request = TrainingSetRequest(str(tmp_path / "later.parquet"),
                                 ("user_stats.views_10m", "item_stats.views_10m"),
                                 str(folders["offline-catalog"] / "raw"))
    found, _ = build_with_spark(request, OFFLINE_CATALOG, spark=spark)
    expected, _ = build_with_duckdb(request, OFFLINE_CATALOG)
    assert_identical(found, expected)
    assert found["user_stats__views_10m"].to_pylist() == [None, None]
