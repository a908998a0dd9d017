"""KPL de-aggregation against a hand-assembled aggregate and corrupt variants."""

from __future__ import annotations

import hashlib

import pytest

from fastbreak.engine.kpl import MAGIC, KplError, aggregate, deaggregate

# partition_key_table ["pk"]; records [{pk 0, data "a"}, {pk 0, data "bc", tag k=v}]
HAND_MESSAGE = (
    b"\x0a\x02pk"
    + b"\x1a\x05" + b"\x08\x00\x1a\x01a"
    + b"\x1a\x0e" + b"\x08\x00\x1a\x02bc" + b"\x22\x06\x0a\x01k\x12\x01v"
)


def test_deaggregates_a_hand_assembled_record_and_skips_unknown_fields() -> None:
    blob = MAGIC + HAND_MESSAGE + hashlib.md5(HAND_MESSAGE).digest()
    assert deaggregate(blob) == [b"a", b"bc"]


def test_a_record_without_the_magic_is_its_own_single_user_record() -> None:
    assert deaggregate(b'{"event_type":"x"}') == [b'{"event_type":"x"}']


def test_aggregate_round_trips() -> None:
    payloads = [b"x" * n for n in (0, 1, 127, 128, 300, 70_000)]
    assert deaggregate(aggregate("user-1", payloads)) == payloads


def test_a_checksum_mismatch_is_refused() -> None:
    blob = bytearray(aggregate("pk", [b"hello"]))
    blob[-1] ^= 0xFF
    with pytest.raises(KplError, match="checksum"):
        deaggregate(bytes(blob))


@pytest.mark.parametrize(
    "message",
    [b"\x1a\x10short", b"\x1a", b"\x0b", b"\x08" + b"\xff" * 11],
    ids=["length-past-end", "missing-length", "wire-type-3", "varint-too-long"],
)
def test_malformed_protobuf_is_refused(message: bytes) -> None:
    blob = MAGIC + message + hashlib.md5(message).digest()
    with pytest.raises(KplError):
        deaggregate(blob)


def test_magic_without_room_for_a_checksum_is_refused() -> None:
    with pytest.raises(KplError, match="shorter"):
        deaggregate(MAGIC + b"\x00")
