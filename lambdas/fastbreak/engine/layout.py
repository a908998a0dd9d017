"""Where state lives in the online store table (``pk``/``sk`` strings, TTL ``expires_at``).

See ``docs/online-store-layout.md``. Groups keyed by the stream's partition entity (the user)
keep one *group item* per entity: every tile of every tile size, plus the lifetime state. Groups
keyed by another entity (a game, a content) are written from every shard, so they keep one
*tile partial* per (tile, shard) instead: a marquee game is never one hot item, and no item
grows with the hours of audience sketches a game accumulates. Readers merge what they find.

    pk = "{entity}#{entity key}", sk = "{group}"                                 group item
    pk = "{entity}#{entity key}", sk = "{group}#{shard}#t{tile s}#{tile start}"  tile partial
    pk = "{entity}#{entity key}", sk = "{group}#{shard id}#life"                 lifetime partial
    pk = "_dedup#{shard id}",     sk = "{bucket start, epoch s, 11 digits}"      applied events
    pk = "_dedup#{shard id}",     sk = "{bucket start}/{hex prefix}"             ... once split

The shard comes before the time in a partial's sort key: a live game's partials share one
partition key, and at any moment every shard writes its own current tile, so the writes spread
over the key range (DynamoDB can split a hot item collection by sort key) instead of all landing
at its growing end.

Both kinds of item hold the same state format: ``{tile seconds: {tile start: {slot: state}}}``.

Every item remembers, per shard that wrote to it, the highest position of that shard already
folded in (``hw``, see ``encode_hw``): that is what makes a write idempotent.
"""

from __future__ import annotations

from fastbreak.engine.records import Position

ItemKey = tuple[str, str]

DEDUP_PREFIX = "_dedup#"
# Applied events are remembered per (shard, 2 s of event time), 8 bytes each. A shard takes at
# most 1 MB/s; with KPL aggregation that is about 8,000 events/s of 120 bytes, the smallest
# event the envelope allows: 2 s of them is 130 KB, one item. Events that share an event time
# (a frozen producer clock) can fill a bucket past that: it then splits by id hash
# (``fastbreak.engine.dedup``).
DEDUP_BUCKET_SECONDS = 2
TILE_START_DIGITS = 11  # epoch seconds, zero-padded so that text order is time order


def entity_pk(entity: str, key: str) -> str:
    return f"{entity}#{key}"


def group_sk(group: str) -> str:
    """The sort key of a group item."""
    return group


def tile_sk_head(group: str, tile_seconds: int, shard_id: str) -> str:
    """A tile partial's sort key up to its tile start (``tile_sk`` in two parts, for speed);
    the whole sort key of the lifetime partial."""
    if tile_seconds == 0:
        return f"{group}#{shard_id}#life"
    return f"{group}#{shard_id}#t{tile_seconds}#"


def tile_sk(group: str, tile_seconds: int, tile_start: int, shard_id: str) -> str:
    head = tile_sk_head(group, tile_seconds, shard_id)
    return head if tile_seconds == 0 else f"{head}{tile_start:011d}"


def partials_prefix(group: str) -> str:
    """What the sort keys of a group's partials begin with (for one Query)."""
    return f"{group}#"


def belongs_to(group: str, sk: str) -> bool:
    """True for the group item and the partials of ``group`` (group names hold no ``#``)."""
    return sk == group or sk.startswith(f"{group}#")


def tile_key(tile_start: int) -> str:
    """A tile's key inside its item's state (``"0"`` for the lifetime tile)."""
    return f"{tile_start:0{TILE_START_DIGITS}d}" if tile_start else "0"


def dedup_key(shard_id: str, bucket_start: int) -> ItemKey:
    return f"{DEDUP_PREFIX}{shard_id}", f"{bucket_start:011d}"


def dedup_node_key(root: ItemKey, prefix: str) -> ItemKey:
    """The item of a split bucket's memory that holds the id hashes starting with ``prefix``
    (hex digits); the root itself for ``""``."""
    return (root[0], f"{root[1]}/{prefix}") if prefix else root


def dedup_bucket(time_ms: int) -> int:
    return time_ms // 1000 // DEDUP_BUCKET_SECONDS * DEDUP_BUCKET_SECONDS


def encode_position(position: Position) -> str:
    # Sequence numbers have up to 129 digits: stored as a string, compared as ints in Python.
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
