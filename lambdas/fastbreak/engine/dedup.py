"""The dedup memory: which events a shard has applied, so that a producer's retry is skipped.

An event's identity is ``(event_id, event_time)`` within a shard (``identity_hash``). Identities
are remembered per (shard, 2 s bucket of event time) as sorted 64-bit hashes, 8 bytes each, in
one item per bucket (``fastbreak.engine.layout.dedup_key``): an ordinary bucket is one item,
read with the batch's feature items and written once per batch.

A bucket whose events share an event time (a frozen producer clock, a default timestamp) can
hold more than one item can. When adding to an item would take it past ``LEAF_CAPACITY``
hashes, the item *splits*: its hashes move to 16 children by the next hex digit of the hash
(``{bucket}/{prefix}``, one digit deeper), and the item keeps only ``SPLIT_MARKER``. A split
child splits again the same way, so no item ever holds more than ``LEAF_CAPACITY`` hashes
(256 KiB), and a lookup reads one item per level of the path of its hash. A batch writes each
item it adds to once, children before the marker above them: a crash in between leaves the
parent whole (its hashes are still there), and the retry of the batch completes the split.

Writes are conditional on the ``hw`` text read (``{newest position}@{version}``, unique per
write), so a concurrent writer of the same bucket makes the other re-read and retry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from fastbreak.engine.hll import hash64
from fastbreak.engine.layout import DEDUP_BUCKET_SECONDS, ItemKey, dedup_node_key, encode_position
from fastbreak.engine.online_store import (
    ItemWrite,
    OnlineStore,
    StoredItem,
    StoreUnavailable,
    WriteOutcome,
)
from fastbreak.engine.records import Position

# Hashes per item: 256 KiB of state, far inside DynamoDB's 400 KB with the key and attributes,
# and twice the most a full-rate shard (8,000 events/s) puts in one 2 s bucket.
LEAF_CAPACITY = 32_768
SPLIT_MARKER = b"split"  # not a multiple of 8 bytes: never a list of hashes
_HEX_DIGITS = 16  # a 64-bit hash: at that depth an item holds one hash, and cannot split
_ID = struct.Struct(">Q")
_MASK64 = (1 << 64) - 1
_TIME_MIX = 0x9E3779B97F4A7C15  # odd: multiplying by it is a bijection on 64-bit integers
_CONFLICT_ROUNDS = 3


def identity_hash(event_id: str, time_ms: int) -> int:
    """The remembered form of ``(event_id, event_time)``: two events collide only if their ids
    do (probability 2^-64) or they are the same identity."""
    return hash64(event_id) ^ (time_ms * _TIME_MIX & _MASK64)


def pack(hashes: Iterable[int]) -> bytes:
    return b"".join(_ID.pack(value) for value in sorted(hashes))


def unpack(state: str | bytes) -> set[int]:
    data = state if isinstance(state, bytes) else state.encode()
    if data == SPLIT_MARKER:
        return set()
    return {value for (value,) in _ID.iter_unpack(data[: len(data) // 8 * 8])}


def is_split(item: StoredItem) -> bool:
    return item.state == SPLIT_MARKER


def _digit(hashed: int, depth: int) -> str:
    """The hex digit of ``hashed`` that chooses its child below an item ``depth`` digits deep."""
    return "0123456789abcdef"[(hashed >> (60 - 4 * depth)) & 15]


class DedupMemory:
    """What one batch knows of its shard's dedup items: read, then looked up, then added to.

    ``known`` maps every item read (or written) to its stored form, None when it is absent.
    """

    def __init__(self) -> None:
        self.known: dict[ItemKey, StoredItem | None] = {}
        self._hashes: dict[ItemKey, set[int]] = {}  # unpacked leaves

    def learn(self, keys: Iterable[ItemKey], found: dict[ItemKey, StoredItem]) -> None:
        """Record what a read of ``keys`` returned (a key not in ``found`` is absent)."""
        for key in keys:
            self.known[key] = found.get(key)
            self._hashes.pop(key, None)

    def unread(self, wanted: dict[ItemKey, set[int]]) -> list[ItemKey]:
        """The items still to read to look up ``wanted`` (root -> hashes): one level of the
        split buckets' paths per call; empty when every path ends in a leaf read."""
        missing: list[ItemKey] = []
        for root, hashes in wanted.items():
            if root not in self.known:
                missing.append(root)
                continue
            node = self.known[root]
            if node is None or not is_split(node):
                continue  # the usual case: one item, read
            for hashed in hashes:
                key = self._leaf_key(root, hashed)
                if key not in self.known:
                    missing.append(key)
        return list(dict.fromkeys(missing))

    def contains(self, root: ItemKey, hashed: int) -> bool:
        node = self.known.get(root)
        if node is None:  # the usual case: a bucket this shard has not remembered anything in
            return False
        if not is_split(node):
            return hashed in self._leaf(root)
        return hashed in self._leaf(self._leaf_key(root, hashed))

    def _leaf_key(self, root: ItemKey, hashed: int) -> ItemKey:
        """The item at the end of ``hashed``'s path as far as it is read: a leaf, an absent
        item, or the first item not read yet."""
        key, prefix = root, ""
        while key in self.known:
            node = self.known[key]
            if node is None or not is_split(node):
                break
            prefix += _digit(hashed, len(prefix))
            key = dedup_node_key(root, prefix)
        return key

    def _leaf(self, key: ItemKey) -> set[int]:
        hashes = self._hashes.get(key)
        if hashes is None:
            node = self.known.get(key)
            hashes = self._hashes[key] = unpack(node.state) if node is not None else set()
        return hashes

    # ---- adding -------------------------------------------------------------------------------
    def writes(
        self, root: ItemKey, hashes: set[int], newest: Position, expires_at: int,
        event_time_ms: int,
    ) -> dict[int, list[ItemWrite]]:
        """The writes that add ``hashes`` to ``root``'s bucket, by depth: write the deepest
        first (children before the marker of the item they split). Items not read are taken
        as absent; if one exists after all, its write fails on the condition, and a re-read
        puts it in ``known`` for the next try."""
        plan = _Plan(self, root, encode_position(newest), expires_at, event_time_ms)
        plan.add(root, "", hashes)
        return plan.by_depth

    def wrote(self, write: ItemWrite) -> None:
        """Record a successful write, so that a retry plans on top of it."""
        self.known[write.key] = StoredItem(
            write.key[0], write.key[1], write.state, write.hw, write.expires_at,
            write.event_time_ms, write.version,
        )
        self._hashes.pop(write.key, None)


