"""Which user records become events: the one rule the stream processor applies to each record
on its own, and the raw table's ingest applies to the same record (``fastbreak.offline.raw``).

A record is admitted when it validates against its schema version (upcast to the latest) and
its event time is not further ahead of its Kinesis arrival than the producers' clock tolerance;
an admitted event is enriched from reference data. Rules that need more than one record
(duplicates, a group's allowed lateness) are the processor's, and the offline replay's.
"""

from __future__ import annotations

from fastbreak.definitions.model import Catalog
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS
from fastbreak.engine.records import UserRecord
from fastbreak.engine.reference import Enricher
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.validation import Event, EventValidator


class Admission:
    def __init__(
        self, catalog: Catalog, future_tolerance_ms: int = FUTURE_TOLERANCE_SECONDS * 1000
    ) -> None:
        self.validator = EventValidator(catalog)
        self.enricher = Enricher(catalog)
        # Producers' clocks drift; an event further ahead of its arrival than this is refused,
        # so one bad clock cannot open tiles in the future.
        self.future_tolerance_ms = future_tolerance_ms

    def admit(self, record: UserRecord) -> Event | Rejection:
        try:
            outcome = self.validator.validate(record)
        except Exception as error:  # a bug must not block the shard: keep the record
            return Rejection(Reason.UNPROCESSABLE, f"{type(error).__name__}: {error}")
        if isinstance(outcome, Rejection):
            return outcome
        if outcome.time_ms > record.source.arrival_ms + self.future_tolerance_ms:
            return Rejection(
                Reason.EVENT_TIME_IN_FUTURE,
                f"event_time is more than {self.future_tolerance_ms // 60_000} minutes after "
                "the record reached Kinesis",
            )
        if self.enricher.applies_to(outcome.event_type):
            self.enricher.enrich(outcome.event_type, outcome.payload)
        return outcome
