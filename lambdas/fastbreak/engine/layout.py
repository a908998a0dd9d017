"""Where state lives in the online store table (``pk``/``sk`` strings, TTL ``expires_at``).

See ``docs/online-store-layout.md``. Every feature item is a *per-shard partial*: written only
by the processor of one Kinesis shard, holding absolute state plus the highest position of
that shard already folded in (``hw``). Readers merge partials across shards and tiles.

    pk = "{entity}#{entity key}"
    sk = "{group}#t{tile seconds}#{tile start, epoch s, 11 digits}#{shard id}"   tile item
    sk = "{group}#life#{shard id}"                                                lifetime item
    pk = "_dedup#{shard id}", sk = "{bucket start, epoch s, 11 digits}"          seen event ids
"""

from __future__ import annotations

from dataclasses import dataclass

from fastbreak.engine.plan import LIFETIME
from fastbreak.engine.records import Position

ItemKey = tuple[str, str]

DEDUP_PREFIX = "_dedup#"
# Event ids are remembered per (shard, 10 s of event time): at a shard's 1,000 records/s that
# is at most 80 KB of 8-byte hashes per item, well inside the 400 KB item limit.
DEDUP_BUCKET_SECONDS = 10


def entity_pk(entity: str, key: str) -> str:
    return f"{entity}#{key}"


def item_sk(group: str, tile_seconds: int, tile_start: int, shard_id: str) -> str:
    if tile_seconds == LIFETIME:
        return f"{group}#life#{shard_id}"
    return f"{group}#t{tile_seconds}#{tile_start:011d}#{shard_id}"


def group_prefix(group: str) -> str:
    return f"{group}#"


@dataclass(frozen=True, slots=True)
class ParsedSk:
    group: str
    tile_seconds: int  # LIFETIME for the lifetime item
    tile_start: int
    shard_id: str


def parse_sk(sk: str) -> ParsedSk:
    parts = sk.split("#")
    if len(parts) == 3 and parts[1] == "life":
        return ParsedSk(parts[0], LIFETIME, 0, parts[2])
    if len(parts) != 4 or not parts[1].startswith("t"):
        raise ValueError(f"not a feature item sort key: {sk!r}")
    return ParsedSk(parts[0], int(parts[1][1:]), int(parts[2]), parts[3])


def dedup_key(shard_id: str, bucket_start: int) -> ItemKey:
    return f"{DEDUP_PREFIX}{shard_id}", f"{bucket_start:011d}"


def dedup_bucket(time_ms: int) -> int:
    return time_ms // 1000 // DEDUP_BUCKET_SECONDS * DEDUP_BUCKET_SECONDS


def encode_position(position: Position) -> str:
    # Sequence numbers have up to 128 digits: stored as a string, compared as ints in Python.
    return f"{position[0]}.{position[1]}"


def decode_position(text: str) -> Position:
    sequence, _, sub = text.partition(".")
    return int(sequence), int(sub or 0)
