"""The training-set builder on Spark (``--engine spark``, and the Glue job's engine): the DuckDB
engine's semantics and output, with the per-entity work spread over Spark's executors.

1. The request is prepared as every engine prepares it (``fastbreak.offline.request``: the spine
   read and checked on the driver, the features resolved), and the raw table's files of the
   partitions the spine's times can need are listed (``raw_files.raw_files``), all before Spark
   starts: bad input is one line, as with DuckDB.
2. Spark reads those files in place where its Hadoop file system has the scheme (a local folder;
   ``s3://`` on Glue, through EMRFS); where it has not (``s3://`` outside Glue, where no
   hadoop-aws jar is installed, or at another endpoint such as the local platform's), they are
   first copied to a local staging folder through pyarrow's S3 file system.
3. Of the admitted rows within the spine's time bounds, the applied copy of each identity is kept
   as the DuckDB engine keeps it (per shard, event id and event time, the lowest position), over
   every row before grouping by entity, since copies can disagree on their entity keys.
4. Per group, its events (its sources, within its allowed lateness), keyed by the entity key of
   their route and limited to the spine's entities, and the spine rows keyed the same are
   repartitioned by key and sorted (key, events before spine rows, fold order). Each partition
   streams through ``_entity_rows`` (``mapInArrow``): per entity, ``reference.entity_values``,
   the engine's own fold and merge, at its spine times. A sorted stream rather than a grouped
   map: it holds one entity at a time and builds no data frame per entity.
5. The values come back to the driver as ``marshal`` bytes (plain Python values, exact: integers
   beyond 64 bits, every double, lists), become columns by ``output.arrow_values`` (the DuckDB
   engine's own conversion) and are written as every engine writes (``request.finish``).

Every feature goes through the reference path: Spark runs no second implementation of any
aggregation. Imports pyspark: loaded only when this engine is chosen
(``fastbreak.offline.engines``).
"""

from __future__ import annotations

import marshal
import os
import sys
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
from fastbreak.offline.output import arrow_values, event_time_column, value_column, value_type
from fastbreak.offline.raw import raw_columns
from fastbreak.offline.raw_files import S3Options, raw_files
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
# Spark's own log lines (its start-up banner and warnings) would bury the command's one line. The
# gateway pyspark starts prints the shell's default log level unless its own logger is set.
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n%ex
logger.repl.name = org.apache.spark.api.python.PythonGatewayServer
logger.repl.level = error
"""
_RESULT_SCHEMA = "row long, values binary"
_RESULT_BATCH_ROWS = 4096
EVENT, SPINE_ROW = 0, 1  # the ``kind`` of a row of a group's sorted stream: events sort first


class SparkUnavailable(TrainingSetError):
    """Spark could not start here (no Java, say): one line, as bad input is."""


def build_training_set(
    request: TrainingSetRequest, catalog: Catalog = CATALOG, progress: Progress | None = None,
    spark: SparkSession | None = None,
) -> tuple[pa.Table, TrainingSetSummary]:
    """Build (and write, if ``request.out``) a training set with Spark: the table the DuckDB
    engine builds. ``spark``: the session to use (default: the active one, else a local one on
    every core of this machine)."""
    report = progress or SilentProgress()
    prepared = prepare(request, catalog, report)
    low, high = event_time_bounds(prepared.groups, prepared.spine.times_ms, request.as_served)
    report.stage("listing the raw table")
    filesystem, files = raw_files(request.raw, request.s3, low, high)
    session = spark or spark_session()
    # A runtime setting, so that it holds in a session that spark-submit (Glue) configured too.
    session.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    with ExitStack() as cleanup:
        build = _SparkBuild(session, catalog, request, prepared, report, cleanup)
        columns = build.run(filesystem, files, low, high)
    return finish(prepared, request, columns, report), prepared.summary


def spark_session(cores: int | None = None) -> SparkSession:
    """The active session; else, under spark-submit (Glue), the one it configured; else a local
    session on ``cores`` cores (default: all of this machine's)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("fastbreak-training-set")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # spark-submit sets it: its config rules
        builder = _local(builder, cores or os.cpu_count() or 1)
    try:
        session = builder.getOrCreate()
    except Exception as error:  # pyspark raises its own types; Java missing is one of them
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SparkUnavailable(f"cannot start Spark (it needs Java 17): {reason}") from error
    session.sparkContext.setLogLevel("ERROR")
    return session


def _local(builder: SparkSession.Builder, cores: int) -> SparkSession.Builder:
    # Python workers are started by the JVM: this interpreter, with the package's root on their
    # path (a test runner or a zip on PYTHONPATH may have put it on sys.path only).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = str(Path(fastbreak.__file__).resolve().parents[1])
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: no network lookup
    log_config = Path(tempfile.gettempdir()) / "fastbreak-spark-log4j2.properties"
    if not log_config.exists() or log_config.read_text() != _LOG4J2:
        log_config.write_text(_LOG4J2)
    settings = {
        "spark.master": f"local[{cores}]",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(2 * cores),
        "spark.driver.memory": os.environ.get("FASTBREAK_SPARK_DRIVER_MEMORY", "2g"),
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log_config}",
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder


def raw_spark_schema(catalog: Catalog) -> T.StructType:
    """The raw table's columns as Spark reads its files (the partition columns live in paths)."""
    return T.StructType([T.StructField(name, _SPARK_TYPES[kind]) for name, kind in
                         raw_columns(catalog)])


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

    def run(self, filesystem: pafs.FileSystem, files: Sequence[str], low: int | None,
            high: int) -> dict[str, pa.Array]:
        applied = self._applied(self._raw(filesystem, files), low, high)
        columns: dict[str, pa.Array] = {}
        for group in self.prepared.groups:
            columns.update(self._group(group, applied))
        return columns

    # ---- the applied events ----------------------------------------------------------------
    def _raw(self, filesystem: pafs.FileSystem, files: Sequence[str]) -> DataFrame:
        location, s3 = self.request.raw, self.request.s3
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

    def _applied(self, raw: DataFrame, low: int | None, high: int) -> DataFrame:
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
        rows = result["row"].tolist()
        if len(rows) != self.rows or sorted(rows) != list(range(self.rows)):
            raise RuntimeError(f"{group.name}: Spark answered {len(rows)} rows for "
                               f"{self.rows} spine rows")  # a bug, not bad input
        found: dict[str, list[FeatureValue | None]] = {n: [None] * self.rows for n in wanted}
        for row, blob in zip(rows, result["values"].tolist(), strict=True):
            for feature, item in zip(wanted, marshal.loads(blob), strict=True):
                if item is not None:
                    found[feature][row] = FeatureValue(item[0], item[1], None)
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
