"""The training-set builder on Spark (``--engine spark``, and the Glue job's engine): the DuckDB
engine's semantics and output, with the per-entity work spread over Spark's executors.

1. The request is prepared as every engine prepares it (``fastbreak.offline.request``: the spine
   read and checked on the driver, the features resolved).
2. The raw table's files of the partitions the spine's times can need are listed on the driver
   (``raw_files``). Spark reads them in place where its Hadoop file system has the scheme (a local
   folder; ``s3://`` on Glue, through EMRFS); where it has not (``s3://`` outside Glue, where no
   hadoop-aws jar is installed, or an endpoint such as the local platform's), they are first
   copied to a local staging folder through pyarrow's S3 file system.
3. Of the admitted rows within the spine's time bounds, the applied copy of each identity is kept
   as the DuckDB engine keeps it (a window per shard, event id and event time, the lowest
   position first), over every row before grouping by entity, since copies can disagree on their
   entity keys. The result is cached: each group reads it again.
4. Per group, its events (its sources, within its allowed lateness), keyed by the entity key of
   their route and limited to the spine's entities, and the spine rows keyed the same are
   repartitioned by key and sorted (key, events before spine rows, fold order). Each partition
   streams through ``_entity_rows`` (``mapInArrow``): per entity, ``reference.entity_values``,
   the engine's own fold and merge, at its spine times. A sorted stream rather than a cogroup:
   it costs nothing per entity, where a grouped map builds two data frames for each.
5. The values come back to the driver as ``marshal`` bytes (plain Python values, exact: integers
   beyond 64 bits, every double, lists), become columns by ``output.arrow_values`` (the DuckDB
   engine's own conversion) and are written as every engine writes (``request.finish``).

Imports pyspark: loaded only when this engine is chosen (``fastbreak.offline.engines``).
"""

from __future__ import annotations

import marshal
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

import fastbreak
from fastbreak.definitions import CATALOG, Catalog
from fastbreak.definitions.model import FieldType
from fastbreak.engine.fold import FeatureValue
from fastbreak.engine.plan import compile_plan
from fastbreak.engine.timestamps import format_ms
from fastbreak.offline.output import arrow_values, event_time_column, value_column, value_type
from fastbreak.offline.raw import raw_columns
from fastbreak.offline.raw_files import S3Options, resolve
from fastbreak.offline.reference import entity_values
from fastbreak.offline.replay import RawEvent
from fastbreak.offline.request import (
    PreparedRequest,
    Progress,
    SilentProgress,
    TrainingSetRequest,
    TrainingSetSummary,
    applied_event,
    event_time_bounds,
    finish,
    payload_fields,
    prepare,
    timestamp_fields,
)
from fastbreak.offline.selection import SelectedGroup, TrainingSetError

_SPARK_TYPES: dict[FieldType, T.DataType] = {
    FieldType.STRING: T.StringType(),
    FieldType.INT: T.LongType(),
    FieldType.DOUBLE: T.DoubleType(),
    FieldType.BOOL: T.BooleanType(),
    FieldType.TIMESTAMP: T.TimestampType(),
}
# What a local session (not under spark-submit, as on Glue) is started with.
_LOCAL_CONFIG = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": str(2 * (os.cpu_count() or 1)),
    "spark.driver.memory": os.environ.get("FASTBREAK_SPARK_DRIVER_MEMORY", "2g"),
}
_RESULT_SCHEMA = "row long, values binary"
_RESULT_BATCH_ROWS = 4096
EVENT, SPINE_ROW = 0, 1  # the ``kind`` of a row of a group's sorted stream: events sort first


class SparkUnavailable(TrainingSetError):
    """Spark could not start here (no Java, say): one line, as bad input is."""


def build_training_set(
    request: TrainingSetRequest, catalog: Catalog = CATALOG, progress: Progress | None = None,
    spark: SparkSession | None = None,
) -> tuple[pa.Table, TrainingSetSummary]:
    """Build (and write, if ``request.out``) a training set with Spark: the same table the DuckDB
    engine builds. ``spark``: a session to use (default: the active one, else a local one)."""
    report = progress or SilentProgress()
    prepared = prepare(request, catalog, report)
    session = spark or spark_session()
    with ExitStack() as cleanup:
        build = _SparkBuild(session, catalog, request, prepared, report, cleanup)
        columns = build.run()
    return finish(prepared, request, columns, report), prepared.summary


