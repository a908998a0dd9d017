"""The spine of a training set: the label table whose rows get features, read and checked.

A spine is Parquet (a file or a folder of files) or CSV, in a local path or ``s3://``. It holds,
per row, the key of each entity whose features are asked for (by default in a column named as
the entity's key field: ``user_id``, ``game_id``, ``content_id``), the time the row's features
are wanted at, and anything else (labels), which the training set keeps as is.

The time is a timestamp with a time zone, or epoch milliseconds (an integer column); CSV text
in ISO-8601 with a zone works too. A timestamp without a zone is refused unless a zone is named
for it: guessing would shift every window silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from fastbreak.offline.raw_files import S3Options, resolve
from fastbreak.offline.selection import TrainingSetError

DEFAULT_TIMESTAMP_COLUMN = "timestamp"
_ZONED_TEXT = r"(Z|z|[+-]\d\d(:?\d\d)?)$"
_EPOCH_MS_FLOOR = 100_000_000_000  # 1973-03-03 in epoch ms; 5138 AD in epoch seconds


@dataclass(frozen=True)
class Spine:
    table: pa.Table  # as read: the training set keeps every column and row, in order
    times_ms: pa.Array  # int64, epoch ms, one per row
    keys: dict[str, pa.Array]  # entity -> its keys (text), one per row


def load_spine(
    location: str, key_columns: Mapping[str, str], *,
    timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN, timezone: str | None = None,
    s3: S3Options | None = None,
) -> Spine:
    """Read and check a spine; ``key_columns`` maps each entity needed to its column."""
    table = _read(location, list(key_columns.values()), s3)
    if table.num_rows == 0:
        raise TrainingSetError(f"spine {location} has no rows")
    if timestamp_column not in table.column_names:
        raise TrainingSetError(
            f"spine has no column '{timestamp_column}' (the time of each row; name another "
            "with --timestamp-column)"
        )
    keys = {entity: _keys(table, column, entity) for entity, column in key_columns.items()}
    times = _times(table[timestamp_column], timestamp_column, timezone)
    return Spine(table, times, keys)


def _read(location: str, key_columns: Sequence[str], s3: S3Options | None) -> pa.Table:
    filesystem, path = resolve(location, s3)
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise TrainingSetError(f"cannot read spine {location}: no such file")
        if path.lower().endswith((".csv", ".csv.gz")):
            # keys stay text: "007" is not the number 7
            options = pacsv.ConvertOptions(
                column_types={name: pa.string() for name in key_columns},
                strings_can_be_null=False,
            )
            with filesystem.open_input_stream(path) as stream:
                return pacsv.read_csv(stream, convert_options=options)
        return ds.dataset(path, filesystem=filesystem, format="parquet").to_table()
    except TrainingSetError:
        raise
    except (OSError, pa.ArrowException, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrainingSetError(f"cannot read spine {location}: {reason}") from error


def _keys(table: pa.Table, column: str, entity: str) -> pa.Array:
    if column not in table.column_names:
        raise TrainingSetError(
            f"spine has no column '{column}' (the {entity} key; map another column with "
            f"--key-column {column}=COLUMN)"
        )
    values = table[column].combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TrainingSetError(
            f"spine column '{column}' must hold text (the {entity} key), not {values.type}"
        )
    nulls = values.null_count
    if nulls:
        first = pc.index(pc.is_null(values), True).as_py()
        raise TrainingSetError(
            f"spine column '{column}' has {nulls} empty key(s), the first at row {first}"
        )
    return pc.cast(values, pa.string())


def _times(column: pa.ChunkedArray, name: str, timezone: str | None) -> pa.Array:
    values = column.combine_chunks()
    kind = values.type
    if values.null_count:
        first = pc.index(pc.is_null(values), True).as_py()
        raise TrainingSetError(
            f"spine column '{name}' has {values.null_count} empty time(s), the first at row {first}"
        )
    if pa.types.is_integer(kind):
        as_ms = pc.cast(values, pa.int64())
        if pc.max(pc.abs(as_ms)).as_py() < _EPOCH_MS_FLOOR:
            raise TrainingSetError(
                f"spine column '{name}' holds integers that are not epoch milliseconds (all "
                "before 1973: seconds?); give epoch milliseconds or timestamps"
            )
        return as_ms
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = _parse_text(values, name, timezone)
        kind = values.type
    if not pa.types.is_timestamp(kind):
        raise TrainingSetError(
            f"spine column '{name}' is {kind}; expected a timestamp with a time zone or epoch "
            "milliseconds (an integer)"
        )
    if kind.tz is None:
        if timezone is None:
            raise TrainingSetError(
                f"spine column '{name}' holds timestamps without a time zone; say which zone "
                "they are in with --timezone (e.g. --timezone UTC)"
            )
        try:
            values = pc.assume_timezone(values, timezone=timezone)
        except pa.ArrowException as error:
            raise TrainingSetError(
                f"spine column '{name}' in zone {timezone}: {str(error).splitlines()[0]}"
            ) from error
    as_ms = pc.cast(values, pa.timestamp("ms", tz="UTC"), safe=False)
    return pc.cast(as_ms, pa.int64())


def _parse_text(values: pa.Array, name: str, timezone: str | None) -> pa.Array:
    zoned = pc.match_substring_regex(values, _ZONED_TEXT)
    if timezone is None and not pc.all(zoned).as_py():
        first = pc.index(zoned, False).as_py()
        raise TrainingSetError(
            f"spine column '{name}' row {first} ({values[first].as_py()!r}) has no time zone; "
            "say which zone with --timezone (e.g. --timezone UTC)"
        )
    try:
        if timezone is None:
            return pc.cast(values, pa.timestamp("ns", tz="UTC"))
        return pc.cast(values, pa.timestamp("ns"))
    except pa.ArrowException as error:
        raise TrainingSetError(
            f"spine column '{name}' holds text that is not an ISO-8601 time: "
            f"{str(error).splitlines()[0]}"
        ) from error
