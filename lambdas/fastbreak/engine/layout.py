"""Where state lives in the online store table (``pk``/``sk`` strings, TTL ``expires_at``).

See ``docs/online-store-layout.md``. One item per (entity, feature group) holds every tile of
every tile size of that group, plus its lifetime state. Groups keyed by another entity than the
stream's partition key (a game, a content) keep one *per-shard partial* item per shard instead,
so a marquee game is never one hot item; readers merge the partials.

    pk = "{entity}#{entity key}", sk = "{group}"                     the group's item
    pk = "{entity}#{entity key}", sk = "{group}#{shard id}"          a per-shard partial
    pk = "_dedup#{shard id}",     sk = "{bucket start, epoch s, 11 digits}"   seen event ids

Every item remembers, per shard that wrote to it, the highest position of that shard already
folded in (``hw``, see ``encode_hw``): that is what makes a write idempotent.
"""

from __future__ import annotations

from fastbreak.engine.records import Position

ItemKey = tuple[str, str]

DEDUP_PREFIX = "_dedup#"
# Event ids are remembered per (shard, 10 s of event time): at a shard's 1,000 records/s that
# is at most 80 KB of 8-byte hashes per item, well inside the 400 KB item limit.
DEDUP_BUCKET_SECONDS = 10
TILE_START_DIGITS = 11  # epoch seconds, zero-padded so that text order is time order


def entity_pk(entity: str, key: str) -> str:
    return f"{entity}#{key}"


def group_sk(group: str, shard_id: str | None) -> str:
    """The sort key of a group's item; ``shard_id`` only for per-shard partials."""
    return group if shard_id is None else f"{group}#{shard_id}"


def partials_prefix(group: str) -> str:
    """What the sort keys of a group's per-shard partials begin with (for one Query)."""
    return f"{group}#"


def is_partial_of(group: str, sk: str) -> bool:
    return sk.startswith(group) and sk[len(group) : len(group) + 1] == "#" and (
        "#" not in sk[len(group) + 1 :]
    )


def tile_key(tile_start: int) -> str:
    """A tile's key inside its item's state (``"0"`` for the lifetime tile)."""
    return f"{tile_start:0{TILE_START_DIGITS}d}" if tile_start else "0"


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


# ---- high-water marks: {shard id: position} as "shard=seq.sub,shard=seq.sub" ------------------
# Text, not a map attribute: it is compared verbatim in the write condition, so the text a
# writer read must be exactly the text it expects. Entries are sorted by shard id.
def encode_hw(marks: dict[str, str]) -> str:
    return ",".join(f"{shard}={marks[shard]}" for shard in sorted(marks))


def decode_hw(text: str) -> dict[str, str]:
    """Shard id -> encoded position (``encode_position``); ``""`` decodes to no marks."""
    marks: dict[str, str] = {}
    for entry in text.split(",") if text else ():
        shard, _, position = entry.partition("=")
        marks[shard] = position
    return marks
