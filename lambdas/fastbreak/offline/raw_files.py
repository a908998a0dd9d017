"""The raw table as files: Parquet under ``raw/event_date=YYYY-MM-DD/event_hour=HH/``, in a
local folder or an S3 prefix. Writes rows (``raw.raw_row``), lists the table's files for the
engines that read them (``raw_files``: one set of errors for every engine) and opens the table
as a pyarrow dataset that DuckDB queries in place.

Imports pyarrow: for the offline side, not for the Lambda handlers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fastbreak.definitions.model import Catalog, FieldType
from fastbreak.engine.timestamps import format_ms, parse_event_time_ms
from fastbreak.offline.raw import raw_columns
from fastbreak.offline.selection import TrainingSetError

TIMESTAMP = pa.timestamp("ms", tz="UTC")
ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.STRING: pa.string(),
    FieldType.INT: pa.int64(),
    FieldType.DOUBLE: pa.float64(),
    FieldType.BOOL: pa.bool_(),
    FieldType.TIMESTAMP: TIMESTAMP,
}
PARTITIONING = ds.partitioning(
    pa.schema([("event_date", pa.string()), ("event_hour", pa.string())]), flavor="hive"
)


def raw_schema(catalog: Catalog) -> pa.Schema:
    """The Parquet schema of a raw file (the partition columns live in the path)."""
    return pa.schema([(name, ARROW_TYPES[kind]) for name, kind in raw_columns(catalog)])


@dataclass(frozen=True)
class S3Options:
    """Where ``s3://`` locations are read and written: AWS by default; an endpoint such as
    the local platform's moto server otherwise (plain HTTP when the URL says so)."""

    endpoint_url: str | None = None
    region: str | None = None

    def filesystem(self) -> pafs.S3FileSystem:
        if self.endpoint_url is None:
            return pafs.S3FileSystem(region=self.region)
        endpoint = urlparse(self.endpoint_url)
        return pafs.S3FileSystem(
            endpoint_override=endpoint.netloc or endpoint.path,
            scheme=endpoint.scheme or "https", region=self.region or "us-east-1",
        )


def resolve(location: str, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """A local path or ``s3://bucket/key`` -> (filesystem, path on it)."""
    if location.startswith("s3://"):
        return (s3 or S3Options()).filesystem(), location[len("s3://"):].rstrip("/")
    return pafs.LocalFileSystem(), location


def raw_table(rows: Iterable[Mapping[str, Any]], catalog: Catalog) -> pa.Table:
    """Rows as ``raw.raw_row`` returns them (timestamps as ISO text) -> an Arrow table."""
    schema = raw_schema(catalog)
    timestamps = [f.name for f in schema if f.type == TIMESTAMP]
    converted = []
    for row in rows:
        values = {name: row.get(name) for name in schema.names}
        for name in timestamps:
            value = values[name]
            if isinstance(value, str):
                values[name] = parse_event_time_ms(value)
        converted.append(values)
    return pa.Table.from_pylist(converted, schema=schema)


def write_raw(
    rows: Iterable[Mapping[str, Any]], root: str, catalog: Catalog, s3: S3Options | None = None,
) -> list[str]:
    """Write rows as one Parquet file per (event date, hour) partition under ``root`` (a folder
    or ``s3://bucket/prefix``), as the Firehose delivery lays them out; return the paths."""
    filesystem, base = resolve(root, s3)
    by_partition: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_partition.setdefault(partition_of(row), []).append(row)
    written = []
    for partition, partition_rows in sorted(by_partition.items()):
        folder = f"{base}/{partition}"
        filesystem.create_dir(folder, recursive=True)
        path = f"{folder}/{uuid.uuid4().hex}.parquet"
        with filesystem.open_output_stream(path) as sink:
            pq.write_table(raw_table(partition_rows, catalog), sink)
        written.append(path)
    return written


def partition_of(row: Mapping[str, Any]) -> str:
    """``event_date=YYYY-MM-DD/event_hour=HH`` of the event time (the arrival time for a row
    without one), in UTC, as the Firehose delivery reads it from the event's text."""
    when = row.get("event_time") or row.get("kinesis_arrival_time")
    text = when if isinstance(when, str) else format_ms(int(when))  # type: ignore[arg-type]
    normalized = format_ms(parse_event_time_ms(text) or 0)
    return f"event_date={normalized[:10]}/event_hour={normalized[11:13]}"


def raw_files(location: str, s3: S3Options | None = None, low_ms: int | None = None,
              high_ms: int | None = None) -> tuple[pafs.FileSystem, list[str]]:
    """The Parquet files of the raw table under ``location`` (a folder or ``s3://bucket/prefix``),
    sorted, as paths on the file system returned; only the ``event_date`` partitions that can
    hold event times from ``low_ms`` to ``high_ms`` (None: unbounded). ``TrainingSetError``, one
    line, when the location does not exist, holds no Parquet file or cannot be listed.

    Only lists under ``location/``: an S3 role granted ``raw/*`` may not read a key ``raw``.
    """
    filesystem, base = resolve(location, s3)
    low = None if low_ms is None else format_ms(low_ms)[:10]
    high = None if high_ms is None else format_ms(high_ms)[:10]
    try:
        found = filesystem.get_file_info(pafs.FileSelector(base, recursive=True,
                                                           allow_not_found=True))
    except (OSError, pa.ArrowException, ValueError) as error:
        raise TrainingSetError(f"cannot read raw table {location}: {_reason(error)}") from error
    if not found:
        raise TrainingSetError(f"cannot read raw table {location}: no such folder")
    parquet = [info.path for info in found if info.type == pafs.FileType.File
               and info.base_name.endswith(".parquet")
               and not info.base_name.startswith((".", "_"))]
    if not parquet:
        raise TrainingSetError(f"cannot read raw table {location}: no Parquet files")
    return filesystem, sorted(path for path in parquet
                              if _date_within(path[len(base):], low, high))


def _date_within(relative: str, low: str | None, high: str | None) -> bool:
    """Whether a file's ``event_date=`` folder (if any) is within [low, high]."""
    for part in relative.split("/"):
        if part.startswith("event_date="):
            date = part[len("event_date="):]
            return (low is None or date >= low) and (high is None or date <= high)
    return True


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def open_raw(location: str, catalog: Catalog, s3: S3Options | None = None) -> ds.Dataset:
    """The raw table under ``location`` as one dataset with the catalog's columns: files
    written before a payload field existed read it as null."""
    filesystem, base = resolve(location, s3)
    return ds.dataset(
        base, schema=raw_schema(catalog).append(pa.field("event_date", pa.string()))
        .append(pa.field("event_hour", pa.string())),
        format="parquet", filesystem=filesystem, partitioning=PARTITIONING,
    )
