"""Where state lives in the online store table (``pk``/``sk`` strings, TTL ``expires_at``).

See ``docs/online-store-layout.md``. Groups keyed by the stream's partition entity (the user)
keep one *group item* per entity: every tile of every tile size, plus the lifetime state, written
by the stream processor (stage 1). Groups keyed by another entity (a game, a content) are
re-keyed: stage 1 folds each batch's events per entity into a *partial* and emits it to the
partials stream, partitioned by entity, and the audience stage (stage 2) merges partials into the
entity's items: one *entity item* that holds the lifetime state and every tile that came while
the item fitted one write unit, and one *tile item* for each tile that did not (a hot entity's).
A tile lives in one item for good; the entity item records, per tile size, from which tile on
its tiles live in tile items (``tiles_out``). Readers merge what they find.

    pk = "{entity}#{entity key}", sk = "{group}"                                 group item
    pk = "{entity}#{entity key}", sk = "{group}#entity"                          entity item
    pk = "{entity}#{entity key}", sk = "{group}#t{tile s}#{tile start}"          tile item
    pk = "{entity}#{entity key}", sk = "{group}#life"                            ... lifetime
    pk = "_dedup#{shard id}",     sk = "{bucket start, epoch s, 11 digits}"      applied events
    pk = "_dedup#{shard id}",     sk = "{bucket start}/{hex prefix}"             ... once split
    pk = "_dedup#partials/{partials shard id}", sk as above                      applied partials
    pk = "_outbox#{shard id}",    sk = "{first sequence number, 129 digits}"     pending emission
    pk = "_outbox#{shard id}#{first sequence number}", sk = "{chunk, 3 digits}"  ... its content
    pk = "_cutover",              sk = "slots"                                   cut-over registry

Two earlier layouts are still read. The first release of the audience stage kept every tile in a
tile item (and the lifetime state in ``{group}#life``): those are tile items of this layout, and
the audience stage goes on merging into them. Before the audience stage, stage 1 wrote one *tile
partial* per (tile, shard) of an audience group, ``{group}#{shard id}#t{tile s}#{tile start}``
and ``{group}#{shard id}#life``: readers still find and merge them (one Query of the group's
prefix returns every layout), nothing writes them any more.

Every item remembers, per shard that wrote to it, the highest position of that shard already
folded in (``hw``, see ``encode_hw``): that is what makes a write idempotent.
"""

from __future__ import annotations

import zlib

from fastbreak.engine.records import MAX_SEQUENCE_DIGITS, Position

ItemKey = tuple[str, str]

DEDUP_PREFIX = "_dedup#"
OUTBOX_PREFIX = "_outbox#"
# Every slot's cut-over between the backfill and the live stages (``fastbreak.engine.cutover``).
CUTOVER_REGISTRY_KEY = ("_cutover", "slots")
# The partition keys of items that hold no feature state.
OPERATIONAL_PREFIXES = (DEDUP_PREFIX, OUTBOX_PREFIX, CUTOVER_REGISTRY_KEY[0])
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


def entity_sk(group: str) -> str:
    """The sort key of an audience group's entity item (``fastbreak.engine.audience``)."""
    return f"{group}#entity"


def audience_sk_head(group: str, tile_seconds: int) -> str:
    """A tile item's sort key up to its tile start (``audience_sk`` in two parts, for speed);
    the whole sort key of the lifetime item."""
    if tile_seconds == 0:
        return f"{group}#life"
    return f"{group}#t{tile_seconds}#"


def audience_sk(group: str, tile_seconds: int, tile_start: int) -> str:
    """The sort key of the tile item of one tile (the lifetime item for ``tile_seconds`` 0):
    at most one per (entity, tile), whatever the number of shards that saw its events."""
    head = audience_sk_head(group, tile_seconds)
    return head if tile_seconds == 0 else f"{head}{tile_start:0{TILE_START_DIGITS}d}"


