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
# An INT field is a 64-bit integer, as the raw table's Parquet column (bigint) holds it.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

# orjson parses event payloads about 2.7x faster than json; the asset runs without it too.
# Every payload orjson refuses goes through json.loads, whose grammar is wider (NaN and
# Infinity, a BOM, UTF-16 and UTF-32, lone surrogates, numbers past the double range), so a
# payload is JSON exactly when json.loads accepts it, with or without orjson. orjson reads
# integers beyond 64 bits as floats: the field rules below make that invisible (an INT field
# refuses such integers, a DOUBLE field reads every integer as the double nearest to it).
try:
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the installation
    _ORJSON_LOADS: Callable[[bytes], Any] | None = None
else:
    _ORJSON_LOADS = _orjson_loads

# json.loads(bytes) sniffs the encoding (detect_encoding) and builds its decode call on every
# record: about half of the parse time on a 300-byte event. Kinesis payloads are UTF-8, so the
# json path decodes UTF-8 and calls the decoder directly; anything else goes to json.loads.
_RAW_DECODE = json.JSONDecoder().raw_decode
_INVALID = object()  # what a field conversion returns for a value of the wrong type


class UnencodableString(ValueError):
    """The document holds a string with a lone UTF-16 surrogate, which UTF-8 cannot encode."""


def _as_int(value: Any) -> Any:
    return value if type(value) is int and INT_MIN <= value <= INT_MAX else _INVALID


def _as_double(value: Any) -> Any:
    # json.loads accepts NaN and Infinity; neither may reach a sum or a mean.
    if type(value) is float:
        return value if math.isfinite(value) else _INVALID
    if type(value) is int:
        try:
            return float(value)  # correctly rounded: what orjson makes of a very long integer
        except OverflowError:
            return _INVALID
    return _INVALID


def _as_timestamp(value: Any) -> Any:
    return value if type(value) is str and parse_event_time_ms(value) is not None else _INVALID


# A field whose rule is exactly "the value's type is T" is checked inline on the hot path; the
# others convert (or refuse, with _INVALID) the value.
_EXACT_TYPES: dict[FieldType, type] = {FieldType.STRING: str, FieldType.BOOL: bool}
_CONVERSIONS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.INT: _as_int,
    FieldType.DOUBLE: _as_double,
    FieldType.TIMESTAMP: _as_timestamp,
}


def _parse(payload: bytes) -> Any:
    """``json.loads(payload)``, faster on the usual payload; raises ``UnencodableString`` for a
    document that holds a lone surrogate anywhere (json.loads makes one of an escaped
    ``\\ud800`` or of the bytes ED A0 80)."""
    if _ORJSON_LOADS is not None:
        try:
            return _ORJSON_LOADS(payload)  # orjson refuses lone surrogates itself
        except ValueError:
            pass
    else:
        try:
            text = payload.decode()  # strict UTF-8: no surrogate gets through undecoded
            document, end = _RAW_DECODE(text)
        except ValueError:  # not UTF-8, or not JSON from the first character
            pass
        else:
            if end == len(text):
                if "\\u" in text and _holds_lone_surrogate(document):
                    raise UnencodableString
                return document
    # Whatever the fast path did not take (other encodings, a BOM, whitespace, errors) gets
    # exactly json.loads's rules and error.
    document = json.loads(payload)
    if _holds_lone_surrogate(document):
        raise UnencodableString
    return document


def _holds_lone_surrogate(document: Any) -> bool:
    pending = [document]  # a loop, not recursion: json.loads nests as deep as the stack allows
    while pending:
        value = pending.pop()
        if type(value) is str:
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return True
        elif type(value) is dict:
            pending.extend(value)
            pending.extend(value.values())
        elif type(value) is list:
            pending.extend(value)
    return False


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
    # (name, exact type or None, conversion or None, required, default, type name) per field
    fields: tuple[tuple[str, type | None, Callable[[Any], Any] | None, bool, Any, str], ...]
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
                        (f.name, _EXACT_TYPES.get(f.type), _CONVERSIONS.get(f.type),
                         f.required, f.default, f.type.value)
                        for f in schema.fields
                    ),
                    upcast=tuple((f.name, f.default) for f in latest.fields if f.name not in own),
                    entity_key_fields=tuple(latest.entity_keys.values()),
                )
            self._schemas[name] = compiled

    def validate(self, record: UserRecord) -> Event | Rejection:
        try:
            document = _parse(record.payload)
        except UnencodableString:
            return Rejection(
                Reason.UNENCODABLE_STRING,
                "a string holds a lone UTF-16 surrogate, which UTF-8 cannot encode",
            )
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
        for name, exact, convert, required, default, type_name in schema.fields:
            value = document.get(name)
            if value is None:
                if required:
                    return Rejection(Reason.MISSING_FIELD, f"{schema.label}: '{name}' is missing")
                payload[name] = default
            elif type(value) is exact or (
                convert is not None and (value := convert(value)) is not _INVALID
            ):
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
