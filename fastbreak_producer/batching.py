"""Pack records into PutRecords requests within Kinesis's limits (500 records, 5 MiB)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_REQUEST_RECORDS = 500
MAX_REQUEST_BYTES = 5 * 1024 * 1024  # data plus partition keys of the whole request
MAX_RECORD_BYTES = 1024 * 1024  # data plus partition key of one record


class RecordTooLargeError(ValueError):
    """A record that no PutRecords request can carry."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    partition_key: str
    data: bytes
    # What the caller knows this record as (an event id, or several for a KPL aggregate).
    event_ids: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())

    def entry(self) -> dict[str, object]:
        return {"Data": self.data, "PartitionKey": self.partition_key}


def requests(records: Iterable[OutgoingRecord]) -> Iterator[list[OutgoingRecord]]:
    """Consecutive runs of ``records`` that each fit one PutRecords call, order kept."""
    batch: list[OutgoingRecord] = []
    size = 0
    for record in records:
        if record.size > MAX_RECORD_BYTES:
            raise RecordTooLargeError(
                f"record of {record.size} bytes (partition key {record.partition_key!r}) is over "
                f"Kinesis's {MAX_RECORD_BYTES} bytes per record"
            )
        if batch and (len(batch) == MAX_REQUEST_RECORDS or size + record.size > MAX_REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record.size
    if batch:
        yield batch
