"""Validate decoded events against the schema version they name, and upcast to the latest.

Validators are compiled once per (event type, version) from the catalog: the hot path is a
loop over precomputed (field, check, default) tuples on a plain dict, no model object per
record. Older versions are upcast by filling the fields they lack with the latest version's
defaults; ``tests/unit/test_schema_compatibility.py`` guarantees such a default exists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastbreak.definitions.model import Catalog, FieldType
from fastbreak.engine.records import Position, UserRecord
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.timestamps import parse_event_time_ms

MAX_EVENT_ID_LENGTH = 128
MAX_ENTITY_KEY_LENGTH = 256

# json.loads(bytes) sniffs the encoding (detect_encoding) and builds its decode call on every
# record: about half of the parse time on a 300-byte event. Kinesis payloads are UTF-8, so the
# hot path decodes UTF-8 and calls the decoder directly; anything else goes to json.loads.
_RAW_DECODE = json.JSONDecoder().raw_decode


def _is_string(value: Any) -> bool:
    return type(value) is str


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_double(value: Any) -> bool:
    # json.loads accepts NaN and Infinity; neither may reach a sum or a mean.
    return (type(value) is float and math.isfinite(value)) or type(value) is int


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_timestamp(value: Any) -> bool:
    return type(value) is str and parse_event_time_ms(value) is not None


# Checks that are exactly "the value's type is T" are done inline on the hot path.
_EXACT_TYPES: dict[FieldType, type] = {FieldType.STRING: str, FieldType.INT: int,
                                      FieldType.BOOL: bool}

_CHECKS: dict[FieldType, Callable[[Any], bool]] = {
    FieldType.STRING: _is_string,
    FieldType.INT: _is_int,
    FieldType.DOUBLE: _is_double,
    FieldType.BOOL: _is_bool,
    FieldType.TIMESTAMP: _is_timestamp,
}


def _parse(payload: bytes) -> Any:
    """``json.loads(payload)``, faster on the usual payload: UTF-8, no surrounding whitespace."""
    try:
        text = payload.decode()
        document, end = _RAW_DECODE(text)
        if end == len(text):
            return document
    except ValueError:  # not UTF-8, or not JSON from the first character
        pass
    # Whatever the fast path did not take (other encodings, a BOM, whitespace, errors) gets
    # exactly json.loads's rules and error.
    return json.loads(payload)


class Event:
    """A valid event, upcast to the latest schema version of its type."""

    __slots__ = ("event_id", "event_type", "payload", "position", "record", "time_ms")

    def __init__(
        self, event_type: str, event_id: str, time_ms: int, payload: dict[str, Any],
        record: UserRecord,
    ) -> None:
        self.event_type = event_type
        self.event_id = event_id
        self.time_ms = time_ms
        self.payload = payload
        self.record = record
        self.position: Position = (record.source.sequence, record.sub_index)


@dataclass(frozen=True)
class _CompiledSchema:
    label: str
    # (name, exact type or None, check, required, default, type name) per declared field
    fields: tuple[tuple[str, type | None, Callable[[Any], bool], bool, Any, str], ...]
    # fields of the latest version this one lacks, with the default that upcasting fills in
    upcast: tuple[tuple[str, Any], ...]
    entity_key_fields: tuple[str, ...]


class EventValidator:
    def __init__(self, catalog: Catalog) -> None:
        self._schemas: dict[str, dict[int, _CompiledSchema]] = {}
        for name in catalog.event_names:
            latest = catalog.latest(name)
            compiled: dict[int, _CompiledSchema] = {}
            for schema in catalog.versions_of(name):
                own = {f.name for f in schema.fields}
                compiled[schema.version] = _CompiledSchema(
                    label=schema.label,
                    fields=tuple(
                        (f.name, _EXACT_TYPES.get(f.type), _CHECKS[f.type], f.required,
                         f.default, f.type.value)
                        for f in schema.fields
                    ),
                    upcast=tuple((f.name, f.default) for f in latest.fields if f.name not in own),
                    entity_key_fields=tuple(latest.entity_keys.values()),
                )
            self._schemas[name] = compiled

    def validate(self, record: UserRecord) -> Event | Rejection:
        try:
            document = _parse(record.payload)
        except (ValueError, RecursionError):
            return Rejection(Reason.BAD_JSON, "payload is not JSON (or not UTF-8)")
        if type(document) is not dict:
            return Rejection(Reason.NOT_AN_OBJECT, "payload is not a JSON object")
        return self.validate_document(document, record)

    def validate_document(self, document: dict[str, Any], record: UserRecord) -> Event | Rejection:
        event_type = document.get("event_type")
        version = document.get("schema_version")
        event_id = document.get("event_id")
        event_time = document.get("event_time")
        if event_type is None or version is None or event_id is None or event_time is None:
            return Rejection(
                Reason.MISSING_ENVELOPE_FIELD,
                "event_type, schema_version, event_id and event_time are all required",
            )
        versions = self._schemas.get(event_type) if type(event_type) is str else None
        if versions is None:
            return Rejection(Reason.UNKNOWN_EVENT_TYPE, f"unknown event_type {event_type!r:.80}")
        schema = versions.get(version) if type(version) is int else None
        if schema is None:
            return Rejection(
                Reason.UNKNOWN_SCHEMA_VERSION,
                f"{event_type} has no schema_version {version!r:.20}; known: {sorted(versions)}",
            )
        if type(event_id) is not str or not 0 < len(event_id) <= MAX_EVENT_ID_LENGTH:
            return Rejection(Reason.BAD_EVENT_ID, "event_id must be a non-empty string ≤ 128")
        time_ms = parse_event_time_ms(event_time) if type(event_time) is str else None
        if time_ms is None:
            return Rejection(
                Reason.BAD_EVENT_TIME, "event_time must be ISO-8601 with a timezone"
            )
        payload: dict[str, Any] = {}
        for name, exact, check, required, default, type_name in schema.fields:
            value = document.get(name)
            if value is None:
                if required:
                    return Rejection(Reason.MISSING_FIELD, f"{schema.label}: '{name}' is missing")
                payload[name] = default
            elif type(value) is exact if exact is not None else check(value):
                payload[name] = value
            else:
                return Rejection(
                    Reason.WRONG_TYPE, f"{schema.label}: '{name}' is not a {type_name}"
                )
        for name, default in schema.upcast:
            payload[name] = default
        for name in schema.entity_key_fields:
            key = payload[name]
            if type(key) is not str or not 0 < len(key) <= MAX_ENTITY_KEY_LENGTH:
                return Rejection(
                    Reason.BAD_ENTITY_KEY, f"{schema.label}: '{name}' must have 1..256 characters"
                )
        return Event(event_type, event_id, time_ms, payload, record)
