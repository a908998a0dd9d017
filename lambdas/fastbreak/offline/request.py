"""What every training-set engine shares: the request, the summary, progress reporting, and the
steps before and after an engine's own work, so that the engines differ only in how they compute
the feature columns (``fastbreak.offline.engines``).

- ``prepare``: the features named are resolved, the spine is read and checked (one-line
  ``TrainingSetError`` naming the column, feature or file), the columns to add are named.
- ``event_time_bounds``: the event times the spine's rows can need, which every engine reads.
- ``applied_event``: an applied row of the raw table, as an engine reads it, as the fold takes it.
- ``finish``: the spine plus the engine's columns, in order, written whole or not at all.

Imports pyarrow (the spine and the output), no DuckDB or Spark.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from fastbreak.definitions import Catalog
from fastbreak.definitions.model import FieldType, WindowKind
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, Plan, compile_plan
from fastbreak.offline.output import event_time_column, value_column, write_atomically
from fastbreak.offline.raw_files import S3Options
from fastbreak.offline.replay import RawEvent
from fastbreak.offline.selection import SelectedGroup, TrainingSetError, select_features
from fastbreak.offline.spine import DEFAULT_TIMESTAMP_COLUMN, Spine, load_spine


class Progress(Protocol):
    """Where the builder reports what it is doing (a terminal progress bar, or nothing)."""

    def stage(self, description: str, total: int | None = None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class SilentProgress:
    def stage(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class TrainingSetRequest:
    spine: str
    features: tuple[str, ...]
    raw: str
    out: str | None = None  # None: build and return the table, write nothing
    timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN
    key_columns: Mapping[str, str] = field(default_factory=dict)  # key field -> spine column
    timezone: str | None = None  # of a spine timestamp without one
    as_served: bool = False
    s3: S3Options | None = None
    fast_path: bool = True  # False: every feature by the reference path (slow; for checks)


@dataclass
class TrainingSetSummary:
    rows: int
    features: list[str]
    fast_features: list[str] = field(default_factory=list)
    reference_features: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    seconds: float = 0.0


@dataclass
class PreparedRequest:
    """A checked request: the plan, the groups and features named, the spine as read, the
    columns the engine must compute (two per feature, in order) and the summary to fill."""

    plan: Plan
    groups: list[SelectedGroup]
    spine: Spine
    columns: list[str]
    summary: TrainingSetSummary
    started: float


def prepare(request: TrainingSetRequest, catalog: Catalog, progress: Progress) -> PreparedRequest:
    """Resolve the features and read the spine; ``TrainingSetError`` on bad input, before any
    engine work and before anything is written."""
    started = time.perf_counter()
    plan = compile_plan(catalog)
    groups = select_features(plan, request.features)
    key_columns = {}
    for group in groups:
        key_field = catalog.entity(group.entity).key_field
        key_columns[group.entity] = request.key_columns.get(key_field, key_field)
    unknown = set(request.key_columns) - {catalog.entity(g.entity).key_field for g in groups}
    if unknown:
        raise TrainingSetError(
            f"--key-column names key field '{sorted(unknown)[0]}', which no feature named needs"
        )
    progress.stage("reading the spine")
    spine = load_spine(request.spine, key_columns, timestamp_column=request.timestamp_column,
                       timezone=request.timezone, s3=request.s3)
    columns = [
        name for group in groups for served in group.features
        for name in (value_column(group.name, served), event_time_column(group.name, served))
    ]
    clash = next((name for name in columns if name in spine.table.column_names), None)
    if clash is not None:
        raise TrainingSetError(f"spine already has a column '{clash}', which the training set adds")
    summary = TrainingSetSummary(spine.table.num_rows, [
        f"{group.name}.{served.name}" for group in groups for served in group.features
    ])
    return PreparedRequest(plan, groups, spine, columns, summary, started)


def finish(prepared: PreparedRequest, request: TrainingSetRequest,
           computed: Mapping[str, pa.Array], progress: Progress) -> pa.Table:
    """The spine, every row and column in order, then the computed columns; written to
    ``request.out`` (if any) whole or not at all."""
    table = prepared.spine.table
    for name in prepared.columns:
        table = table.append_column(name, computed[name])
    if request.out is not None:
        progress.stage(f"writing {request.out}")
        try:
            write_atomically(table, request.out, request.s3)
        except (OSError, pa.ArrowException) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise TrainingSetError(f"cannot write {request.out}: {reason}") from error
    prepared.summary.seconds = time.perf_counter() - prepared.started
    return table


def event_time_bounds(groups: list[SelectedGroup], times_ms: pa.Array, as_served: bool
                      ) -> tuple[int | None, int]:
    """The event times (epoch ms, inclusive) that any feature at any of the spine's times can
    hold: from the earliest time less the longest window (None: a lifetime or since-kickoff
    window reaches back to the start) to the latest time (plus the producers' clock tolerance
    in as-served mode, where an event dated ahead of its arrival counts once it arrived)."""
    earliest = pc.min(times_ms).as_py()
    latest = pc.max(times_ms).as_py()
    high = latest + (FUTURE_TOLERANCE_SECONDS * 1000 if as_served else 0)
    reach = 0
    for group in groups:
        for served in group.features:
            if served.window.kind in (WindowKind.LIFETIME, WindowKind.SINCE_KICKOFF):
                return None, high
            reach = max(reach, served.window.size_seconds * 1000)
    return earliest - reach, high


def payload_fields(catalog: Catalog, group: SelectedGroup) -> set[str]:
    """Every field of the group's sources: the reference path folds whole payloads."""
    return {f.name for source in group.plan.group.sources
            for f in catalog.latest(source).fields}


def timestamp_fields(catalog: Catalog) -> set[str]:
    return {name for name, kind in catalog.offline_columns() if kind is FieldType.TIMESTAMP}


def applied_event(row: Mapping[str, Any], fields: tuple[str, ...], timestamps: set[str]
                  ) -> RawEvent:
    """An applied row as the engines read it (``event_type``, ``event_id``, ``t_ms``, ``a_ms``,
    ``shard``, ``seq``, ``sub`` and the payload columns) -> the event the fold takes. A payload
    timestamp goes back to ISO text in UTC, as validation leaves it in an event."""
    payload = {name: row.get(name) for name in fields}
    for name in timestamps & payload.keys():
        value = payload[name]
        if isinstance(value, datetime):
            payload[name] = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return RawEvent(row["event_type"], row["event_id"], row["t_ms"], payload, row["shard"],
                    (int(row["seq"]), row["sub"]), row["a_ms"])
