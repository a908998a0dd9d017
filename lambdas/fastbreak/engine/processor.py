"""One Kinesis batch in, one write per touched item out: the exactly-once stream processor
(stage 1 of two).

For each shard in the batch (a Lambda batch holds one):

1. complete any pending emission of the shard that covers this batch's first record, or whose
   writer is gone (``fastbreak.engine.outbox``);
2. decode and validate every record; invalid ones go to the quarantine object, never blocking
   the shard;
3. drop producer duplicates (same event id and event time: an event's identity) seen in this
   batch or remembered in the shard's dedup memory (``fastbreak.engine.dedup``);
4. route each event to the items it feeds (late beyond a group's allowed lateness: routed to
   the quarantine object with reason ``too_late``, not applied);
5. groups keyed by the stream's partition entity (the user): read every touched group item once
   (consistent), fold in only the events past the item's high-water mark for this shard, and
   write the absolute new state with a condition on the marks that were read: one write per
   touched item, idempotent under any re-delivery; an event that would take an item past
   DynamoDB's item limit is not applied to it (``fastbreak.engine.item_size``, the sequential
   rule);
6. write the feature log of those items;
7. groups keyed by another entity (a game, a content): fold the applied events per entity into
   a partial (``fastbreak.engine.partials``), write them as one emission to the outbox, remember
   the identities of the events now fully applied, put the partials to the partials stream and
   delete the outbox entry. The audience stage (``fastbreak.engine.audience``) merges them.

Anything that fails makes the batch report its lowest affected sequence number and every
later one; Lambda re-delivers from there, step 5 skips what was already applied and step 1
completes what was emitted. ``docs/exactly-once.md`` gives the argument.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from fastbreak.definitions.model import Catalog
from fastbreak.engine import item_size
from fastbreak.engine.admission import Admission
from fastbreak.engine.cutover import DEFAULT_DELAY_MS, CutOverRegistry, CutOvers
from fastbreak.engine.dedup import (
    Additions,
    DedupMemory,
    identity_hash,
    read_roots,
    remember,
)
from fastbreak.engine.fold import ItemFold, Tiles, fold_partial
from fastbreak.engine.layout import (
    ItemKey,
    compact_state,
    decode_hw,
    decode_position,
    dedup_bucket,
    dedup_key,
    encode_hw,
    encode_position,
    group_sk,
    state_json,
)
from fastbreak.engine.online_store import (
    ItemWrite,
    OnlineStore,
    StoredItem,
    StoreUnavailable,
    WriteOutcome,
    WriteStats,
)
from fastbreak.engine.outbox import Emission, Outbox, source_hash
from fastbreak.engine.partials import Partial, PartialsSink, encoded_parts
from fastbreak.engine.plan import (
    FUTURE_TOLERANCE_SECONDS,
    FoldSection,
    GroupPlan,
    Plan,
    Route,
    compile_plan,
)
from fastbreak.engine.records import Position, SourceRecord, read_source, user_records
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.sinks import ObjectSink, object_key
from fastbreak.engine.timestamps import format_ms
from fastbreak.engine.validation import Event

_NOTHING_APPLIED: Position = (-1, -1)
_CONFLICT_ROUNDS = 3
# How long an identity is remembered beyond the largest allowed lateness and future tolerance.
_REMEMBER_MARGIN_S = 3600
_TILE_KEYS_KEPT = 1 << 14
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# What JSONEncoder.encode builds on every call (two thirds of its cost on the small states of
# the hot path), built once: same output. No cycle check: states are trees. CPython has had
# the C encoder since 2.6; anything else falls back to the public method.
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (
    _C_MAKE_ENCODER(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, True)
    if _C_MAKE_ENCODER is not None else None
)


def _encode(document: Any) -> str:
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(document)
    return "".join(_C_ENCODE(document, 0))


@dataclass(frozen=True)
class ProcessorSettings:
    quarantine_prefix: str = "quarantine/"
    feature_log_prefix: str = "features/"
    future_tolerance_ms: int = FUTURE_TOLERANCE_SECONDS * 1000  # see ``Admission``
    # The mapping's ParallelizationFactor: above 1, an event whose partition key is not the key
    # of a user group it feeds is not applied to that group (docs/exactly-once.md).
    parallelization_factor: int = 1
    # How long after this processor first meets a feature slot the registry lacks it starts
    # folding it live (``fastbreak.engine.cutover``): records before are the backfill's.
    cutover_delay_ms: int = DEFAULT_DELAY_MS


@dataclass
class BatchResult:
    failed_sequence_numbers: list[str] = field(default_factory=list)
    records_in: int = 0
    records_valid: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    late_events: int = 0
    mismatched_events: int = 0
    duplicate_events: int = 0
    items_too_large: int = 0
    writes: WriteStats = field(default_factory=WriteStats)
    dedup_writes: int = 0
    partials_emitted: int = 0  # records put to the partials stream (re-emissions included)
    emissions_completed: int = 0  # pending emissions of earlier batches completed by this one
    outbox_writes: int = 0
    freshness_lag_ms: int | None = None

    def batch_item_failures(self) -> dict[str, list[dict[str, str]]]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": sequence} for sequence in self.failed_sequence_numbers
            ]
        }


@dataclass
class _Routed:
    """A record that is not applied, as written to the quarantine object."""

    reason: Reason
    message: str
    source: SourceRecord | None
    sub_index: int | None = None
    payload: bytes | None = None
    event_id: str | None = None
    groups: tuple[str, ...] = ()
    raw: Any = None

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"reason": self.reason.value, "message": self.message}
        if self.source is not None:
            line.update(
                sequence_number=self.source.sequence_number,
                shard_id=self.source.shard_id,
                partition_key=self.source.partition_key,
                approximate_arrival=format_ms(self.source.arrival_ms),
            )
        if self.sub_index is not None:
            line["sub_index"] = self.sub_index
        if self.event_id is not None:
            line["event_id"] = self.event_id
        if self.groups:
            line["groups"] = list(self.groups)
        if self.payload is not None:
            line["payload"] = self.payload.decode("utf-8", "backslashreplace")
        elif self.source is not None:
            line["data"] = self.source.data
        else:
            line["record"] = self.raw
        return line


# (event, the route sections it feeds in an item)
_Contribution = tuple[Event, tuple[FoldSection, ...]]


class _Pending:
    """Everything this batch contributes to one group item (contributions in position order)."""

    __slots__ = (
        "contributions", "entity_key", "first_new", "group", "growth", "log_head", "new",
        "position", "refused", "text", "touched",
    )

    def __init__(self, group: GroupPlan, entity_key: str, log_head: str) -> None:
        self.group = group
        self.entity_key = entity_key
        self.log_head = log_head  # the feature-log line's constant middle, see _log_line
        # (event, the route sections it feeds in this item), in position order
        self.contributions: list[_Contribution] = []
        # what the contributions can add to the item's value-keeping slots, at most (bytes)
        self.growth = 0
        self.first_new: Position = _NOTHING_APPLIED
        self.new: list[_Contribution] = []  # applied by the last computed write
        self.refused: list[_Contribution] = []  # too large for the item, in the last computation
        # What the last computed write changed: its tiles (None: all of them) and this
        # shard's new high-water mark.
        self.touched: dict[str, dict[str, Any]] | None = None
        self.position = ""
        self.text = ""  # the JSON state of the last computed write (stored compacted)


class _Audience:
    """What this batch contributes to one audience entity: per group, its contributions in
    position order."""

    __slots__ = ("entity", "groups", "key")

    def __init__(self, entity: str, key: str) -> None:
        self.entity = entity
        self.key = key
        self.groups: dict[str, tuple[GroupPlan, list[_Contribution]]] = {}


class StreamProcessor:
    """Stage 1. ``partials`` writes to the partials stream; required when the catalog has
    groups keyed by another entity than the stream's partition entity."""

    def __init__(
        self,
        store: OnlineStore,
        sink: ObjectSink,
        catalog: Catalog,
        settings: ProcessorSettings | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        partials: PartialsSink | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.plan: Plan = compile_plan(catalog)
        self.settings = settings or ProcessorSettings()
        if partials is None and any(group.sharded for group in self.plan.groups.values()):
            raise ValueError(
                "the catalog has audience groups "
                f"({', '.join(g for g, plan in self.plan.groups.items() if plan.sharded)}): "
                "the stream processor needs a partials stream to emit them to"
            )
        self.partials = partials
        self.outbox = Outbox(store.client, store.table_name, store.retry)
        # A duplicate can only arrive while its event is within the largest allowed lateness
        # (later copies are too late anyway): that bounds how long identities are remembered.
        self._keep_s = (
            (self.plan.max_lateness_ms + self.settings.future_tolerance_ms) // 1000
            + _REMEMBER_MARGIN_S
        )
        self.admission = Admission(catalog, self.settings.future_tolerance_ms)
        # tile start (epoch s) -> its key in an item's state: a cache, replaced (never cleared:
        # concurrent batches of one execution environment may hold it) once it grows large
        self._tile_keys: dict[int, str] = {}
        self.clock_ms = clock_ms
        # event type -> the longest allowed lateness of the groups it feeds: an event later
        # than that is applied nowhere, so it has no identity to remember
        self._max_lateness = {
            event_type: max(route.lateness_ms for route in routes)
            for event_type, routes in self.plan.routes.items()
        }
        # group -> section -> the most a touched tile's value-free slots hold (item_size)
        self._tile_bytes = {
            name: {kind.section: item_size.tile_bytes(kind) for kind in group.kinds.values()}
            for name, group in self.plan.groups.items()
        }
        self._max_tile_bytes = {name: max(sections.values(), default=0)
                                for name, sections in self._tile_bytes.items()}
        # id of a contribution's sections tuple -> its value_growth
        self._growth_of: dict[int, tuple[int, int]] = {}
        self._routes: dict[str, tuple[_RouteEntry, ...]] | None = None
        self.cutovers: CutOvers | None = None  # read from the registry by the first batch

    def load_cutovers(self) -> CutOvers:
        """The slots' cut-overs, recording the slots the registry lacks (once per process:
        entries never change)."""
        if self.cutovers is None:
            self.cutovers = CutOverRegistry(self.store).load(
                self.plan, self.clock_ms(), self.settings.cutover_delay_ms)
            self._routes = None
        return self.cutovers

    # ---- the batch -----------------------------------------------------------------------
    def process(self, records: Sequence[Any]) -> BatchResult:
        result = BatchResult()
        by_shard: dict[str, tuple[list[SourceRecord], list[Event], list[_Routed]]] = {}
        unattributed: list[_Routed] = []
        for index, raw in enumerate(records):
            source = read_source(raw, index)
            if isinstance(source, Rejection):
                result.records_in += 1
                unattributed.append(_Routed(source.reason, source.message, None, raw=raw))
                continue
            sources, events, routed = by_shard.setdefault(source.shard_id, ([], [], []))
            sources.append(source)
            self._decode(source, result, events, routed)
        for rejected in unattributed:
            _count_invalid(result, rejected.reason)
        if unattributed:
            # These records cannot be retried by sequence number; a failed put only loses
            # the copy in S3 (the record itself stays in the stream until it expires).
            self._put_lines("unattributed", [], unattributed, _put_ok_anyway=True)
        for shard_id, (sources, events, routed) in by_shard.items():
            lowest_failed = self._process_shard(shard_id, sources, events, routed, result)
            if lowest_failed is not None:
                result.failed_sequence_numbers.extend(
                    s.sequence_number for s in sources if s.sequence >= lowest_failed[0]
                )
        return result

    def _decode(
        self, source: SourceRecord, result: BatchResult, events: list[Event],
        routed: list[_Routed],
    ) -> None:
        decoded = user_records(source)
        if isinstance(decoded, Rejection):
            result.records_in += 1
            _count_invalid(result, decoded.reason)
            routed.append(_Routed(decoded.reason, decoded.message, source))
            return
        admit = self.admission.admit
        for record in decoded:
            result.records_in += 1
            outcome = admit(record)
            if isinstance(outcome, Rejection):
                _count_invalid(result, outcome.reason)
                routed.append(
                    _Routed(outcome.reason, outcome.message, source, record.sub_index,
                            record.payload)
                )
            else:
                result.records_valid += 1
                events.append(outcome)

    # ---- one shard ---------------------------------------------------------------------------
    def _process_shard(
        self, shard_id: str, sources: list[SourceRecord], events: list[Event],
        routed: list[_Routed], result: BatchResult,
    ) -> Position | None:
        """Apply the shard's events; return the lowest position that must be re-delivered."""
        first: Position = (sources[0].sequence, 0)
        try:
            # Which slots the live stages fold (``fastbreak.engine.cutover``): unknown, nothing
            # can be applied.
            self.load_cutovers()
            # Before anything is read: a completed emission's events are then remembered.
            if not self._complete_pending(shard_id, sources[0].sequence_number, result):
                return first
        except StoreUnavailable:
            return first
        events.sort(key=_position)
        events, ids = self._first_copies(shard_id, events, result)
        unapplied: list[tuple[Event, list[str], Reason]] = []
        pending, audience = self._route(shard_id, events, unapplied)
        wanted: dict[ItemKey, set[int]] = {}
        for key, hashed in ids.values():
            wanted.setdefault(key, set()).add(hashed)
        memory = DedupMemory()
        try:  # the feature items and the dedup memory in one read; split buckets need more
            stored = self.store.get_many([*pending, *wanted])
            memory.learn(wanted, stored)
            read_roots(self.store, memory, wanted)
        except StoreUnavailable:
            return first
        _as_text(stored, pending)
        duplicates = {event for event, (key, hashed) in ids.items()
                      if memory.contains(key, hashed)}
        result.duplicate_events += len(duplicates)
        counted: set[int] = set()
        for event, groups, reason in unapplied:  # a copy is a duplicate, not late: as within
            if event not in duplicates:  # a batch
                if id(event) not in counted:
                    counted.add(id(event))
                    if reason is Reason.TOO_LATE:
                        result.late_events += 1
                    else:
                        result.mismatched_events += 1
                routed.append(_not_applied(event, groups, reason))
        if len(self._tile_keys) > _TILE_KEYS_KEPT:
            self._tile_keys = {}
        outcome = self._write_items(shard_id, sources, pending, stored, duplicates, result)
        if outcome is None:
            return first
        lowest, log_lines = outcome
        if routed and not self._put_lines(shard_id, sources, routed):
            lowest = _lower(lowest, min((r.source.sequence, 0) for r in routed if r.source))
        if log_lines and not self._put_feature_log(shard_id, sources, log_lines):
            return first
        applied = [
            event for event in events
            if event not in duplicates and (lowest is None or event.position < lowest)
        ]
        additions = _additions(applied, ids, shard_id)
        emission, first_audience = self._emission(
            shard_id, sources, audience, duplicates, lowest, additions)
        if emission is not None:
            try:
                self.outbox.write(emission)
            except StoreUnavailable:
                # Nothing was emitted: the audience events are re-delivered and folded again.
                emission = None
                lowest = _lower(lowest, first_audience)
                applied = [event for event in applied if event.position < first_audience]
                additions = _additions(applied, ids, shard_id)
            finally:
                result.outbox_writes = self.outbox.writes
        if emission is None:
            lowest = _lower(lowest, self._remember(additions, memory, result))
        elif not self._complete(emission, memory, result):
            # Its entry stays pending: the re-delivery from the first record completes it.
            lowest = first
        applied_arrivals = [e.record.source.arrival_ms for e in applied]
        if applied_arrivals:
            result.freshness_lag_ms = max(
                result.freshness_lag_ms or 0, self.clock_ms() - min(applied_arrivals)
            )
        return lowest

    # ---- emissions (fastbreak.engine.outbox) -------------------------------------------------
    def _complete_pending(self, shard_id: str, first_sequence: str, result: BatchResult) -> bool:
        """Complete the shard's pending emissions that hold this batch's first record (an
        earlier attempt at these records wrote them) or whose writer is gone; False if one
        could not be completed."""
        now_ms = self.clock_ms()
        for pending in self.outbox.pending(shard_id):
            if not (pending.holds(first_sequence) or pending.writer_gone(now_ms)):
                continue  # a concurrent batch's (ParallelizationFactor > 1)
            if not self._complete(self.outbox.read(pending), DedupMemory(), result):
                return False
            result.emissions_completed += 1
        return True

    def _complete(self, emission: Emission, memory: DedupMemory, result: BatchResult) -> bool:
        """Remember the emission's identities, put its records, delete its entry: each step
        idempotent, so any batch may do it again. False when a step failed (the entry stays)."""
        additions: Additions = {
            dedup_key(emission.shard_id, bucket): (hashes, newest, newest)
            for bucket, (hashes, newest) in emission.identities.items()
        }
        try:
            read_roots(self.store, memory,
                       {root: hashes for root, (hashes, _, _) in additions.items()})
            failed, writes = remember(self.store, memory, additions, self._keep_s)
            result.dedup_writes += writes
            if failed is not None:
                return False
            if emission.records:
                assert self.partials is not None
                if not self.partials.put(emission.records):
                    return False
                result.partials_emitted += len(emission.records)
            self.outbox.delete(emission)
            return True
        except StoreUnavailable:
            return False
        finally:
            result.outbox_writes = self.outbox.writes

    def _emission(
        self, shard_id: str, sources: list[SourceRecord], audience: dict[str, _Audience],
        duplicates: set[Event], lowest: Position | None, additions: Additions,
    ) -> tuple[Emission | None, Position]:
        """The batch's partials, one per audience entity its applied events touched, as one
        emission; and the lowest position among those events."""
        first_audience: Position | None = None
        folded: list[tuple[_Audience, dict[str, Tiles]]] = []
        for entity in audience.values():
            groups: dict[str, Tiles] = {}
            for name, (group, contributions) in entity.groups.items():
                kept = [
                    (event, sections) for event, sections in contributions
                    if event not in duplicates and (lowest is None or event.position < lowest)
                ]
                if kept:
                    groups[name] = fold_partial(group, kept, self._tile_keys)[0]
                    first_audience = _lower(first_audience, kept[0][0].position)
            if groups:
                folded.append((entity, groups))
        if first_audience is None:
            return None, _NOTHING_APPLIED
        # every record with an event below the lowest failure (a KPL aggregate may be cut)
        covered = [s for s in sources if lowest is None or (s.sequence, 0) < lowest]
        emission = Emission(
            shard_id, sources[0].sequence, covered[-1].sequence, self.clock_ms(), [],
            {int(root[1]): (hashes, newest) for root, (hashes, newest, _) in additions.items()},
            # with ParallelizationFactor 1 the batch holds every record of the shard in its range
            None if self.settings.parallelization_factor == 1
            else [source_hash(s.sequence_number) for s in covered],
        )
        emission_id = emission.id
        for entity, groups in folded:
            partial = Partial(shard_id, emission_id, emission.created_ms, entity.entity,
                              entity.key, groups)
            emission.records.extend((part.partition_key, data)
                                    for part, data in encoded_parts(partial))
        return emission, first_audience

    def _first_copies(
        self, shard_id: str, events: list[Event], result: BatchResult
    ) -> tuple[list[Event], dict[Event, tuple[ItemKey, int]]]:
        """Keep the first copy of each event identity in this batch; map each event to remember
        once applied -> (its dedup bucket's root item, its identity hash).

        An event's identity is (event_id, event_time): a producer retry re-sends the same event
        under a new sequence number, and the copy with the lowest position is the one applied.
        The dedup memory is keyed by event time, so identity must include it for the outcome to
        be the same in every batching. An event later than every group it feeds is applied
        nowhere: it is neither remembered nor a copy's reason to be dropped (each copy is
        routed as too late), which keeps a frozen clock from filling the memory forever.
        """
        kept: list[Event] = []
        ids: dict[Event, tuple[ItemKey, int]] = {}
        seen: set[int] = set()  # identity hashes: as the memory compares them
        keys: dict[int, ItemKey] = {}  # dedup bucket -> its root item
        max_lateness = self._max_lateness
        for event in events:
            time_ms = event.time_ms
            limit = max_lateness.get(event.event_type)
            if limit is None or event.record.source.arrival_ms - time_ms > limit:
                kept.append(event)
                continue
            hashed = identity_hash(event.event_id, time_ms)
            if hashed in seen:
                result.duplicate_events += 1
                continue
            seen.add(hashed)
            bucket = dedup_bucket(time_ms)
            key = keys.get(bucket)
            if key is None:
                key = keys[bucket] = dedup_key(shard_id, bucket)
            ids[event] = (key, hashed)
            kept.append(event)
        return kept, ids

    def _route(
        self, shard_id: str, events: list[Event],
        unapplied: list[tuple[Event, list[str], Reason]],
    ) -> tuple[dict[ItemKey, _Pending], dict[str, _Audience]]:
        """The group items each event feeds and the audience entities it contributes to; in
        ``unapplied`` the events not applied to some groups, with those groups and why (later
        than their allowed lateness; under ParallelizationFactor > 1, a partition key other
        than the user the group is keyed by)."""
        pending: dict[ItemKey, _Pending] = {}
        audience: dict[str, _Audience] = {}
        table = self._route_table()
        strict = self.settings.parallelization_factor > 1
        cutovers = self.load_cutovers()
        for event in events:
            routes = table.get(event.event_type)
            if routes is None:
                continue
            arrival = event.record.source.arrival_ms
            lateness = arrival - event.time_ms
            payload = event.payload
            payload_bytes = len(event.record.payload)
            late_groups: list[str] | None = None
            mismatched: list[str] | None = None
            for route, pk_prefix, sk, log_head, growth, latest in routes:
                if lateness > route.lateness_ms:
                    group = route.group.group.name
                    if late_groups is None:
                        late_groups = [group]
                    elif group not in late_groups:
                        late_groups.append(group)
                    continue
                fold = route.fold
                if arrival < latest:  # some of the route's slots are the backfill's
                    fold = cutovers.live(route, arrival)
                    if not fold:
                        continue
                    self._growth_of.setdefault(id(fold), growth)  # a bound: fold is a part
                entity_key = payload[route.key_field]
                pk = pk_prefix + entity_key
                if sk is None:  # an audience group: folded into the entity's partial
                    entity = audience.get(pk)
                    if entity is None:
                        entity = audience[pk] = _Audience(route.group.group.entity, entity_key)
                    name = route.group.group.name
                    found = entity.groups.get(name)
                    if found is None:
                        found = entity.groups[name] = (route.group, [])
                    found[1].append((event, fold))
                    continue
                if strict and entity_key != event.record.source.partition_key:
                    # Another batch of this shard may hold this user's events concurrently:
                    # the item's per-shard mark could then skip this event or the other's.
                    group = route.group.group.name
                    if mismatched is None:
                        mismatched = [group]
                    elif group not in mismatched:
                        mismatched.append(group)
                    continue
                key = (pk, sk)
                item = pending.get(key)
                if item is None:
                    item = pending[key] = _Pending(route.group, entity_key, log_head)
                item.contributions.append((event, fold))
                if growth[0]:
                    item.growth += growth[0] * payload_bytes + growth[1]
            if late_groups is not None:
                unapplied.append((event, late_groups, Reason.TOO_LATE))
            if mismatched is not None:
                unapplied.append((event, mismatched, Reason.PARTITION_KEY_MISMATCH))
        return pending, audience

    def _route_table(self) -> dict[str, tuple[_RouteEntry, ...]]:
        """Event type -> where its events go (cached: the entries depend on the plan alone)."""
        if self._routes is None:
            cutovers = self.load_cutovers()
            self._routes = {
                event_type: tuple(_route_entry(route, cutovers.latest(route)) for route in routes)
                for event_type, routes in self.plan.routes.items()
            }
            self._growth_of.clear()
            for entries in self._routes.values():
                for route, _, _, _, growth, _ in entries:
                    self._growth_of[id(route.fold)] = growth
        return self._routes

    def _write_items(
        self, shard_id: str, sources: list[SourceRecord], pending: dict[ItemKey, _Pending],
        stored: dict[ItemKey, StoredItem], duplicates: set[Event], result: BatchResult,
    ) -> tuple[Position | None, list[str]] | None:
        """Write every item with something new; return the lowest failed position (if any)
        and the feature log lines; None if the store could not even be re-read."""
        log_lines: list[str] = []
        lowest: Position | None = None
        todo: list[tuple[ItemKey, _Pending]] = list(pending.items())
        next_state, log_line, written = self._next_state, self._log_line, WriteOutcome.WRITTEN
        for _ in range(_CONFLICT_ROUNDS):
            writes: list[ItemWrite] = []
            items: list[_Pending] = []
            refusing: list[tuple[ItemKey, _Pending]] = []
            for key, item in todo:
                before = stored.get(key)
                write = next_state(key, item, before, duplicates, shard_id)
                if item.refused:
                    refusing.append((key, item))
                if write is None:
                    if before is not None and not item.refused:
                        # already applied: log it again (at-least-once)
                        log_lines.append(log_line(before, item, shard_id, False, None))
                    continue
                writes.append(write)
                items.append(item)
            if refusing:
                result.items_too_large += len(refusing)
                # Refused events are quarantined before the writes that pass their positions:
                # a re-delivery skips those positions, and would not refuse them again.
                lines = [line for key, item in refusing for line in _routed_away(item, key)]
                if not self._put_lines(shard_id, sources, lines):
                    held = {id(item) for _, item in refusing}
                    for _, item in refusing:
                        lowest = _lower(lowest, item.first_new)
                    kept = [(w, i) for w, i in zip(writes, items, strict=True)
                            if id(i) not in held]
                    writes, items = [w for w, _ in kept], [i for _, i in kept]
            outcomes, stats = self.store.write_many(writes)
            visible_ms = self.clock_ms()  # every write below has succeeded by now
            result.writes.add(stats)
            conflicts: list[tuple[ItemKey, _Pending]] = []
            for write, item in zip(writes, items, strict=True):
                outcome = outcomes[write.key]
                if outcome is written:
                    log_lines.append(log_line(write, item, shard_id, True, visible_ms))
                elif outcome is WriteOutcome.CONFLICT:
                    conflicts.append((write.key, item))
                else:
                    lowest = _lower(lowest, item.first_new)
            if not conflicts:
                return lowest, log_lines
            # Another writer moved these items on (ParallelizationFactor > 1, or a zombie), or
            # TTL deleted one: read what is there now and fold ours on top.
            try:
                fresh = self.store.get_many(key for key, _ in conflicts)
            except StoreUnavailable:
                return None
            for key, _ in conflicts:
                stored.pop(key, None)
            stored.update(fresh)
            _as_text(stored, fresh)
            todo = conflicts
        for _, item in todo:
            lowest = _lower(lowest, min(event.position for event, _ in item.contributions))
        return lowest, log_lines

    def _next_state(
        self, key: ItemKey, item: _Pending, stored: StoredItem | None, duplicates: set[Event],
        shard_id: str,
    ) -> ItemWrite | None:
        """The item's new absolute state, or None when nothing in this batch is new to it (or
        every new event is too large for it, see ``item.refused``); sets ``item.first_new``,
        the lowest new position (reported if the write fails), and ``item.touched``, the tiles
        the write changes (for the feature log)."""
        new = item.contributions
        item.refused = []
        redelivered = False
        if stored is not None:
            marks = decode_hw(stored.hw)
            mark = marks.get(shard_id)
            applied = decode_position(mark) if mark is not None else _NOTHING_APPLIED
            redelivered = new[0][0].position <= applied
            new = [
                (event, sections) for event, sections in new
                if event.position > applied and event not in duplicates
            ]
            if not new:
                return None
            tiles: Tiles = json.loads(stored.state)
            newest = stored.event_time_ms
        else:
            if duplicates:
                new = [(event, sections) for event, sections in new
                       if event not in duplicates]
                if not new:
                    return None
            marks = {}
            tiles = {}
            newest = 0
        group = item.group
        group_name = group.group.name
        tolerance_s = self.settings.future_tolerance_ms // 1000
        fold = ItemFold(tiles, newest, self._tile_keys)
        fold.fold(new)
        fold.finish(group, stored is not None, tolerance_s)
        # Contributions are in position order: the first new one is the lowest, the last
        # one the highest.
        item.first_new = new[0][0].position
        position = encode_position(new[-1][0].position)
        # The usual item is far below the limit: a coarse bound (every touched tile at the
        # group's largest) against a smaller limit (the key at 4 bytes a character, every mark)
        # settles it; the exact bound and limit are computed only near it.
        state_chars = len(stored.state) if stored is not None else 2
        bound = state_chars + item.growth + len(fold.touched) * self._max_tile_bytes[group_name]
        limit = item_size.MAX_ITEM_BYTES - item_size.FIXED_BYTES - 4 * (
            len(key[0]) + len(key[1])
        ) - (len(stored.hw) + 1 if stored is not None else 0)
        if bound > limit or (stored is not None and not stored.state.isascii()):
            bound = item_size.text_bytes(stored.state) if stored is not None else 2
            bound += item.growth
            tile_bytes = self._tile_bytes[group_name]
            for section, _ in fold.touched:
                bound += tile_bytes[section]
            limit = item_size.state_limit(key, marks, shard_id)
        if bound <= limit:  # no state on the way can pass the limit: every event is applied
            state = _encode(tiles)
            newest = fold.newest_ms
            # Every tile is this batch's, or part of the batch was applied before and its
            # feature-log line may have been lost: the line carries the whole state.
            item.touched = None if stored is None or redelivered else fold.changed()
            item.new = new
        else:
            within = self._fold_within(item, stored, new, limit)
            if within is None:
                return None  # every new event is too large for the item
            state, newest = within
            item.touched = None  # folded in parts: the line carries the whole state
        marks[shard_id] = item.position = position
        expires = group.expires_at(newest // 1000)
        item.text = state
        return ItemWrite(
            key, compact_state(state), encode_hw(marks), stored.hw if stored is not None else None,
            expires, newest, stored.version + 1 if stored is not None else 1,
        )

    def _fold_within(
        self, item: _Pending, stored: StoredItem | None, new: list[_Contribution], limit: int,
    ) -> tuple[str, int] | None:
        """The sequential rule where the cheap bound does not hold for the whole batch: fold
        ``new`` in position order, in parts small enough for the bound to hold, down to single
        events, whose fold is measured; an event that takes the item past ``limit`` is refused.
        Sets ``item.new`` and ``item.refused``; returns the state and its newest event time,
        or None when every event is refused."""
        group = item.group
        tolerance_s = self.settings.future_tolerance_ms // 1000
        tile_bytes, growth_of = self._tile_bytes[group.group.name], self._growth_of
        text: str | bytes | None = stored.state if stored is not None else None
        size = item_size.text_bytes(text) if text is not None else 2
        newest = stored.event_time_ms if stored is not None else 0
        item.new, item.refused = [], []
        parts = [new]  # a stack: the next part to fold is the last one
        while parts:
            part = parts.pop()
            tiles: Tiles = json.loads(text) if text is not None else {}
            fold = ItemFold(tiles, newest, self._tile_keys)
            fold.fold(part)
            fold.finish(group, text is not None, tolerance_s)
            bound = size
            for event, sections in part:
                count, fixed = growth_of[id(sections)]
                bound += count * len(event.record.payload) + fixed
            for section, _ in fold.touched:
                bound += tile_bytes[section]
            if bound > limit and len(part) > 1:
                half = len(part) // 2
                parts += [part[half:], part[:half]]
                continue
            candidate = _encode(tiles)
            candidate_size = item_size.text_bytes(candidate)
            if bound <= limit or candidate_size <= limit:
                text, size, newest = candidate, candidate_size, fold.newest_ms
                item.new.extend(part)
            else:
                item.refused.extend(part)
        if not item.new:
            return None
        assert isinstance(text, str)
        return text, newest

    # ---- dedup memory --------------------------------------------------------------------
    def _remember(
        self, additions: Additions, memory: DedupMemory, result: BatchResult,
    ) -> Position | None:
        """Add the identities of fully applied events to the shard's dedup memory."""
        lowest, writes = remember(self.store, memory, additions, self._keep_s)
        result.dedup_writes += writes
        return lowest

    # ---- side outputs ------------------------------------------------------------------------
    def _log_line(
        self, item: ItemWrite | StoredItem, pending: _Pending, shard_id: str, written: bool,
        visible_ms: int | None,
    ) -> str:
        """One feature-log line: the item's tiles this batch changed, each in its absolute
        state as the online store was told it (the whole state for a re-logged item), and when
        the write became visible (the processor's clock once it succeeded; null when the line
        logs again a write of an earlier invocation, whose time is not known).

        Written out by hand, in the key order and the exact text of json.dumps with
        ``(",", ":")`` separators and ``ensure_ascii=False``: a line per written item.
        """
        if isinstance(item, ItemWrite):
            pk, sk = item.key
        else:
            pk, sk = item.pk, item.sk
        if written:
            tiles = pending.text if pending.touched is None else _encode(pending.touched)
            position = pending.position
        else:  # read and made text by _as_text
            assert isinstance(item.state, str)
            tiles, position = item.state, decode_hw(item.hw).get(shard_id, "")
        visible = "null" if visible_ms is None else visible_ms
        return (
            f'{{"pk":{encode_basestring(pk)},"sk":{encode_basestring(sk)}{pending.log_head}'
            f'{encode_basestring(pending.entity_key)},"shard_id":{encode_basestring(shard_id)}'
            f',"hw":"{position}","version":{item.version},"event_time_ms":{item.event_time_ms}'
            f',"tiles":{tiles},"visible_ms":{visible}}}'
        )

    def _put_feature_log(
        self, shard_id: str, sources: list[SourceRecord], lines: list[str]
    ) -> bool:
        body = ("\n".join(lines) + "\n").encode()
        try:
            self.sink.put(object_key(self.settings.feature_log_prefix, shard_id, sources, body),
                          body)
        except Exception:
            return False
        return True

    def _put_lines(
        self, shard_id: str, sources: list[SourceRecord], routed: list[_Routed],
        _put_ok_anyway: bool = False,
    ) -> bool:
        body = ("\n".join(json.dumps(r.line(), default=str) for r in routed) + "\n").encode()
        try:
            self.sink.put(object_key(self.settings.quarantine_prefix, shard_id, sources, body),
                          body)
        except Exception:
            return _put_ok_anyway
        return True


# ---- helpers ---------------------------------------------------------------------------------
def _as_text(stored: dict[ItemKey, StoredItem], keys: Iterable[ItemKey]) -> None:
    """The states of the group items read, as JSON text (``compact_state`` compresses some)."""
    for key in keys:
        item = stored.get(key)
        if item is not None and type(item.state) is bytes:
            item.state = state_json(item.state)


def _position(event: Event) -> Position:
    return event.position


def _lower(current: Position | None, candidate: Position | None) -> Position | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate < current else current


def _count_invalid(result: BatchResult, reason: Reason) -> None:
    result.invalid_by_reason[reason.value] = result.invalid_by_reason.get(reason.value, 0) + 1


# (route, pk prefix, group item sort key or None for an audience group, feature-log head, value
# growth of the group item's sections, the route's latest cut-over)
_RouteEntry = tuple[Route, str, str | None, str, tuple[int, int], int]


def _route_entry(route: Route, latest: int) -> _RouteEntry:
    group = route.group.group
    log_head = (
        f',"group":{encode_basestring(group.name)},"entity":{encode_basestring(group.entity)}'
        ',"entity_key":'
    )
    if route.group.sharded:
        return route, group.entity + "#", None, log_head, (0, 0), latest
    return (route, group.entity + "#", group_sk(group.name), log_head,
            item_size.value_growth(route.sections), latest)


def _additions(applied: list[Event], ids: dict[Event, tuple[ItemKey, int]], shard_id: str
               ) -> Additions:
    """What remembering ``applied`` adds to the shard's dedup memory, by root."""
    additions: Additions = {}
    for event in applied:
        entry = ids.get(event)
        if entry is None:
            continue
        root, hashed = entry
        found = additions.get(root)
        if found is None:
            additions[root] = ({hashed}, event.position, event.position)
        else:
            found[0].add(hashed)
            if event.position > found[1]:
                additions[root] = (found[0], event.position, found[2])
    return additions


def _not_applied(event: Event, groups: list[str], reason: Reason) -> _Routed:
    if reason is Reason.TOO_LATE:
        lateness = event.record.source.arrival_ms - event.time_ms
        message = (f"arrived {lateness // 1000} s after its event time, beyond the allowed "
                   "lateness of these groups")
    else:
        message = ("its partition key is not the key of these groups: with "
                   "ParallelizationFactor > 1 another batch of the shard may write the same "
                   "items at once")
    return _Routed(
        reason, message, event.record.source, event.record.sub_index, event.record.payload,
        event.event_id, tuple(groups),
    )


def _routed_away(item: _Pending, key: ItemKey) -> list[_Routed]:
    """Quarantine lines for the events an item refused as too large."""
    group = item.group.group.name
    return [
        _Routed(
            Reason.ITEM_TOO_LARGE,
            f"not applied to group {group}: its item {key[0]} / {key[1]} would pass "
            f"DynamoDB's {item_size.MAX_ITEM_BYTES // 1024} KB item limit",
            event.record.source, event.record.sub_index, event.record.payload,
            event.event_id, (group,),
        )
        for event, _ in item.refused
    ]
