"""The training set's columns and file.

Per feature, two columns after the spine's own: ``{group}__{feature}_{window}`` holds the value
and ``{group}__{feature}_{window}__event_time`` the event time of the newest event folded into
it (UTC, millisecond timestamp), both null where the window holds no event, as the feature API
answers null. A double underscore, not a dot: the names work unquoted in pandas, Spark and SQL.

The file is written whole or not at all: a local file goes to a temporary name in the same
folder and is renamed into place; an S3 object appears only when its upload completes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fastbreak.definitions.model import Aggregation, Catalog, FieldType
from fastbreak.engine.fold import FeatureValue
from fastbreak.engine.plan import GroupPlan, ServedFeature
from fastbreak.offline.raw_files import ARROW_TYPES, TIMESTAMP, S3Options, resolve

SEPARATOR = "__"
EVENT_TIME_SUFFIX = "__event_time"


def value_column(group: str, served: ServedFeature) -> str:
    return f"{group}{SEPARATOR}{served.name}"


def event_time_column(group: str, served: ServedFeature) -> str:
    return value_column(group, served) + EVENT_TIME_SUFFIX


def field_type(catalog: Catalog, group: GroupPlan, served: ServedFeature) -> FieldType | None:
    field = served.feature.field
    if field is None:
        return None
    for source in served.feature.events or group.group.sources:
        declared = catalog.latest(source).field_named(field)
        if declared is not None:
            return declared.type
    return None


def value_type(catalog: Catalog, group: GroupPlan, served: ServedFeature) -> pa.DataType:
    """The Arrow type of a feature's values, as the engine serves them."""
    aggregation = served.feature.aggregation
    kind = field_type(catalog, group, served)
    item = ARROW_TYPES[kind] if kind is not None else pa.int64()
    if kind is FieldType.TIMESTAMP:
        item = pa.string()  # the payload keeps the producer's ISO text
    if aggregation in (Aggregation.COUNT, Aggregation.APPROX_DISTINCT):
        return pa.int64()
    if aggregation is Aggregation.SUM:
        return pa.float64() if kind is FieldType.DOUBLE else pa.int64()
    if aggregation is Aggregation.MEAN:
        return pa.float64()
    if aggregation is Aggregation.LAST_N:
        return pa.list_(item)
    if aggregation is Aggregation.TOP_K:
        return pa.list_(pa.struct([("value", item), ("count", pa.int64())]))
    return item


def arrow_values(values: Sequence[FeatureValue | None], kind: pa.DataType
                 ) -> tuple[pa.Array, pa.Array]:
    """Reference-path values -> (value column, event time column)."""
    plain: list[Any] = []
    times: list[int | None] = []
    for found in values:
        if found is None:
            plain.append(None)
            times.append(None)
            continue
        times.append(found.event_time_ms)
        plain.append(_plain(found.value, kind))
    return pa.array(plain, kind), pa.array(times, TIMESTAMP)


def _plain(value: Any, kind: pa.DataType) -> Any:
    if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
        return [{"value": v, "count": c} for v, c in value]  # top_k: [[value, count], ...]
    if kind == pa.int64() and isinstance(value, int) and not -(1 << 63) <= value < 1 << 63:
        return None  # an integer sum past 64 bits: Parquet has no column for it
    return value


def write_atomically(table: pa.Table, location: str, s3: S3Options | None = None) -> None:
    filesystem, path = resolve(location, s3)
    if location.startswith("s3://"):
        with filesystem.open_output_stream(path) as sink:
            pq.write_table(table, sink)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
