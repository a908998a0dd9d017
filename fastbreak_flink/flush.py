"""What the Flink job does with partials-stream records, in plain Python (no PyFlink import), so
that it is tested, and benchmarked, without a cluster.

- ``PartialsRecord``: one record of the partials stream as the job carries it (its shard, its
  sequence number, its arrival time and its data), built from the Kinesis source's row or from
  a line of a local file.
- ``entity_bucket``: the key the job partitions records by: a bucket of the audience entity the
  partial belongs to, so that every partial of an entity reaches one writer, in stream order.
- ``Flusher``: a key's buffered records through the audience stage's own entry point
  (``AudienceMerger.process_sources``), the records of a failed position retried in place;
  what still fails raises ``FlushFailed``, which makes Flink restart from its last checkpoint.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastbreak.engine.audience import AudienceMerger, AudienceResult
from fastbreak.engine.online_store import RetryPolicy
from fastbreak.engine.partials import decode
from fastbreak.engine.records import MAX_SEQUENCE_DIGITS, SourceRecord, user_records
from fastbreak.engine.rejections import Rejection

# (shard id, sequence number, arrival in epoch ms, data as base64): a tuple, the form Flink
# serializes cheaply between operators and keeps in its keyed state.
PartialsRecord = tuple[str, str, int, str]


def from_kinesis_row(shard_id: str, sequence_number: str, arrival_ms: int,
                     data: bytes) -> PartialsRecord:
    """A row of the Kinesis table source (``data`` and the shard-id, sequence-number and
    timestamp metadata columns)."""
    return (shard_id, sequence_number, arrival_ms, base64.b64encode(data).decode("ascii"))


def from_json_line(line: str) -> PartialsRecord:
    """A line of a local records file: ``{"shard_id", "sequence_number", "arrival_ms", "data"}``
    with ``data`` in base64, the shape ``records_file`` writes."""
    document = json.loads(line)
    return (document["shard_id"], document["sequence_number"], int(document["arrival_ms"]),
            document["data"])


def to_json_line(shard_id: str, sequence_number: str, arrival_ms: int, data: bytes) -> str:
    return json.dumps({"shard_id": shard_id, "sequence_number": sequence_number,
                       "arrival_ms": arrival_ms,
                       "data": base64.b64encode(data).decode("ascii")}, sort_keys=True)


def source_record(record: PartialsRecord, index: int) -> SourceRecord:
    """The engine's form of a record. The Kinesis source hands valid sequence numbers; one that
    is not a decimal string is a bug upstream, and fails loudly rather than being skipped."""
    shard_id, sequence_number, arrival_ms, data = record
    if not (sequence_number.isdigit() and len(sequence_number) <= MAX_SEQUENCE_DIGITS):
        raise ValueError(f"sequence number {sequence_number[:40]!r} of shard {shard_id} is not "
                         "a decimal string")
    return SourceRecord(index, sequence_number, int(sequence_number), shard_id, "", arrival_ms,
                        data)


def entity_bucket(record: PartialsRecord, buckets: int) -> int:
    """The key of a record: a stable hash of its entity (``game#g1``) into ``buckets``.

    Every partial of an entity lands in one bucket, so one Flink subtask writes the entity's
    items, in the order of the stream, as the items' high-water marks require. A bucket holds
    many entities, so that a flush writes many items in one round and each partials shard's
    dedup item once. Stage 1 writes one partial per record, partitioned by its entity; a record
    that is not readable as a partial goes to bucket 0, where the merge quarantines it.
    """
    source = source_record(record, 0)
    decoded = user_records(source)
    if isinstance(decoded, Rejection) or not decoded:
        return 0
    partial = decode(decoded[0].payload)
    if isinstance(partial, Rejection):
        return 0
    return zlib.crc32(partial.partition_key.encode()) % buckets


class FlushFailed(RuntimeError):
    """Records still failed after the flush's retries: the job fails, and Flink restarts it
    from its last checkpoint (the merge is idempotent by position, so nothing applies twice)."""


@dataclass
class FlushReport:
    records: int = 0
    attempts: int = 0
    results: list[AudienceResult] = field(default_factory=list)

    @property
    def item_writes(self) -> int:
        return sum(result.writes.writes for result in self.results)

    @property
    def partials(self) -> int:
        # a retry decodes its records again: the first attempt counts every partial once
        return self.results[0].partials_in if self.results else 0


class Flusher:
    """One key's buffered records through the audience stage's merge.

    A failed position fails every later record of its shard (the Lambda stage's rule); those
    records are merged again after a pause, up to ``attempts`` times: a retry skips what the
    failed attempt applied (each item remembers its shard's last applied position).
    """

    def __init__(self, merger: AudienceMerger, attempts: int = 4,
                 pause: Callable[[int], bool] | None = None) -> None:
        self.merger = merger
        self.attempts = attempts
        self._pause = pause or RetryPolicy(max_attempts=attempts, base_delay_s=0.2).pause

    def flush(self, records: Sequence[PartialsRecord]) -> FlushReport:
        # Each shard's records in stream order (a buffer holds them so already; a restored
        # buffer followed by re-read records may not).
        ordered = sorted(records, key=lambda record: (record[0], int(record[1])))
        sources = [source_record(record, index) for index, record in enumerate(ordered)]
        report = FlushReport(records=len(sources))
        while sources:
            result = self.merger.process_sources(sources)
            report.results.append(result)
            report.attempts += 1
            failed = set(result.failed_sequence_numbers)
            if not failed:
                return report
            if report.attempts >= self.attempts or not self._pause(report.attempts - 1):
                first = min(failed, key=int)
                raise FlushFailed(f"{len(failed)} partials-stream records still failed after "
                                  f"{report.attempts} attempts (from sequence number {first})")
            sources = [source for source in sources if source.sequence_number in failed]
        return report


def summary(report: FlushReport) -> dict[str, Any]:
    """What a flush did, in the names of the Lambda stage's metrics."""
    first = report.results[0] if report.results else AudienceResult()
    return {
        "RecordsIn": report.records,
        "PartialsIn": report.partials,
        "RecordsInvalid": sum(first.invalid_by_reason.values()),
        "DuplicatePartials": first.duplicate_partials,
        "ItemsTooLarge": first.items_too_large,
        "ItemWrites": report.item_writes,
        "FlushAttempts": report.attempts,
    }

