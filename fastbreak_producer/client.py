"""The producer: validate, key, (optionally) aggregate, batch, send, retry what failed.

A partial PutRecords failure (``FailedRecordCount`` > 0) is retried for the failed records only,
with exponential backoff and full jitter; a record that keeps failing is reported, never
silently dropped. Retries can re-deliver a record Kinesis did store but did not acknowledge:
the processor drops such duplicates by ``event_id`` (docs/exactly-once.md).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fastbreak.engine.kpl import aggregate
from fastbreak_producer.batching import MAX_RECORD_BYTES, OutgoingRecord, requests
from fastbreak_producer.schema import SchemaGate

# Per-call errors worth another try; anything else (a missing stream, bad credentials) is not.
_RETRYABLE_CALL_ERRORS = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "InternalFailure",
    "ServiceUnavailable", "KMSThrottlingException", "LimitExceededException",
})


@dataclass(frozen=True)
class ProducerConfig:
    max_attempts: int = 8
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 5.0
    # Buffer this many records before a flush (one PutRecords carries at most 500).
    buffer_records: int = 500
    # KPL aggregation: events of one partition key share a Kinesis record (fewer, larger
    # records; the processor and Firehose de-aggregate).
    aggregate: bool = False
    validate: bool = True


@dataclass
class SendReport:
    events_accepted: int = 0  # acknowledged by Kinesis
    records_sent: int = 0  # Kinesis records acknowledged (fewer than events when aggregated)
    put_calls: int = 0
    retried_records: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (event id, error code)

    def add(self, other: SendReport) -> None:
        self.events_accepted += other.events_accepted
        self.records_sent += other.records_sent
        self.put_calls += other.put_calls
        self.retried_records += other.retried_records
        self.failed.extend(other.failed)


class Producer:
    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        config: ProducerConfig | None = None,
        *,
        gate: SchemaGate | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.config = config or ProducerConfig()
        self.gate = gate or SchemaGate()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.report = SendReport()
        self._buffer: list[tuple[str, bytes, str]] = []  # (partition key, data, event id)
        self._lock = threading.Lock()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    # ---- what callers use ----------------------------------------------------------------
    def send(self, event: Mapping[str, Any]) -> None:
        """Queue one event; raises ``SchemaError`` before anything is sent if it is invalid."""
        if self.config.validate:
            checked = self.gate.check(event)
            key, event_id = self.gate.partition_key(checked), checked.event_id
        else:
            key, event_id = _best_effort_key(event), str(event.get("event_id", ""))
        data = json.dumps(event, separators=(",", ":")).encode()
        self.send_raw(data, key, event_id)

    def send_raw(self, data: bytes, partition_key: str, event_id: str = "") -> None:
        """Queue bytes as they are, unvalidated: replaying captured records, drills."""
        with self._lock:
            self._buffer.append((partition_key, data, event_id))
            full = len(self._buffer) >= self.config.buffer_records
        if full:
            self.flush()

    def flush(self) -> SendReport:
        with self._lock:
            pending, self._buffer = self._buffer, []
        report = SendReport()
        for request in requests(self._records(pending)):
            report.add(self._put(request))
        with self._lock:
            self.report.add(report)
        return report

    # ---- records and requests ------------------------------------------------------------
    def _records(self, pending: list[tuple[str, bytes, str]]) -> list[OutgoingRecord]:
        if not self.config.aggregate:
            return [OutgoingRecord(key, data, (event_id,)) for key, data, event_id in pending]
        by_key: dict[str, list[tuple[bytes, str]]] = {}
        for key, data, event_id in pending:
            by_key.setdefault(key, []).append((data, event_id))
        records = []
        for key, items in by_key.items():
            records.extend(_aggregates(key, items))
        return records

    def _put(self, request: list[OutgoingRecord]) -> SendReport:
        report = SendReport()
        pending = request
        for attempt in range(1, self.config.max_attempts + 1):
            report.put_calls += 1
            try:
                response = self.kinesis.put_records(
                    StreamName=self.stream_name, Records=[r.entry() for r in pending]
                )
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "ClientError")
                if code not in _RETRYABLE_CALL_ERRORS:
                    raise
                results: list[dict[str, Any]] = [{"ErrorCode": code}] * len(pending)
            except BotoCoreError as error:  # connection reset, timeout: the call may retry
                results = [{"ErrorCode": type(error).__name__}] * len(pending)
            else:
                results = response["Records"]
            failed = []
            for record, result in zip(pending, results, strict=True):
                if result.get("ErrorCode"):
                    failed.append((record, str(result["ErrorCode"])))
                else:
                    report.records_sent += 1
                    report.events_accepted += len(record.event_ids)
            if not failed:
                return report
            if attempt == self.config.max_attempts:
                report.failed.extend(
                    (event_id, code) for record, code in failed for event_id in record.event_ids
                )
                return report
            report.retried_records += len(failed)
            pending = [record for record, _ in failed]
            # Full jitter: spreads the retries of many producers hit by the same throttle.
            ceiling = min(self.config.backoff_cap_s, self.config.backoff_base_s * 2 ** attempt)
            self.sleep(self.rng.uniform(0, ceiling))
        return report


def _aggregates(key: str, items: list[tuple[bytes, str]]) -> list[OutgoingRecord]:
    """KPL aggregates of ``items`` under ``key``, each within the 1 MiB record limit."""
    records: list[OutgoingRecord] = []
    chunk: list[tuple[bytes, str]] = []
    size = 0
    # Protobuf framing and the checksum add a few bytes per record and per aggregate.
    budget = MAX_RECORD_BYTES - len(key.encode()) - 64
    for data, event_id in items:
        if chunk and size + len(data) + 16 > budget:
            records.append(_aggregate(key, chunk))
            chunk, size = [], 0
        chunk.append((data, event_id))
        size += len(data) + 16
    if chunk:
        records.append(_aggregate(key, chunk))
    return records


def _aggregate(key: str, chunk: list[tuple[bytes, str]]) -> OutgoingRecord:
    if len(chunk) == 1:  # an aggregate of one is only larger
        return OutgoingRecord(key, chunk[0][0], (chunk[0][1],))
    return OutgoingRecord(key, aggregate(key, [data for data, _ in chunk]),
                          tuple(event_id for _, event_id in chunk))


def _best_effort_key(event: Mapping[str, Any]) -> str:
    for field_name in ("user_id", "game_id", "content_id", "event_id"):
        value = event.get(field_name)
        if isinstance(value, str) and value:
            return value
    return "unkeyed"