class _Plan:
    def __init__(
        self, memory: DedupMemory, root: ItemKey, position: str, expires_at: int,
        event_time_ms: int,
    ) -> None:
        self.memory, self.root, self.position = memory, root, position
        self.expires_at, self.event_time_ms = expires_at, event_time_ms
        self.by_depth: dict[int, list[ItemWrite]] = {}

    def add(self, key: ItemKey, prefix: str, hashes: set[int]) -> None:
        node = self.memory.known.get(key)
        if node is not None and is_split(node):
            for digit, part in _by_digit(hashes, len(prefix)).items():
                self.add(dedup_node_key(self.root, prefix + digit), prefix + digit, part)
            return
        held = self.memory._leaf(key)
        if hashes <= held:
            return  # all remembered already (a retry of a batch that got this far)
        merged = held | hashes
        if len(merged) <= LEAF_CAPACITY or len(prefix) == _HEX_DIGITS:
            self._write(key, prefix, node, pack(merged))
            return
        for digit, part in _by_digit(merged, len(prefix)).items():
            self.add(dedup_node_key(self.root, prefix + digit), prefix + digit, part)
        self._write(key, prefix, node, SPLIT_MARKER)

    def _write(self, key: ItemKey, prefix: str, node: StoredItem | None, state: bytes) -> None:
        version = node.version + 1 if node is not None else 1
        self.by_depth.setdefault(len(prefix), []).append(ItemWrite(
            key=key, state=state, hw=f"{self.position}@{version}",
            expected_hw=node.hw if node is not None else None, expires_at=self.expires_at,
            event_time_ms=self.event_time_ms, version=version,
        ))


def _by_digit(hashes: set[int], depth: int) -> dict[str, set[int]]:
    parts: dict[str, set[int]] = {}
    for hashed in hashes:
        parts.setdefault(_digit(hashed, depth), set()).add(hashed)
    return parts


# root -> (identity hashes to add, the newest position among their events, the lowest one)
Additions = dict[ItemKey, tuple[set[int], Position, Position]]


def remember(
    store: OnlineStore, memory: DedupMemory, additions: Additions, keep_s: int,
) -> tuple[Position | None, int]:
    """Add identities to a dedup memory: ``(lowest position not remembered, writes made)``.

    ``memory`` knows the roots it was told about (``learn``; an unread root is taken as absent
    and re-read if its write meets an item after all). A root's items are written deepest
    first; a write that meets another writer's item re-reads it and tries again (three rounds).
    ``keep_s``: how long a bucket is kept after it ends.
    """
    lowest: Position | None = None
    writes_made = 0
    todo = additions
    for _ in range(_CONFLICT_ROUNDS):
        # root -> its writes by depth; a root's deeper writes go first (children before the
        # marker of the item they split), and a failure stops its shallower ones
        planned = {}
        for root, (hashes, newest, _) in todo.items():
            bucket = int(root[1])
            planned[root] = memory.writes(
                root, hashes, newest, bucket + DEDUP_BUCKET_SECONDS + keep_s,
                (bucket + DEDUP_BUCKET_SECONDS) * 1000 - 1,
            )
        stopped: dict[ItemKey, WriteOutcome] = {}
        conflicted: list[ItemKey] = []
        for depth in sorted({d for by_depth in planned.values() for d in by_depth},
                            reverse=True):
            writes = [(root, write) for root, by_depth in planned.items()
                      if root not in stopped for write in by_depth.get(depth, ())]
            outcomes, stats = store.write_many([write for _, write in writes])
            writes_made += stats.writes
            for root, write in writes:
                outcome = outcomes[write.key]
                if outcome is WriteOutcome.WRITTEN:
                    memory.wrote(write)
                else:
                    if outcome is WriteOutcome.CONFLICT:
                        conflicted.append(write.key)
                    if stopped.get(root) is not WriteOutcome.FAILED:
                        stopped[root] = outcome
        for root, outcome in stopped.items():
            if outcome is WriteOutcome.FAILED:
                lowest = _lower(lowest, todo[root][2])
        todo = {root: todo[root] for root, outcome in stopped.items()
                if outcome is WriteOutcome.CONFLICT}
        if not todo:
            return lowest, writes_made
        try:  # what the other writer left, and the paths below any split it made
            memory.learn(conflicted, store.get_many(conflicted))
            wanted = {root: hashes for root, (hashes, _, _) in todo.items()}
            while unread := memory.unread(wanted):
                memory.learn(unread, store.get_many(unread))
        except StoreUnavailable:
            break
    for _, _, first in todo.values():
        lowest = _lower(lowest, first)
    return lowest, writes_made


def read_roots(store: OnlineStore, memory: DedupMemory, wanted: dict[ItemKey, set[int]]) -> None:
    """Read what looking up (or adding) ``wanted`` needs that ``memory`` has not read yet."""
    while unread := memory.unread(wanted):
        memory.learn(unread, store.get_many(unread))


def _lower(current: Position | None, candidate: Position) -> Position:
    return candidate if current is None or candidate < current else current
