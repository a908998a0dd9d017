"""Refuse events the processor would quarantine, before they cost a PutRecords.

The gate runs the processor's own validator (``fastbreak.engine.validation``) over the
catalog, so producer and processor cannot disagree about what is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.engine.records import SourceRecord, UserRecord
from fastbreak.engine.rejections import Rejection
from fastbreak.engine.validation import Event, EventValidator

# The validator keeps a reference to the stream record an event came from; before sending
# there is none yet, so every check gets this placeholder.
_NOT_YET_SENT = UserRecord(SourceRecord(0, "0", 0, "", "", 0, ""), 0, b"")


class SchemaError(ValueError):
    """An event does not match the schema version it names; ``reason`` is the processor's
    quarantine code for it."""

    def __init__(self, reason: str, message: str, event_id: Any = None) -> None:
        where = f"event {event_id!r}: " if event_id is not None else ""
        super().__init__(f"{where}{message} ({reason})")
        self.reason = reason
        self.event_id = event_id


class SchemaGate:
    def __init__(self, catalog: Catalog = CATALOG) -> None:
        self.catalog = catalog
        self._validator = EventValidator(catalog)
        self._key_fields = {
            name: _partition_field(catalog, name) for name in catalog.event_names
        }

    def check(self, event: Mapping[str, Any]) -> Event:
        """The validated event; raises ``SchemaError`` naming the field at fault."""
        if not isinstance(event, Mapping):
            raise SchemaError("not_an_object", "an event must be a JSON object")
        outcome = self._validator.validate_document(dict(event), _NOT_YET_SENT)
        if isinstance(outcome, Rejection):
            raise SchemaError(outcome.reason.value, outcome.message, event.get("event_id"))
        return outcome

    def partition_key(self, event: Event) -> str:
        """The key of the catalog's ``partition_entity`` where the event names one (that
        entity's features are then written by one shard, in order), else its first entity."""
        key = event.payload[self._key_fields[event.event_type]]
        assert isinstance(key, str)
        return key


def _partition_field(catalog: Catalog, event_name: str) -> str:
    keys = catalog.latest(event_name).entity_keys
    return keys.get(catalog.partition_entity) or next(iter(keys.values()))