def tile_sk(group: str, tile_seconds: int, tile_start: int, shard_id: str) -> str:
    """The sort key of a tile partial of the previous layout (one per tile and shard): still
    read and merged, no longer written."""
    if tile_seconds == 0:
        return f"{group}#{shard_id}#life"
    return f"{group}#{shard_id}#t{tile_seconds}#{tile_start:011d}"


def partials_prefix(group: str) -> str:
    """What the sort keys of an audience group's items begin with (for one Query): its entity
    and tile items, and the tile partials of the layout before the audience stage."""
    return f"{group}#"


def belongs_to(group: str, sk: str) -> bool:
    """True for the group item, the entity and tile items and the old partials of ``group``
    (group names hold no ``#``)."""
    return sk == group or sk.startswith(f"{group}#")


def encode_tiles_out(first_out: dict[str, int]) -> str:
    """An entity item's ``tiles_out``: "{section}:{tile start},..." sorted, "" for none. Each
    entry says that the tiles of that size from that start on, all but those the entity item
    holds, live in tile items (``fastbreak.engine.audience``)."""
    return ",".join(f"{section}:{first_out[section]}" for section in sorted(first_out))


def decode_tiles_out(text: str) -> dict[str, int]:
    """Section -> the start of the first of its tiles kept in a tile item."""
    return {section: int(start) for section, _, start in
            (entry.partition(":") for entry in text.split(",") if entry)}


def tile_key(tile_start: int) -> str:
    """A tile's key inside its item's state (``"0"`` for the lifetime tile)."""
    return f"{tile_start:0{TILE_START_DIGITS}d}" if tile_start else "0"


def dedup_key(memory: str, bucket_start: int) -> ItemKey:
    """A dedup memory's root item for one bucket; ``memory`` is the shard id for the events
    stream (``partials_memory`` for the audience stage's)."""
    return f"{DEDUP_PREFIX}{memory}", f"{bucket_start:011d}"


def partials_memory(shard_id: str) -> str:
    """The dedup memory of the audience stage for one shard of the partials stream: apart from
    the events stream's, whose shards have the same ids ("/" is in no shard id)."""
    return f"partials/{shard_id}"


def outbox_key(shard_id: str, first_sequence: int) -> ItemKey:
    """The index item of a pending emission of stage 1 (``fastbreak.engine.outbox``): one per
    shard and first record of the batch that wrote it; sequence numbers zero-padded to their
    129 digits, so that text order is position order."""
    return f"{OUTBOX_PREFIX}{shard_id}", f"{first_sequence:0{MAX_SEQUENCE_DIGITS}d}"


def outbox_chunk_key(shard_id: str, first_sequence: int, chunk: int) -> ItemKey:
    return f"{OUTBOX_PREFIX}{shard_id}#{first_sequence}", f"{chunk:03d}"


def dedup_node_key(root: ItemKey, prefix: str) -> ItemKey:
    """The item of a split bucket's memory that holds the id hashes starting with ``prefix``
    (hex digits); the root itself for ``""``."""
    return (root[0], f"{root[1]}/{prefix}") if prefix else root


def dedup_bucket(time_ms: int) -> int:
    return time_ms // 1000 // DEDUP_BUCKET_SECONDS * DEDUP_BUCKET_SECONDS


# ---- the state attribute: JSON text, or that text compressed ---------------------------------
# DynamoDB bills a write by the KB of the larger of the item before and after, so a user item
# of 2-12 KB (an active fan's day and week of tiles) costs that many write units on every batch
# that touches it. Its JSON (digits, repeated slot names) compresses three to four times; items
# that fit one write unit stay text. The state of a feature item is text (S) or zlib (B): readers
# call ``state_json`` (the dedup memory's binary state is never read through it).
COMPACT_ABOVE = 700  # characters of JSON: with the key, marks and attributes, about 1 KB


def compact_state(text: str) -> str | bytes:
    """A feature item's state as stored."""
    if len(text) <= COMPACT_ABOVE:
        return text
    return zlib.compress(text.encode(), 6)


def state_json(state: str | bytes) -> str:
    """A feature item's state as JSON text, however it was stored."""
    return state if isinstance(state, str) else zlib.decompress(state).decode()


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
