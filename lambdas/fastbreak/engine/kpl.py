"""KPL aggregated records: de-aggregation (and aggregation, for tests and the local platform).

Format (amazon-kinesis-producer, aggregation-format.md): the 4 magic bytes F3 89 9A C2, then a
protobuf ``AggregatedRecord``, then the MD5 digest of the protobuf bytes::

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }

Only ``records[].data`` matters to Fastbreak (a user record's position is its parent's sequence
number plus its index), so the reader below decodes just enough protobuf to get it: a dozen
lines instead of a dependency in the Lambda asset.
"""

from __future__ import annotations

import hashlib

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_SIZE = 16


class KplError(ValueError):
    """The record carries the KPL magic but is not a well-formed aggregate."""


def is_aggregated(data: bytes) -> bool:
    return data[:4] == MAGIC


def deaggregate(data: bytes) -> list[bytes]:
    """The user records inside ``data``; a record without the magic is its own single record."""
    if not is_aggregated(data):
        return [data]
    if len(data) < len(MAGIC) + _DIGEST_SIZE:
        raise KplError("aggregated record shorter than magic plus checksum")
    message = data[len(MAGIC) : -_DIGEST_SIZE]
    if hashlib.md5(message, usedforsecurity=False).digest() != data[-_DIGEST_SIZE:]:
        raise KplError("aggregated record checksum does not match")
    records = [
        _record_data(body) for number, body in _fields(message) if number == 3
    ]
    return records


def aggregate(partition_key: str, payloads: list[bytes]) -> bytes:
    """One KPL aggregated record holding ``payloads`` under one partition key."""
    message = _length_delimited(1, partition_key.encode())
    for payload in payloads:
        record = _varint_field(1, 0) + _length_delimited(3, payload)
        message += _length_delimited(3, record)
    return MAGIC + message + hashlib.md5(message, usedforsecurity=False).digest()


def _record_data(record: object) -> bytes:
    if not isinstance(record, bytes):
        raise KplError("field 'records' is not length-delimited")
    for number, value in _fields(record):
        if number == 3 and isinstance(value, bytes):
            return value
    raise KplError("a record has no data field")


def _fields(buffer: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a protobuf message; unknown fields kept."""
    fields: list[tuple[int, int | bytes]] = []
    offset, end = 0, len(buffer)
    while offset < end:
        key, offset = _varint(buffer, offset)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, offset = _varint(buffer, offset)
        elif wire_type == 2:
            length, offset = _varint(buffer, offset)
            if offset + length > end:
                raise KplError("length-delimited field runs past the end")
            value, offset = buffer[offset : offset + length], offset + length
        elif wire_type == 1:
            value, offset = int.from_bytes(buffer[offset : offset + 8], "little"), offset + 8
        elif wire_type == 5:
            value, offset = int.from_bytes(buffer[offset : offset + 4], "little"), offset + 4
        else:
            raise KplError(f"unsupported protobuf wire type {wire_type}")
        if offset > end:
            raise KplError("field runs past the end")
        fields.append((number, value))
    return fields


def _varint(buffer: bytes, offset: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if offset >= len(buffer) or shift > 63:
            raise KplError("truncated or oversized varint")
        byte = buffer[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _encode_varint(number << 3) + _encode_varint(value)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload
