"""The training-set builder on DuckDB: spine in, raw table in, features out, point in time.

1. The spine is read and checked (``fastbreak.offline.spine``), the features named are resolved
   (``fastbreak.offline.selection``).
2. The raw table is read in place (a pyarrow dataset over local or S3 Parquet), only the
   partitions the spine's times can need. Its admitted rows are reduced to the copy of each
   event the processor applies (``fastbreak.offline.replay``: per shard and (event id, event
   time), the lowest position). Duplicates are rare, so candidates are found by a 64-bit hash
   of the identity and only those are ranked exactly.
3. Per feature group, the events of the spine's entities, less those later than the group's
   allowed lateness, are computed by the SQL path (``fastbreak.offline.fast_path``) where it
   covers the feature, and by the reference path (``fastbreak.offline.reference``, the engine's
   fold and merge per entity) otherwise.
4. The spine, every row and column in order, plus two columns per feature
   (``fastbreak.offline.output``), is written as one Parquet file, whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.definitions.model import FieldType
from fastbreak.engine.fold import FeatureValue
from fastbreak.engine.plan import Plan, ServedFeature
from fastbreak.offline.output import (
    arrow_values,
    event_time_column,
    field_type,
    value_column,
    value_type,
)
from fastbreak.offline.raw_files import TIMESTAMP, open_raw, raw_files
from fastbreak.offline.reference import entity_values
from fastbreak.offline.replay import RawEvent
from fastbreak.offline.request import (
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
from fastbreak.offline.spine import Spine

__all__ = ["Progress", "TrainingSetRequest", "TrainingSetSummary", "build_training_set"]


def build_training_set(
    request: TrainingSetRequest, catalog: Catalog = CATALOG, progress: Progress | None = None,
) -> tuple[pa.Table, TrainingSetSummary]:
    """Build (and write, if ``request.out``) a training set; ``TrainingSetError`` on bad input,
    before anything is written."""
    report = progress or SilentProgress()
    prepared = prepare(request, catalog, report)
    with duckdb.connect() as con:
        builder = _DuckDBBuild(con, catalog, prepared.plan, request, prepared.spine,
                               prepared.groups, report, prepared.summary)
        columns = builder.run()
        prepared.summary.duplicates_dropped = builder.duplicates
    return finish(prepared, request, columns, report), prepared.summary


class _DuckDBBuild:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, catalog: Catalog, plan: Plan,
        request: TrainingSetRequest, spine: Spine, groups: list[SelectedGroup],
        progress: Progress, summary: TrainingSetSummary,
    ) -> None:
        self.con = con
        self.catalog = catalog
        self.plan = plan
        self.request = request
        self.spine = spine
        self.groups = groups
        self.progress = progress
        self.summary = summary
        self.rows = spine.table.num_rows
        self.field_types = dict(catalog.offline_columns())

    def run(self) -> dict[str, pa.Array]:
        self._load()
        columns: dict[str, pa.Array] = {}
        for index, group in enumerate(self.groups):
            columns.update(self._group(index, group))
        return columns

    # ---- inputs ----------------------------------------------------------------------------
    def _load(self) -> None:
        self.con.execute("SET preserve_insertion_order = false")  # every read orders itself
        spine_columns: dict[str, Any] = {
            "__row": pa.array(range(self.rows), pa.int64()), "__t": self.spine.times_ms,
        }
        for entity, keys in self.spine.keys.items():
            spine_columns[f"__key_{entity}"] = keys
        self.con.register("spine_in", pa.table(spine_columns))
        source, available = self._raw_source()
        low, high = event_time_bounds(self.groups, self.spine.times_ms,
                                      self.request.as_served)
        where = ["rejection IS NULL", f"epoch_ms(event_time) <= {high}",
                 f"event_date <= '{_utc_date(high)}'"]
        if low is not None:
            where += [f"epoch_ms(event_time) >= {low}", f"event_date >= '{_utc_date(low)}'"]
        payload = sorted({name for group in self.groups
                          for name in payload_fields(self.catalog, group)})
        columns = "".join(
            f", {_ident(name)}" if name in available
            else f", NULL::{_SQL_TYPES[self.field_types[name]]} AS {_ident(name)}"
            for name in payload
        )
        # A view, not a table: each group reads the files once, taking only its columns.
        self.con.execute(f"""
            CREATE TEMP VIEW admitted AS
            SELECT event_type, event_id, epoch_ms(event_time) AS t_ms,
                   epoch_ms(kinesis_arrival_time) AS a_ms, kinesis_shard_id AS shard,
                   kinesis_sequence_number AS seq, coalesce(kinesis_sub_sequence, 0) AS sub
                   {columns}
            FROM {source} WHERE {' AND '.join(where)}
        """)
        self.progress.stage("finding duplicate copies")
        # Identities seen twice, by a 64-bit hash of the identity: a collision only adds a
        # candidate. Candidates are then ranked on their exact identity, reading the rows again
        # only where the event time is a candidate's. One statement, so that DuckDB runs all
        # of it on every core.
        self.con.execute("""
            CREATE TEMP TABLE duplicates AS
            WITH repeated AS (
                -- copies share their event time: grouped with it, a hash shared by another
                -- identity cannot hide a repeated one's time
                SELECT hash(shard, event_id, t_ms) AS identity, t_ms
                FROM admitted GROUP BY ALL HAVING count(*) > 1
            )
            SELECT shard, seq, sub FROM (
                SELECT shard, event_id, t_ms, seq, sub FROM admitted
                WHERE t_ms IN (SELECT t_ms FROM repeated)
                  AND hash(shard, event_id, t_ms) IN (SELECT identity FROM repeated)
            )
            QUALIFY row_number() OVER (
                PARTITION BY shard, event_id, t_ms ORDER BY length(seq), seq, sub) > 1
        """)
        (count,), = self.con.sql("SELECT count(*) FROM duplicates").fetchall()
        self.duplicates = int(count)
        applied = "SELECT * FROM admitted"
        if self.duplicates:
            applied += " ANTI JOIN duplicates USING (shard, seq, sub)"
        self.con.execute(f"CREATE TEMP VIEW applied AS {applied}")

    def _raw_source(self) -> tuple[str, set[str]]:
        """The raw table as DuckDB reads it, and the columns its files hold. Local files go
        through DuckDB's own Parquet reader (parallel); S3 through pyarrow's filesystem."""
        location = self.request.raw
        raw_files(location, self.request.s3)  # the errors every engine gives for a bad location
        try:
            if location.startswith("s3://"):
                dataset = open_raw(location, self.catalog, self.request.s3)
                self.con.register("raw_dataset", dataset)
                return "raw_dataset", set(dataset.schema.names)
            root = Path(location)
            source = (
                f"read_parquet({_literal(str(root / '**' / '*.parquet'))}, "
                "hive_partitioning = true, union_by_name = true, "
                "hive_types = {'event_date': VARCHAR, 'event_hour': VARCHAR})"
            )
            names = {row[0] for row in self.con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
            return source, names
        except TrainingSetError:
            raise
        except (OSError, pa.ArrowException, duckdb.Error, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise TrainingSetError(f"cannot read raw table {location}: {reason}") from error

    # ---- one group ---------------------------------------------------------------------------
    def _group(self, index: int, group: SelectedGroup) -> dict[str, pa.Array]:
        prefix = f"g{index}"
        name, entity = group.name, group.entity
        self.con.execute(f"""
            CREATE TABLE {prefix}_keys AS
            SELECT key, (row_number() OVER (ORDER BY key) - 1)::INTEGER AS key_id
            FROM (SELECT DISTINCT "__key_{entity}" AS key FROM spine_in)
        """)
        self.con.execute(f"""
            CREATE TABLE {prefix}_probe AS
            SELECT s.__row AS row, k.key_id, s.__t AS t
            FROM spine_in s JOIN {prefix}_keys k ON k.key = s."__key_{entity}"
        """)
        columns: dict[str, pa.Array] = {}
        fast: list[ServedFeature] = []
        if (self.request.fast_path and not self.request.as_served
                and pa.compute.min(self.spine.times_ms).as_py() >= 0):
            # imported here only: the SQL path needs numpy, which the consistency check's
            # Lambda (it builds as served) does not carry
            from fastbreak.offline import fast_path

            fast = [s for s in group.features if fast_path.covered(s)
                    and field_type(self.catalog, group.plan, s) is not FieldType.TIMESTAMP]
        if fast:
            self.progress.stage(f"{name}: {len(fast)} features in SQL")
            sources = ", ".join(_literal(event_type) for event_type in group.plan.group.sources)
            query = fast_path.GroupQuery(
                self.con, group.plan, prefix,
                events_sql=f"""
                    SELECT k.key_id, a.* FROM applied a
                    JOIN {prefix}_keys k ON k.key = ({self._key_of(group)})
                    WHERE {self._routed(group)}""",
                values_sql=lambda field: (
                    f"SELECT DISTINCT {_ident(field)} FROM admitted "
                    f"WHERE event_type IN ({sources}) AND {_ident(field)} IS NOT NULL"),
            )
            for feature_name, computed in query.compute(fast).items():
                served = next(s for s in fast if s.name == feature_name)
                kind = value_type(self.catalog, group.plan, served)
                columns[value_column(name, served)] = _typed(computed.values, kind)
                columns[event_time_column(name, served)] = computed.event_time_ms.cast(TIMESTAMP)
                self.summary.fast_features.append(f"{name}.{feature_name}")
            self.con.execute(f"DROP TABLE IF EXISTS {prefix}_ev")
        rest = [s for s in group.features if value_column(name, s) not in columns]
        if rest:
            columns.update(self._reference(prefix, group, rest))
            self.summary.reference_features.extend(f"{name}.{s.name}" for s in rest)
        return columns

    def _key_of(self, group: SelectedGroup) -> str:
        """The entity key of an applied event for ``group``: the field its type names."""
        cases = " ".join(
            f"WHEN {_literal(event_type)} THEN a.{_ident(route.key_field)}"
            for event_type in group.plan.group.sources
            for route in self.plan.routes.get(event_type, ()) if route.group is group.plan
        )
        return f"CASE a.event_type {cases} END"

    def _routed(self, group: SelectedGroup) -> str:
        """The group's events the processor applies: its sources, not later than its allowed
        lateness (and in as-served mode, not after the spine's last time)."""
        sources = ", ".join(_literal(event_type) for event_type in group.plan.group.sources)
        lateness = group.plan.group.allowed_lateness_seconds * 1000
        condition = f"a.event_type IN ({sources}) AND a.a_ms - a.t_ms <= {lateness}"
        if self.request.as_served:
            condition += f" AND a.a_ms <= {self._latest()}"
        return condition

    def _latest(self) -> int:
        return int(pa.compute.max(self.spine.times_ms).as_py())

    # ---- the reference path ----------------------------------------------------------------
    def _reference(self, prefix: str, group: SelectedGroup, features: list[ServedFeature]
                   ) -> dict[str, pa.Array]:
        entities = self.con.sql(f"SELECT count(*) FROM {prefix}_keys").fetchall()[0][0]
        self.progress.stage(f"{group.name}: {len(features)} features per {group.entity}",
                            entities)
        wanted = [f"{group.name}.{s.name}" for s in features]
        found: dict[str, list[FeatureValue | None]] = {name: [None] * self.rows for name in wanted}
        times = self.spine.times_ms.to_pylist()
        for key, events, rows in self._per_entity(prefix, group):
            values = entity_values(self.plan, [group.name], key, events,
                                   [times[row] for row in rows], as_served=self.request.as_served)
            for row, row_values in zip(rows, values, strict=True):
                for name in wanted:
                    found[name][row] = row_values[name]
            self.progress.advance()
        columns: dict[str, pa.Array] = {}
        for served in features:
            kind = value_type(self.catalog, group.plan, served)
            values_array, times_array = arrow_values(found[f"{group.name}.{served.name}"], kind)
            columns[value_column(group.name, served)] = values_array
            columns[event_time_column(group.name, served)] = times_array
        return columns

    def _per_entity(self, prefix: str, group: SelectedGroup
                    ) -> Iterator[tuple[str, list[RawEvent], list[int]]]:
        """(entity key, its events in fold order, its spine rows) for each spine entity."""
        probes: dict[int, list[int]] = {}
        for key_id, row in self.con.sql(
                f"SELECT key_id, row FROM {prefix}_probe ORDER BY key_id, row").fetchall():
            probes.setdefault(key_id, []).append(row)
        keys = dict(self.con.sql(f"SELECT key_id, key FROM {prefix}_keys").fetchall())
        fields = {name: tuple(f.name for f in self.catalog.latest(name).fields)
                  for name in self.catalog.event_names}
        timestamps = timestamp_fields(self.catalog)
        reader = self.con.sql(f"""
            SELECT k.key_id, a.* FROM applied a
            JOIN {prefix}_keys k ON k.key = ({self._key_of(group)})
            WHERE {self._routed(group)}
            ORDER BY k.key_id, a.shard, length(a.seq), a.seq, a.sub
        """).to_arrow_reader(65_536)
        current: int | None = None
        events: list[RawEvent] = []
        for batch in reader:
            for row in batch.to_pylist():
                key_id = row["key_id"]
                if key_id != current:
                    if current is not None:
                        yield keys[current], events, probes.pop(current)
                    current, events = key_id, []
                events.append(applied_event(row, fields[row["event_type"]], timestamps))
        if current is not None:
            yield keys[current], events, probes.pop(current)
        for key_id, rows in probes.items():  # entities with no event at all
            yield keys[key_id], [], rows


_SQL_TYPES = {FieldType.STRING: "VARCHAR", FieldType.INT: "BIGINT", FieldType.DOUBLE: "DOUBLE",
              FieldType.BOOL: "BOOLEAN", FieldType.TIMESTAMP: "TIMESTAMPTZ"}


def _typed(values: pa.Array, kind: pa.DataType) -> pa.Array:
    return values if values.type == kind else values.cast(kind)


def _utc_date(epoch_ms: int) -> str:
    from fastbreak.engine.timestamps import format_ms

    return format_ms(epoch_ms)[:10]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