def spark_session() -> SparkSession:
    """The active session; else, under spark-submit (Glue), the one it configured; else a local
    session on every core of this machine."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("fastbreak-training-set")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # spark-submit sets it: its config rules
        # Python workers are started by the JVM: the same interpreter, and the package's root
        # on their path (a test runner may have put it on sys.path only).
        os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_DRIVER_PYTHON", "")
                              or _interpreter())
        root = str(Path(fastbreak.__file__).resolve().parents[1])
        paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
        if root not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
        builder = builder.master(f"local[{os.cpu_count() or 1}]")
        for key, value in _LOCAL_CONFIG.items():
            builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as error:  # pyspark raises its own types; Java missing is one of them
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SparkUnavailable(f"cannot start Spark (it needs Java 17): {reason}") from error
    session.sparkContext.setLogLevel("ERROR")
    return session


def _interpreter() -> str:
    import sys

    return sys.executable


def raw_spark_schema(catalog: Catalog) -> T.StructType:
    """The raw table's columns as Spark reads its files (the partition columns live in paths)."""
    return T.StructType([T.StructField(name, _SPARK_TYPES[kind]) for name, kind in
                         raw_columns(catalog)])


def list_raw_files(location: str, s3: S3Options | None, low_ms: int | None, high_ms: int
                   ) -> tuple[pafs.FileSystem, list[str]]:
    """The Parquet files under ``location`` in the ``event_date`` partitions that can hold event
    times from ``low_ms`` (None: the first) to ``high_ms``, as paths on their file system."""
    filesystem, base = resolve(location, s3)
    low = None if low_ms is None else format_ms(low_ms)[:10]
    high = format_ms(high_ms)[:10]
    try:
        if filesystem.get_file_info(base).type != pafs.FileType.Directory:
            raise TrainingSetError(f"cannot read raw table {location}: no such folder")
        selected: list[str] = []
        for partition in filesystem.get_file_info(pafs.FileSelector(base)):
            name = partition.base_name
            if partition.type != pafs.FileType.Directory or not name.startswith("event_date="):
                continue
            date = name.partition("=")[2]
            if (low is None or date >= low) and date <= high:
                selected += _parquet_files(filesystem, partition.path)
        if not selected and not _parquet_files(filesystem, base):
            raise TrainingSetError(f"cannot read raw table {location}: no Parquet files")
    except TrainingSetError:
        raise
    except (OSError, pa.ArrowException, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrainingSetError(f"cannot read raw table {location}: {reason}") from error
    return filesystem, sorted(selected)


def _parquet_files(filesystem: pafs.FileSystem, folder: str) -> list[str]:
    return [
        info.path for info in filesystem.get_file_info(pafs.FileSelector(folder, recursive=True))
        if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
        and not info.base_name.startswith((".", "_"))
    ]


def reads_natively(spark: SparkSession, location: str, s3: S3Options | None) -> bool:
    """Whether Spark opens ``location``'s files itself: a local path always; ``s3://`` where its
    Hadoop configuration has a file system for the scheme (EMRFS on Glue) and no other endpoint
    than AWS's is asked for."""
    if not location.startswith("s3://"):
        return True
    if s3 is not None and s3.endpoint_url:
        return False
    jvm = spark.sparkContext._jvm  # Hadoop's own registry of file systems
    assert jvm is not None
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(
            "s3", spark.sparkContext._jsc.hadoopConfiguration())
    except Exception:  # py4j's error: "No FileSystem for scheme s3"
        return False
    return True


class _SparkBuild:
    def __init__(self, spark: SparkSession, catalog: Catalog, request: TrainingSetRequest,
                 prepared: PreparedRequest, progress: Progress, cleanup: ExitStack) -> None:
        self.spark = spark
        self.catalog = catalog
        self.request = request
        self.prepared = prepared
        self.progress = progress
        self.cleanup = cleanup
        self.rows = prepared.spine.table.num_rows

    def run(self) -> dict[str, pa.Array]:
        applied = self._applied()
        columns: dict[str, pa.Array] = {}
        for group in self.prepared.groups:
            columns.update(self._group(group, applied))
        return columns

    # ---- the applied events ----------------------------------------------------------------
    def _applied(self) -> DataFrame:
        low, high = event_time_bounds(self.prepared.groups, self.prepared.spine.times_ms,
                                      self.request.as_served)
        self.progress.stage("listing the raw table")
        raw = self._raw(low, high)
        payload = sorted({name for group in self.prepared.groups
                          for name in payload_fields(self.catalog, group)})
        t_ms = F.unix_millis("event_time")
        admitted = raw.where(F.col("rejection").isNull() & (t_ms <= high))
        if low is not None:
            admitted = admitted.where(t_ms >= low)
        admitted = admitted.select(
            "event_type", "event_id", t_ms.alias("t_ms"),
            F.unix_millis("kinesis_arrival_time").alias("a_ms"),
            F.col("kinesis_shard_id").alias("shard"), F.col("kinesis_sequence_number").alias("seq"),
            F.coalesce(F.col("kinesis_sub_sequence"), F.lit(0)).alias("sub"), *payload,
        )
        # The processor's identity rule as the DuckDB engine states it: per (shard, event id,
        # event time) the copy at the lowest position; a sequence number is decimal text of up
        # to 128 digits, ordered by its length first.
        identity = Window.partitionBy("shard", "event_id", "t_ms").orderBy(
            F.length("seq"), "seq", "sub")
        ranked = admitted.withColumn("copy", F.row_number().over(identity)).persist(
            StorageLevel.MEMORY_AND_DISK)
        self.cleanup.callback(ranked.unpersist)
        self.progress.stage("finding duplicate copies")
        self.prepared.summary.duplicates_dropped = ranked.where(F.col("copy") > 1).count()
        return ranked.where(F.col("copy") == 1).drop("copy")

    def _raw(self, low: int | None, high: int) -> DataFrame:
        location, s3 = self.request.raw, self.request.s3
        filesystem, files = list_raw_files(location, s3, low, high)
        schema = raw_spark_schema(self.catalog)
        if not files:
            return self.spark.createDataFrame([], schema)
        if reads_natively(self.spark, location, s3):
            paths = [f"s3://{path}" if location.startswith("s3://") else path for path in files]
        else:
            self.progress.stage(f"staging {len(files)} raw files locally", len(files))
            paths = self._stage(filesystem, files)
        return self.spark.read.schema(schema).parquet(*paths)

    def _stage(self, filesystem: pafs.FileSystem, files: Sequence[str]) -> list[str]:
        folder = Path(self.cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="fastbreak-raw-")))
        local = pafs.LocalFileSystem()
        staged = []
        for index, path in enumerate(files):
            target = folder / f"{index:06d}.parquet"
            pafs.copy_files(path, str(target), source_filesystem=filesystem,
                            destination_filesystem=local)
            staged.append(str(target))
            self.progress.advance()
        return staged

    # ---- one group ---------------------------------------------------------------------------
    def _group(self, group: SelectedGroup, applied: DataFrame) -> dict[str, pa.Array]:
        self.progress.stage(
            f"{group.name}: {len(group.features)} features per {group.entity}, in Spark")
        wanted = [f"{group.name}.{served.name}" for served in group.features]
        spine_rows = self._spine_rows(group)
        stream = self._events(group, applied, spine_rows).unionByName(
            spine_rows, allowMissingColumns=True)
        ordered = stream.repartition("key").sortWithinPartitions(
            "key", "kind", "shard", F.length("seq"), "seq", "sub")
        catalog, name, as_served = self.catalog, group.name, self.request.as_served

        def entity_rows(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return _entity_rows(batches, catalog, name, wanted, as_served)

        result: Any = ordered.mapInArrow(entity_rows, _RESULT_SCHEMA).toPandas()
        found: dict[str, list[FeatureValue | None]] = {n: [None] * self.rows for n in wanted}
        seen = bytearray(self.rows)
        for row, blob in zip(result["row"].tolist(), result["values"].tolist(), strict=True):
            seen[row] += 1
            for feature, item in zip(wanted, marshal.loads(blob), strict=True):
                if item is not None:
                    found[feature][row] = FeatureValue(item[0], item[1], None)
        if len(result) != self.rows or seen.count(1) != self.rows:
            raise RuntimeError(f"{group.name}: Spark returned {len(result)} rows for "
                               f"{self.rows} spine rows")  # a bug, not bad input
        columns: dict[str, pa.Array] = {}
        for served in group.features:
            kind = value_type(self.catalog, group.plan, served)
            values, times = arrow_values(found[f"{group.name}.{served.name}"], kind)
            columns[value_column(group.name, served)] = values
            columns[event_time_column(group.name, served)] = times
        self.prepared.summary.reference_features.extend(wanted)
        return columns

    def _events(self, group: SelectedGroup, applied: DataFrame, spine_rows: DataFrame
                ) -> DataFrame:
        """The group's events the processor applies, keyed by their route's entity key, of the
        spine's entities only."""
        plan = self.prepared.plan
        sources = list(group.plan.group.sources)
        key: Column | None = None
        for event_type in sources:
            for route in plan.routes.get(event_type, ()):
                if route.group is group.plan:
                    when = F.col("event_type") == event_type
                    key = (F.when(when, F.col(route.key_field)) if key is None
                           else key.when(when, F.col(route.key_field)))
        assert key is not None, group.name
        lateness = group.plan.group.allowed_lateness_seconds * 1000
        events = applied.where(F.col("event_type").isin(sources)
                               & (F.col("a_ms") - F.col("t_ms") <= lateness))
        if self.request.as_served:
            latest = int(pc.max(self.prepared.spine.times_ms).as_py())
            events = events.where(F.col("a_ms") <= latest)
        keys = spine_rows.select("key").distinct()
        return (events.withColumn("key", key).join(keys, "key", "left_semi")
                .withColumn("kind", F.lit(EVENT)))

    def _spine_rows(self, group: SelectedGroup) -> DataFrame:
        spine = self.prepared.spine
        table = pa.table({
            "key": spine.keys[group.entity],
            "row": pa.array(range(self.rows), pa.int64()),
            "t_ms": spine.times_ms,
        })
        return self.spark.createDataFrame(table.to_pandas()).withColumn("kind", F.lit(SPINE_ROW))


def _entity_rows(batches: Iterable[pa.RecordBatch], catalog: Catalog, group: str,
                 wanted: list[str], as_served: bool) -> Iterator[pa.RecordBatch]:
    """One partition of a group's sorted stream -> (spine row, its values) batches. Runs in
    Spark's Python workers: every entity's events, then its spine rows, arrive together."""
    plan = compile_plan(catalog)
    fields = {name: tuple(f.name for f in catalog.latest(name).fields)
              for name in catalog.event_names}
    timestamps = timestamp_fields(catalog)
    rows: list[int] = []
    values: list[bytes] = []
    current: Any = None
    events: list[RawEvent] = []
    spine_rows: list[int] = []
    times: list[int] = []

    def flush() -> None:
        if not spine_rows:
            return
        answered = entity_values(plan, [group], current, events, times, as_served=as_served)
        for row, features in zip(spine_rows, answered, strict=True):
            rows.append(row)
            values.append(marshal.dumps([
                None if (found := features[name]) is None else (found.value, found.event_time_ms)
                for name in wanted
            ]))

    for batch in batches:
        for record in batch.to_pylist():
            if record["key"] != current:
                flush()
                current, events, spine_rows, times = record["key"], [], [], []
            if record["kind"] == EVENT:
                events.append(applied_event(record, fields[record["event_type"]], timestamps))
            else:
                spine_rows.append(record["row"])
                times.append(record["t_ms"])
        if len(rows) >= _RESULT_BATCH_ROWS:
            yield _result_batch(rows, values)
            rows, values = [], []
    flush()
    if rows:
        yield _result_batch(rows, values)


def _result_batch(rows: list[int], values: list[bytes]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(rows, pa.int64()), pa.array(values, pa.binary())],
                                      names=["row", "values"])
