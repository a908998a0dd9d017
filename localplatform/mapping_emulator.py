"""Lambda's Kinesis event source mapping semantics, for one batch of one shard (or lane).

The Lambda service, not the function, decides what happens to a batch: ``deliver`` invokes
the function and follows the outcome until every record of the batch has either succeeded or
been discarded to the on-failure destination, as the service does before it moves the shard's
checkpoint. Reading the shard and batching live in ``shard_reader``; this module is pure
(clock, sleep and the function are passed in) so that its semantics are unit-tested.

Semantics (https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html):

- ``ReportBatchItemFailures``: an empty or missing ``batchItemFailures`` is a success; Lambda
  checkpoints at the LOWEST reported sequence number and re-delivers from there; an
  ``itemIdentifier`` that is empty, missing or names no record of the batch fails the whole
  batch. Without the setting the response is ignored.
- A function error (the handler raised or timed out) fails the whole batch; with
  ``BisectBatchOnFunctionError`` the failed records are split in two halves retried in order.
- Every re-delivery of a record counts against ``MaximumRetryAttempts`` (a bisected half
  inherits its parent's count: the emulator's reading, conservative: a record is discarded no
  later than on AWS). When retries are exhausted, or a record is older than
  ``MaximumRecordAgeInSeconds`` when its turn comes, the records go to the on-failure
  destination as one Lambda invocation record (shard and sequence range, no data).
- Between retries the shard waits: exponential backoff from ``retry_backoff_s``. AWS does not
  publish its schedule; a backoff keeps a failing shard from spinning and lets iterator age
  grow as it does on AWS during an outage.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from localplatform.kinesis_events import EventSource, StreamRecord, lambda_event, on_failure_record

Invoke = Callable[[dict[str, Any]], Any]


class Condition(StrEnum):
    RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
    RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


@dataclass(frozen=True)
class MappingSettings:
    batch_size: int = 100
    batching_window_s: float = 0.0
    parallelization_factor: int = 1
    bisect_on_error: bool = False
    report_batch_item_failures: bool = False
    max_retry_attempts: int = -1  # -1: until the record expires, as on AWS
    max_record_age_s: float = -1
    starting_position: str = "LATEST"
    destination_arn: str | None = None
    retry_backoff_s: float = 1.0
    retry_backoff_cap_s: float = 30.0

    @staticmethod
    def from_template(properties: Mapping[str, Any]) -> MappingSettings:
        """From an ``AWS::Lambda::EventSourceMapping``'s resolved properties (AWS defaults
        where the template says nothing)."""
        destination = properties.get("DestinationConfig", {}).get("OnFailure", {})
        return MappingSettings(
            batch_size=int(properties.get("BatchSize", 100)),
            batching_window_s=float(properties.get("MaximumBatchingWindowInSeconds", 0)),
            parallelization_factor=int(properties.get("ParallelizationFactor", 1)),
            bisect_on_error=bool(properties.get("BisectBatchOnFunctionError", False)),
            report_batch_item_failures="ReportBatchItemFailures"
            in properties.get("FunctionResponseTypes", []),
            max_retry_attempts=int(properties.get("MaximumRetryAttempts", -1)),
            max_record_age_s=float(properties.get("MaximumRecordAgeInSeconds", -1)),
            starting_position=str(properties.get("StartingPosition", "LATEST")),
            destination_arn=destination.get("Destination"),
        )


@dataclass
class DeliveryReport:
    invocations: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    succeeded: int = 0
    discarded: dict[Condition, int] = field(default_factory=dict)


@dataclass
class MappingHooks:
    """What the rest of the platform observes; every hook is optional."""

    on_invoke: Callable[[Sequence[StreamRecord]], None] | None = None
    on_success: Callable[[Sequence[StreamRecord]], None] | None = None
    on_discard: Callable[[Sequence[StreamRecord], Condition], None] | None = None


class _WholeBatch:
    """Marker: the response fails the whole batch."""


_WHOLE_BATCH = _WholeBatch()


class BatchDelivery:
    def __init__(
        self,
        settings: MappingSettings,
        source: EventSource,
        invoke: Invoke,
        destination: Callable[[dict[str, Any]], None] | None,
        *,
        hooks: MappingHooks | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.source = source
        self.invoke = invoke
        self.destination = destination
        self.hooks = hooks or MappingHooks()
        self.clock = clock
        self.sleep = sleep

    def deliver(self, batch: Sequence[StreamRecord]) -> DeliveryReport:
        report = DeliveryReport()
        # (records, deliveries so far): the front is always the oldest unresolved records.
        work: deque[tuple[list[StreamRecord], int]] = deque([(list(batch), 0)])
        while work:
            records, deliveries = work.popleft()
            records = self._drop_expired(records, deliveries, report)
            if not records:
                continue
            outcome, function_error = self._invoke(records, report)
            deliveries += 1
            if outcome is None:
                self._succeed(records, report)
                continue
            if isinstance(outcome, int):
                report.partial_failures += 1
                self._succeed(records[:outcome], report)
                failed = records[outcome:]
            else:
                failed = records
            retries = self.settings.max_retry_attempts
            if 0 <= retries < deliveries:
                self._discard(failed, Condition.RETRIES_EXHAUSTED, deliveries, function_error,
                              report)
                continue
            self.sleep(min(self.settings.retry_backoff_cap_s,
                           self.settings.retry_backoff_s * 2 ** (deliveries - 1)))
            if function_error is not None and self.settings.bisect_on_error and len(failed) > 1:
                half = len(failed) // 2
                work.appendleft((failed[half:], deliveries))
                work.appendleft((failed[:half], deliveries))
            else:
                work.appendleft((failed, deliveries))
        return report

    # ---- one invocation ------------------------------------------------------------------
    def _invoke(
        self, records: list[StreamRecord], report: DeliveryReport
    ) -> tuple[int | _WholeBatch | None, str | None]:
        """(None: success | index of the first record to retry | whole batch, function error)"""
        report.invocations += 1
        if self.hooks.on_invoke is not None:
            self.hooks.on_invoke(records)
        try:
            response = self.invoke(lambda_event(records, self.source))
        except Exception:
            report.function_errors += 1
            return _WHOLE_BATCH, "Unhandled"
        if not self.settings.report_batch_item_failures:
            return None, None
        return _first_failed_index(response, records), None

    def _succeed(self, records: list[StreamRecord], report: DeliveryReport) -> None:
        report.succeeded += len(records)
        if records and self.hooks.on_success is not None:
            self.hooks.on_success(records)

    def _drop_expired(
        self, records: list[StreamRecord], deliveries: int, report: DeliveryReport
    ) -> list[StreamRecord]:
        max_age = self.settings.max_record_age_s
        if max_age < 0:
            return records
        now = self.clock()
        expired = [record for record in records if now - record.arrival > max_age]
        if not expired:
            return records
        self._discard(expired, Condition.RECORD_AGE_EXCEEDED, deliveries, None, report)
        return [record for record in records if now - record.arrival <= max_age]

    def _discard(
        self, records: list[StreamRecord], condition: Condition, deliveries: int,
        function_error: str | None, report: DeliveryReport,
    ) -> None:
        report.discarded[condition] = report.discarded.get(condition, 0) + len(records)
        if self.destination is not None:
            self.destination(
                on_failure_record(
                    records, self.source, condition=condition.value,
                    invoke_count=deliveries, function_error=function_error,
                    now=self.clock(), request_id=str(uuid.uuid4()),
                )
            )
        if self.hooks.on_discard is not None:
            self.hooks.on_discard(records, condition)


def _first_failed_index(response: Any, records: list[StreamRecord]) -> int | _WholeBatch | None:
    """Where Lambda checkpoints for a ``ReportBatchItemFailures`` response."""
    if response is None:
        return None
    if not isinstance(response, dict):
        return _WHOLE_BATCH
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    if not isinstance(failures, list):
        return _WHOLE_BATCH
    index_of = {record.sequence_number: index for index, record in enumerate(records)}
    lowest: int | None = None
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in index_of:
            return _WHOLE_BATCH
        # The lowest sequence number, not the first listed: that is where Lambda resumes.
        if lowest is None or records[index_of[identifier]].sequence < records[lowest].sequence:
            lowest = index_of[identifier]
    return lowest
