"""How large an online-store item may grow, and a cheap bound on the states a fold goes through.

DynamoDB refuses an item over 400 KB, and a refused write would fail its batch on every retry.
The processor applies the *sequential rule*: events are folded into an item in position order,
and an event whose fold would take the item past the limit is not applied to it (it is
quarantined with reason ``item_too_large``); the next event is tried on the item as it was.
The rule names one outcome per event whatever the batching, because a batch of one event each
would apply it the same way.

Checking the size after every event would cost an encoding of the item per event. Instead the
processor folds a batch at once and bounds every state on the way from above: the stored state,
plus for each tile the batch touched the largest its value-free slots can be, plus for each
event what it can add to the slots that keep values. Only when that bound passes the limit
does it fold event by event (halving the batch until the bound holds) and measure.
"""

from __future__ import annotations

from fastbreak.engine.aggregations import Aggregator, ApproxDistinct, Count, Mean, Sum
from fastbreak.engine.layout import ItemKey
from fastbreak.engine.plan import RouteSection, TileKind

MAX_ITEM_BYTES = 400 * 1024
# Attributes besides the key, state and marks: names, version, event time, TTL, update time.
ATTRIBUTE_BYTES = 128
# The longest mark one shard keeps in ``hw``: "{shard id}={129 digits}.{sub-sequence},".
MAX_MARK_BYTES = 128 + 1 + 129 + 1 + 10 + 1
FIXED_BYTES = MAX_MARK_BYTES + ATTRIBUTE_BYTES
# A tile's key and braces, and its section's when it is the section's first tile.
TILE_BYTES = 40
# What one value adds to a state besides the value and the event id: brackets, event time,
# count, separators, and the slot's own name when the slot is new (added per slot).
ENTRY_BYTES = 64
# Values an event does not carry itself (schema defaults, reference data) are the platform's:
# at most this long as JSON (``tests/unit/test_item_size.py`` holds the catalog to it).
STATIC_VALUE_BYTES = 256
# The longest JSON text of a number: a double's repr, or a 64-bit integer.
NUMBER_BYTES = 24
# An exact sum of doubles, m * 2**e: |m| < n * 2**2098 (2**1024 the largest double, 2**-1074
# the smallest), so at most ~650 digits; time, exponent and count around it.
_EXACT_SUM_BYTES = 768


def capped_state_bytes(aggregator: Aggregator) -> int | None:
    """The largest JSON of a slot state of ``aggregator`` whatever is folded into it; None for
    aggregations that keep values (last, last-N, top-K, min, max), which grow per event."""
    if isinstance(aggregator, Count):
        return 64
    if isinstance(aggregator, (Sum, Mean)):
        return _EXACT_SUM_BYTES
    if isinstance(aggregator, ApproxDistinct):
        return aggregator.max_state_bytes  # dense registers: the most a sketch holds
    return None


def tile_bytes(kind: TileKind) -> int:
    """What a touched tile of ``kind`` can hold in its value-free slots, at most."""
    total = TILE_BYTES
    for slot in kind.slots:
        capped = capped_state_bytes(slot.aggregator)
        if capped is not None:
            total += len(slot.name) + 4 + capped
    return total


def value_growth(sections: tuple[RouteSection, ...]) -> tuple[int, int]:
    """(n, fixed): folding one event through ``sections`` adds at most
    ``n * len(payload) + fixed`` bytes to the slots that keep values. A value and the event id
    are parts of the payload's JSON (our encoding of a string is never longer than the one it
    was parsed from), or a number, or a static value."""
    count = fixed = 0
    for section in sections:
        for slot in section.slots:
            if capped_state_bytes(slot.aggregator) is None:
                count += 1
                fixed += len(slot.name) + 4 + ENTRY_BYTES + max(STATIC_VALUE_BYTES, NUMBER_BYTES)
    return count, fixed


def text_bytes(text: str | bytes) -> int:
    """UTF-8 length (``str.isascii`` is O(1) in CPython: the usual ASCII state costs nothing)."""
    if isinstance(text, bytes) or text.isascii():
        return len(text)
    return len(text.encode())


def state_limit(key: ItemKey, marks: dict[str, str], shard_id: str) -> int:
    """The most bytes the state of the item at ``key`` may take: the limit less the key, the
    marks of the other shards, the longest mark this shard can write and the other attributes.
    Independent of this shard's own positions, so that the same events meet the same limit in
    every batching."""
    others = sum(len(shard) + len(mark) + 2 for shard, mark in marks.items() if shard != shard_id)
    return (
        MAX_ITEM_BYTES - text_bytes(key[0]) - text_bytes(key[1]) - others - FIXED_BYTES
    )
