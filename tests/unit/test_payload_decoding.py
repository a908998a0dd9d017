"""Payload decoding: lone surrogates, the number rules, and the same outcome with orjson as
with json (the Lambda asset may run without orjson)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbreak.engine import validation
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.validation import INT_MAX, INT_MIN, Event
from tests.unit.test_validation import validate, view

SURROGATE = "\ud800"


def play(**overrides: Any) -> dict[str, Any]:
    document = {
        "event_type": "video_play", "schema_version": 1, "event_id": "e", "user_id": "u",
        "event_time": "2026-11-26T18:30:00Z", "content_id": "c", "game_id": "g",
        "watch_seconds": 1.5,
    }
    document.update(overrides)
    return document


def click(position: Any) -> dict[str, Any]:
    return view(event_type="content_click", schema_version=1, sport=..., surface=...,
                position=position)


def escaped(document: Any) -> bytes:
    """The surrogate as JSON escapes it: ``\\ud800`` (what json.dumps writes by default)."""
    return json.dumps(document).encode()


def raw_bytes(document: Any) -> bytes:
    """The surrogate as the bytes ED A0 80, which json.loads decodes to one."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


@pytest.fixture(params=["orjson", "json"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test here runs with orjson and with json alone (an asset without orjson)."""
    if request.param == "json":
        monkeypatch.setattr(validation, "_ORJSON_LOADS", None)
    yield request.param


def test_orjson_is_the_decoder_where_it_is_installed() -> None:
    assert validation._ORJSON_LOADS is not None


# ---- lone surrogates ----------------------------------------------------------------------------
@pytest.mark.parametrize("encode", [escaped, raw_bytes], ids=["escaped", "bytes-ed-a0-80"])
@pytest.mark.parametrize(
    "document",
    [
        view(user_id=SURROGATE), view(content_id="c" + SURROGATE), view(event_id=SURROGATE),
        view(sport=SURROGATE), view(surface="x" + SURROGATE + "y"),
        view(extra=SURROGATE),  # a field no schema declares
        view(extra={"nested": [1, {"deeper": SURROGATE}]}),
        view(extra={SURROGATE: 1}),  # in a key
        view(event_type="content_share" + SURROGATE),
        {"experiment_id": "x", "variant": "\udfff", "event_type": "experiment_exposure",
         "schema_version": 1, "event_id": "e", "event_time": "2026-11-26T18:30:00Z",
         "user_id": "u"},
    ],
    ids=["user_id", "content_id", "event_id", "sport", "surface", "undeclared", "nested", "key",
         "event_type", "low-surrogate"],
)
def test_a_lone_surrogate_anywhere_is_refused_as_unencodable(
    decoder: str, encode: Any, document: dict[str, Any]
) -> None:
    outcome = validate(encode(document))
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.UNENCODABLE_STRING


@pytest.mark.parametrize("encode", [escaped, raw_bytes], ids=["escaped", "utf-8"])
def test_a_surrogate_pair_is_one_character_and_valid(decoder: str, encode: Any) -> None:
    outcome = validate(encode(view(sport="\U0001f3c0")))  # "\ud83c\udfc0" when escaped
    assert isinstance(outcome, Event) and outcome.payload["sport"] == "\U0001f3c0"


# ---- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "valid"),
    [(0, True), (INT_MAX, True), (INT_MIN, True), (INT_MAX + 1, False), (INT_MIN - 1, False),
     (2**64 - 1, False), (2**64, False), (10**30, False), (-(10**400), False)],
)
def test_an_int_field_is_a_64_bit_integer(decoder: str, value: int, valid: bool) -> None:
    outcome = validate(escaped(click(value)))
    if valid:
        assert isinstance(outcome, Event) and outcome.payload["position"] == value
        assert type(outcome.payload["position"]) is int
    else:
        assert isinstance(outcome, Rejection) and outcome.reason is Reason.WRONG_TYPE
        assert "'position' is not a int" in outcome.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5", 5.0), ("-0", 0.0), ("9007199254740993", 9007199254740992.0),
     ("100000000000000000000000000000", 1e29), ("1" + "0" * 308, 1e308), ("1.5", 1.5)],
)
def test_a_double_field_reads_an_integer_as_the_nearest_double(
    decoder: str, text: str, expected: float
) -> None:
    payload = escaped(play()).replace(b'"watch_seconds": 1.5', b'"watch_seconds": ' + text.encode())
    outcome = validate(payload)
    assert isinstance(outcome, Event)
    assert type(outcome.payload["watch_seconds"]) is float
    assert outcome.payload["watch_seconds"] == expected


@pytest.mark.parametrize("text", ["1" + "0" * 309, "1e309", "NaN", "-Infinity"])
def test_a_double_field_refuses_numbers_past_the_double_range(decoder: str, text: str) -> None:
    payload = escaped(play()).replace(b'"watch_seconds": 1.5', b'"watch_seconds": ' + text.encode())
    outcome = validate(payload)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.WRONG_TYPE


# ---- orjson and json agree --------------------------------------------------------------------
def _outcome(payload: bytes, monkeypatch: pytest.MonkeyPatch, with_orjson: bool) -> Any:
    with monkeypatch.context() as patch:
        if not with_orjson:
            patch.setattr(validation, "_ORJSON_LOADS", None)
        outcome = validate(payload)
    if isinstance(outcome, Rejection):
        return outcome.reason
    return outcome.event_type, outcome.event_id, outcome.time_ms, [
        (name, type(value), value) for name, value in outcome.payload.items()
    ]


CORPUS = [
    escaped(play()),
    b" \n" + escaped(play()) + b"\t",
    escaped(play()).decode().encode("utf-8-sig"),
    escaped(play()).decode().encode("utf-16"),
    escaped(play(watch_seconds=float("nan"))),
    escaped(play(watch_seconds=float("inf"))),
    escaped(play(watch_seconds=1e-320)),  # subnormal
    escaped(play(watch_seconds=-0.0)),
    escaped(play(extra=[10**40, -(2**64), 2**63])),
    escaped(play(schema_version=10**30)),
    escaped(play(event_id=SURROGATE)),
    raw_bytes(play(game_id=SURROGATE)),
    escaped(play(game_id="\u0000\u2028\\\"")),
    escaped(play()) + b"{}",
    escaped(play())[:-1],
    b"[" * 2000 + b"]" * 2000,  # deeper than orjson's limit, within json's
    b"[" * 100_000 + b"]" * 100_000,
    b'{"event_type": "video_play", "event_type": "content_view"}',
    b"",
    b"\xff",
]


@pytest.mark.parametrize("payload", CORPUS, ids=range(len(CORPUS)))
def test_orjson_and_json_give_the_same_outcome(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _outcome(payload, monkeypatch, True) == _outcome(payload, monkeypatch, False)


number_texts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(10**320), max_value=10**320).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(text=number_texts)
def test_orjson_and_json_read_every_number_text_alike(text: str) -> None:
    payload = escaped(play()).replace(b'"watch_seconds": 1.5', b'"watch_seconds": ' + text.encode())
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _outcome(payload, monkeypatch, True) == _outcome(payload, monkeypatch, False)


@settings(max_examples=200, deadline=None)
@given(text=number_texts)
def test_orjson_and_json_read_every_number_text_alike_in_an_int_field(text: str) -> None:
    payload = escaped(click(0)).replace(b'"position": 0', b'"position": ' + text.encode())
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _outcome(payload, monkeypatch, True) == _outcome(payload, monkeypatch, False)
