"""Decode, validate, upcast: every reason code, and the shape of a valid event."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from fastbreak.definitions import CATALOG
from fastbreak.engine.kpl import aggregate
from fastbreak.engine.records import SourceRecord, UserRecord, read_source, user_records
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.validation import Event, EventValidator
from localplatform.kinesis_events import StreamRecord, lambda_record

VALIDATOR = EventValidator(CATALOG)
SOURCE = SourceRecord(0, "1", 1, "shardId-000000000000", "u1", 1_795_717_800_000, "")


def view(**overrides: Any) -> dict[str, Any]:
    document = {
        "event_type": "content_view", "schema_version": 2, "event_id": "e-1",
        "event_time": "2026-11-26T18:30:00.123Z", "user_id": "u1", "content_id": "c1",
        "sport": "nba", "surface": "home",
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not ...}


def validate(document: Any) -> Event | Rejection:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    return VALIDATOR.validate(UserRecord(SOURCE, 0, payload))


def test_a_valid_event_keeps_declared_fields_and_its_time_in_epoch_ms() -> None:
    event = validate(view(extra="ignored"))
    assert isinstance(event, Event)
    assert event.time_ms == 1_795_717_800_123
    assert event.payload == {"user_id": "u1", "content_id": "c1", "sport": "nba",
                             "surface": "home"}
    assert event.position == (1, 0)


def test_the_previous_version_is_upcast_with_the_new_fields_default() -> None:
    event = validate(view(schema_version=1, surface=...))
    assert isinstance(event, Event)
    assert event.payload["surface"] == "unknown"


def test_an_optional_field_sent_as_null_takes_its_default() -> None:
    event = validate(view(surface=None))
    assert isinstance(event, Event) and event.payload["surface"] == "unknown"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"\xff\xfe not json", Reason.BAD_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (view(event_id=...), Reason.MISSING_ENVELOPE_FIELD),
        (view(event_type="content_share"), Reason.UNKNOWN_EVENT_TYPE),
        (view(event_type=["content_view"]), Reason.UNKNOWN_EVENT_TYPE),
        (view(schema_version=9), Reason.UNKNOWN_SCHEMA_VERSION),
        (view(schema_version="2"), Reason.UNKNOWN_SCHEMA_VERSION),
        (view(schema_version=True), Reason.UNKNOWN_SCHEMA_VERSION),
        (view(event_id=""), Reason.BAD_EVENT_ID),
        (view(event_id="x" * 129), Reason.BAD_EVENT_ID),
        (view(event_time="2026-11-26T18:30:00"), Reason.BAD_EVENT_TIME),
        (view(event_time="yesterday"), Reason.BAD_EVENT_TIME),
        (view(event_time=1795717800), Reason.BAD_EVENT_TIME),
        (view(content_id=...), Reason.MISSING_FIELD),
        (view(content_id=42), Reason.WRONG_TYPE),
        (view(user_id=""), Reason.BAD_ENTITY_KEY),
    ],
    ids=lambda value: value.value if isinstance(value, Reason) else "",
)
def test_invalid_events_are_rejected_with_a_stable_reason(document: Any, reason: Reason) -> None:
    outcome = validate(document)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is reason
    assert outcome.message


@pytest.mark.parametrize(
    ("encode", "valid"),
    [
        (lambda text: text.encode(), True),
        (lambda text: f" \n{text}\t ".encode(), True),
        (lambda text: text.encode("utf-8-sig"), True),
        (lambda text: text.encode("utf-16"), True),
        (lambda text: text.encode("utf-32-le"), True),
        (lambda text: (text + "{}").encode(), False),
        (lambda text: text.encode()[:-1], False),
        (lambda text: text.encode() + b"\xff", False),
        (lambda text: b"", False),
    ],
    ids=["utf8", "whitespace", "bom", "utf16", "utf32", "extra", "truncated", "bad-utf8", "empty"],
)
def test_a_payload_is_json_exactly_when_json_loads_accepts_it(encode: Any, valid: bool) -> None:
    # The validator parses UTF-8 on a fast path; every other payload must fare as in json.loads.
    outcome = validate(encode(json.dumps(view())))
    if valid:
        assert isinstance(outcome, Event) and outcome.event_id == "e-1"
    else:
        assert isinstance(outcome, Rejection) and outcome.reason is Reason.BAD_JSON


def test_a_deeply_nested_payload_is_refused_not_raised() -> None:
    outcome = validate(b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.BAD_JSON


@pytest.mark.parametrize(
    ("document", "reason", "field"),
    [
        (view(content_id=...), Reason.MISSING_FIELD, "content_id"),
        (view(sport=None), Reason.MISSING_FIELD, "sport"),
        (view(content_id=42), Reason.WRONG_TYPE, "content_id"),
        (view(surface=False), Reason.WRONG_TYPE, "surface"),
        (view(user_id="x" * 257), Reason.BAD_ENTITY_KEY, "user_id"),
    ],
)
def test_a_field_rejection_names_the_field(document: Any, reason: Reason, field: str) -> None:
    outcome = validate(document)
    assert isinstance(outcome, Rejection) and outcome.reason is reason
    assert f"'{field}'" in outcome.message and "content_view" in outcome.message


@pytest.mark.parametrize(
    ("value", "valid"),
    [(12.5, True), (12, True), (True, False), ("12", False), (float("nan"), False),
     (float("inf"), False)],
)
def test_a_double_field_takes_finite_numbers_only(value: Any, valid: bool) -> None:
    document = {
        "event_type": "video_play", "schema_version": 1, "event_id": "e",
        "event_time": "2026-11-26T18:30:00Z", "user_id": "u", "content_id": "c", "game_id": "g",
        "watch_seconds": value,
    }
    outcome = validate(json.dumps(document).encode())  # NaN/Infinity as json.dumps writes them
    assert isinstance(outcome, Event) is valid


def test_an_int_field_refuses_booleans_and_floats() -> None:
    for value in (True, 3.0):
        outcome = validate(view(event_type="content_click", schema_version=1, position=value))
        assert isinstance(outcome, Rejection) and outcome.reason is Reason.WRONG_TYPE


def test_kinesis_records_decode_plain_and_kpl_payloads_with_positions() -> None:
    plain = read_source(lambda_record(StreamRecord("77", "u1", b'{"a":1}', 1.5)), 0)
    assert isinstance(plain, SourceRecord)
    assert (plain.sequence, plain.arrival_ms, plain.shard_id) == (77, 1500, "shardId-000000000000")
    decoded = user_records(plain)
    assert isinstance(decoded, list) and [r.payload for r in decoded] == [b'{"a":1}']
    kpl = read_source(lambda_record(StreamRecord("78", "u1", aggregate("u1", [b"1", b"2"]), 2)), 1)
    assert isinstance(kpl, SourceRecord)
    decoded = user_records(kpl)
    assert isinstance(decoded, list)
    assert [r.position for r in decoded] == [(78, 0), (78, 1)]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("kinesis"),
        lambda r: r["kinesis"].pop("sequenceNumber"),
        lambda r: r["kinesis"].update(sequenceNumber="12a"),
        lambda r: r["kinesis"].update(sequenceNumber="9" * 130),
        lambda r: r["kinesis"].update(sequenceNumber="012"),
        lambda r: r["kinesis"].update(sequenceNumber=""),
        lambda r: r["kinesis"].update(sequenceNumber=" 12"),
        lambda r: r["kinesis"].update(sequenceNumber="\u0663"),  # a digit, but not an ASCII one
        lambda r: r["kinesis"].update(sequenceNumber=12),
        lambda r: r.update(eventID=None),
        lambda r: r.update(eventID="no-colon"),
        lambda r: r.update(eventID=":5"),
        lambda r: r.update(eventID="shard/one:5"),  # would become a folder of the S3 key
        lambda r: r.update(eventID="shard=1,x:5"),  # the separators of the hw text
        lambda r: r.update(eventID="shard\ud800:5"),  # cannot be encoded into any key
        lambda r: r["kinesis"].update(approximateArrivalTimestamp="now"),
        lambda r: r["kinesis"].update(data=7),
    ],
)
def test_malformed_lambda_records_are_refused(mutate: Any) -> None:
    raw = lambda_record(StreamRecord("5", "u1", b"{}", 1.0))
    mutate(raw)
    outcome = read_source(raw, 0)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.BAD_KINESIS_RECORD


@pytest.mark.parametrize(
    ("arrival", "arrival_ms"),
    [(1.5, 1500), (2, 2000), (True, None), (None, None), ("1", None), (float("inf"), None),
     (float("-inf"), None), (float("nan"), None), (-1.0, None), (1e300, None), (10**400, None),
     (253_402_300_799.5, 253_402_300_799_500)],
)
def test_the_arrival_time_is_a_number_of_seconds_and_not_a_bool(
    arrival: Any, arrival_ms: int | None,
) -> None:
    raw = lambda_record(StreamRecord("5", "u1", b"{}", 1.0))
    raw["kinesis"]["approximateArrivalTimestamp"] = arrival
    outcome = read_source(raw, 0)
    if arrival_ms is None:
        assert isinstance(outcome, Rejection) and outcome.reason is Reason.BAD_KINESIS_RECORD
    else:
        assert isinstance(outcome, SourceRecord) and outcome.arrival_ms == arrival_ms


@pytest.mark.parametrize("digits", [1, 56, 128, 129])
def test_sequence_numbers_of_up_to_129_digits_are_positions(digits: int) -> None:
    sequence_number = "0" if digits == 1 else "9" * digits  # 0|([1-9]\d{0,128})
    source = read_source(lambda_record(StreamRecord(sequence_number, "u1", b"{}", 1.0)), 0)
    assert isinstance(source, SourceRecord) and source.sequence == int(sequence_number)


def test_a_kpl_aggregate_with_no_user_record_is_refused_not_consumed() -> None:
    source = read_source(lambda_record(StreamRecord("5", "u1", aggregate("u1", []), 1.0)), 0)
    assert isinstance(source, SourceRecord)
    outcome = user_records(source)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.KPL_EMPTY


def test_a_record_keeps_its_partition_key_as_text_and_its_index_in_the_batch() -> None:
    raw = lambda_record(StreamRecord("5", "u1", b"{}", 1.0))
    assert isinstance(source := read_source(raw, 3), SourceRecord)
    assert (source.index, source.partition_key, source.sequence_number) == (3, "u1", "5")
    raw["kinesis"]["partitionKey"] = 42
    assert isinstance(source := read_source(raw, 0), SourceRecord) and source.partition_key == "42"
    del raw["kinesis"]["partitionKey"]
    assert isinstance(source := read_source(raw, 0), SourceRecord) and source.partition_key == ""


def test_data_that_is_not_base64_is_refused() -> None:
    raw = lambda_record(StreamRecord("5", "u1", b"{}", 1.0))
    raw["kinesis"]["data"] = "not base64!"
    source = read_source(raw, 0)
    assert isinstance(source, SourceRecord)
    outcome = user_records(source)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.BAD_BASE64


def test_a_broken_kpl_aggregate_is_refused_as_corrupt() -> None:
    blob = bytearray(aggregate("u1", [b"{}"]))
    blob[-3] ^= 1
    raw = lambda_record(StreamRecord("5", "u1", bytes(blob), 1.0))
    source = read_source(raw, 0)
    assert isinstance(source, SourceRecord)
    outcome = user_records(source)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.KPL_CORRUPT
    assert base64.b64decode(source.data) == bytes(blob)
