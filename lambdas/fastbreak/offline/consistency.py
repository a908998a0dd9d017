"""Online/offline consistency: what the online store served, recomputed from the raw table.

The feature log has a line per online-store write, with the time it became visible
(``visible_ms``). For a sample of the entities written in a time range, the check takes each
entity's *last* write in the log, at V: from V on, and until its next write, the feature API
served the entity's items as the online store holds them now (the check makes sure nothing
was written since: the stored versions are the logged ones). So the values served at V are
``merge_items`` of the stored items as of V. The training-set builder recomputes the same
features in as-served mode at V (the applied events that had reached the stream by V:
``fastbreak.offline.builder``), and each feature's share of exact matches (value and event
time) is reported.

For a pipeline that applies events exactly once, every value matches once the last write is
``settle`` old: an event that arrived before V and was not applied by V would have made a later
write, which the check would have taken instead. A value that does not match is an event
applied twice or not at all, a corrupted item, or a processor behind by more than ``settle``.

Features of unbounded windows (lifetime, since kickoff) need the whole raw table; they are left
out unless asked for (``all_windows``). The raw table is read back as far as the longest window
checked: ``max_window_ms`` bounds it (the scheduled check reads a day).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.definitions.model import WindowKind
from fastbreak.engine.fold import FeatureValue
from fastbreak.engine.layout import ItemKey, entity_pk, group_sk, partials_prefix
from fastbreak.engine.online_store import OnlineStore, RetryPolicy, StoredItem, decode_item
from fastbreak.engine.plan import GroupPlan, Plan, ServedFeature, compile_plan
from fastbreak.engine.read import merge_group
from fastbreak.offline.builder import TrainingSetRequest, build_training_set
from fastbreak.offline.output import arrow_values, event_time_column, value_column, value_type
from fastbreak.offline.raw_files import S3Options, resolve
from fastbreak.offline.request import Progress, SilentProgress
from fastbreak.offline.selection import TrainingSetError

DEFAULT_SAMPLE = 100  # entities per group
# The raw table must hold the events of the writes judged: Firehose delivers within 15 minutes
# (``OfflineDeliveryFreshness`` pages beyond), and a margin.
DEFAULT_SETTLE_MS = 20 * 60 * 1000
MISMATCHES_KEPT = 20
# A batch's log object is dated by its first record's arrival; its writes become visible
# later, by at most the records' age when the mapping gives up (the default's 6 hours) and a
# margin.
_LOG_DAYS_BEFORE = 1


class ConsistencyError(ValueError):
    """Input the user can fix: one line naming the group, table or location."""


@dataclass(frozen=True)
class ConsistencyRequest:
    raw: str  # the raw table: a folder or s3://bucket/raw
    feature_log: str  # the feature log: a folder or s3://bucket/features
    table: str
    since_ms: int  # the entities whose last write became visible in [since_ms, until_ms]
    until_ms: int
    groups: tuple[str, ...] = ()  # () for every group
    sample: int = DEFAULT_SAMPLE
    all_windows: bool = False
    # Leave out features whose window is longer (the raw table is read back that far)
    max_window_ms: int | None = None
    seed: int = 0
    s3: S3Options | None = None


@dataclass
class FeatureConsistency:
    feature: str  # group.feature_window
    checked: int = 0
    matched: int = 0

    @property
    def rate(self) -> float:
        return self.matched / self.checked if self.checked else 1.0


@dataclass(frozen=True)
class Mismatch:
    feature: str
    entity_key: str
    at_ms: int
    online: Any  # (value, event time ms), as the training set's columns hold them
    offline: Any


@dataclass
class ConsistencyReport:
    features: list[FeatureConsistency] = field(default_factory=list)
    entities: int = 0  # entities checked
    candidates: int = 0  # entities whose last write is in the range
    skipped: dict[str, int] = field(default_factory=dict)  # why some were not checked
    mismatches: list[Mismatch] = field(default_factory=list)  # the first MISMATCHES_KEPT
    seconds: float = 0.0

    @property
    def checked(self) -> int:
        return sum(f.checked for f in self.features)

    @property
    def matched(self) -> int:
        return sum(f.matched for f in self.features)

    @property
    def rate(self) -> float:
        """The share of every value checked that matched."""
        return self.matched / self.checked if self.checked else 1.0

    @property
    def lowest_rate(self) -> float:
        """The lowest feature's share: what the alarm watches, so that one diverging feature
        among many shows."""
        return min((f.rate for f in self.features if f.checked), default=1.0)


@dataclass
class _Logged:
    """What the feature log says of one item: its highest version, and when the write of that
    version became visible (None when only a re-log without a time is known)."""

    version: int = 0
    visible_ms: int | None = None

    def add(self, version: int, visible_ms: int | None) -> None:
        if version > self.version:
            self.version, self.visible_ms = version, visible_ms
        elif version == self.version and self.visible_ms is None:
            self.visible_ms = visible_ms


@dataclass
class _Entity:
    group: str
    key: str
    items: dict[ItemKey, _Logged] = field(default_factory=dict)

    @property
    def last_write_ms(self) -> int | None:
        """When its last write became visible; None when one of its items' last write has no
        known time."""
        times = [logged.visible_ms for logged in self.items.values()]
        if any(at is None for at in times):
            return None
        return max(at for at in times if at is not None)


def check_consistency(
    request: ConsistencyRequest, dynamodb: Any, catalog: Catalog = CATALOG,
    progress: Progress | None = None,
) -> ConsistencyReport:
    """Recompute a sample of what the online store served; ``ConsistencyError`` on bad input."""
    started = time.perf_counter()
    report = progress or SilentProgress()
    plan = compile_plan(catalog)
    groups = _groups(plan, request.groups)
    result = ConsistencyReport()
    report.stage("reading the feature log")
    entities = _read_log(request, set(groups))
    store = OnlineStore(dynamodb, request.table, RetryPolicy(), concurrency=4)
    for name in groups:
        group = plan.groups[name]
        served = [s for s in group.served if (request.all_windows or _bounded(s))
                  and (request.max_window_ms is None
                       or s.window.size_seconds * 1000 <= request.max_window_ms)]
        if not served:
            continue
        candidates = [entity for entity in entities.values() if entity.group == name
                      and (at := entity.last_write_ms) is not None
                      and request.since_ms <= at <= request.until_ms]
        result.candidates += len(candidates)
        unknown = sum(1 for e in entities.values() if e.group == name and e.last_write_ms is None)
        if unknown:
            result.skipped["write time unknown"] = (
                result.skipped.get("write time unknown", 0) + unknown)
        chosen = sorted(candidates, key=lambda e: _draw(request.seed, e.key))[: request.sample]
        if not chosen:
            continue
        report.stage(f"{name}: {len(chosen)} {group.group.entity}s", len(chosen))
        served_at = _served(store, group, chosen, result, report)
        if served_at:
            _compare(request, catalog, group, served, served_at, result)
    result.seconds = time.perf_counter() - started
    return result


def _groups(plan: Plan, names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in plan.groups]
    if unknown:
        raise ConsistencyError(f"unknown feature group '{unknown[0]}': the catalog has "
                               f"{', '.join(sorted(plan.groups))}")
    return list(dict.fromkeys(names)) or list(plan.groups)


def _bounded(served: ServedFeature) -> bool:
    return served.window.kind in (WindowKind.SLIDING, WindowKind.TUMBLING)


def _draw(seed: int, key: str) -> bytes:
    """A deterministic shuffle: the same sample for the same seed."""
    return blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()


# ---- the feature log --------------------------------------------------------------------------
def _read_log(request: ConsistencyRequest, groups: set[str]) -> dict[tuple[str, str], _Entity]:
    """Every entity of ``groups`` with a line in the log objects that can hold writes of the
    range (and later ones: the last write is taken over everything read)."""
    filesystem, base = resolve(request.feature_log, request.s3)
    first = datetime.fromtimestamp(request.since_ms / 1000, UTC).date() - timedelta(
        days=_LOG_DAYS_BEFORE)
    entities: dict[tuple[str, str], _Entity] = {}
    try:
        listing = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except (OSError, pa.ArrowException) as error:
        raise ConsistencyError(f"cannot read feature log {request.feature_log}: "
                               f"{_first_line(error)}") from error
    if not listing:
        raise ConsistencyError(f"cannot read feature log {request.feature_log}: no such folder "
                               "or nothing in it")
    folders = sorted(info.path for info in listing
                     if info.type == pafs.FileType.Directory
                     and info.base_name.startswith("date=")
                     and info.base_name[5:] >= first.isoformat())
    for folder in folders:
        for info in filesystem.get_file_info(pafs.FileSelector(folder, recursive=True)):
            if info.type != pafs.FileType.File or not info.path.endswith(".jsonl"):
                continue
            with filesystem.open_input_stream(info.path) as stream:
                body = stream.read()
            for line in _lines(body):
                if line.get("group") not in groups:
                    continue
                found = entities.get((line["group"], line["entity_key"]))
                if found is None:
                    found = entities[(line["group"], line["entity_key"])] = _Entity(
                        line["group"], line["entity_key"])
                found.items.setdefault((line["pk"], line["sk"]), _Logged()).add(
                    int(line["version"]), line.get("visible_ms"))
    return entities


def _lines(body: bytes) -> Iterator[dict[str, Any]]:
    for raw in body.splitlines():
        if raw.strip():
            yield json.loads(raw)


# ---- the online side --------------------------------------------------------------------------
def _served(store: OnlineStore, group: GroupPlan, chosen: list[_Entity],
            result: ConsistencyReport, progress: Progress
            ) -> list[tuple[_Entity, int, dict[str, FeatureValue]]]:
    """(entity, V, the values served from V on) for each entity whose stored items are the
    ones its last logged writes left."""
    found = []
    for entity in chosen:
        progress.advance()
        try:
            items, updated = _stored_items(store, group, entity.key)
        except Exception as error:  # the store's or the SDK's: a table that cannot be read
            raise ConsistencyError(f"cannot read table {store.table_name}: "
                                   f"{_first_line(error)}") from error
        reason = _unchanged(entity, items, updated)
        if reason is not None:
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
            continue
        at_ms = entity.last_write_ms
        assert at_ms is not None
        found.append((entity, at_ms, merge_group(group, items.values(), at_ms)))
        result.entities += 1
    return found


def _stored_items(store: OnlineStore, group: GroupPlan, key: str
                  ) -> tuple[dict[ItemKey, StoredItem], dict[ItemKey, int]]:
    """The entity's items of the group, and when each was last written (epoch ms, for the
    audience items, which a write after the log was read may have added)."""
    pk = entity_pk(group.group.entity, key)
    if not group.sharded:
        return store.get_many([(pk, group_sk(group.group.name))]), {}
    request: dict[str, Any] = {
        "TableName": store.table_name, "ConsistentRead": True,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
        "ExpressionAttributeValues": {":pk": {"S": pk},
                                      ":prefix": {"S": partials_prefix(group.group.name)}},
    }
    items: dict[ItemKey, StoredItem] = {}
    updated: dict[ItemKey, int] = {}
    while True:
        response = store.client.query(**request)
        for raw in response.get("Items", ()):
            item = decode_item(raw)
            items[(item.pk, item.sk)] = item
            updated[(item.pk, item.sk)] = int(raw.get("updated_at", {}).get("N", "0"))
        if not response.get("LastEvaluatedKey"):
            return items, updated
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _unchanged(entity: _Entity, items: dict[ItemKey, StoredItem],
               updated: dict[ItemKey, int]) -> str | None:
    """Why the stored items are not what the entity's last logged writes left (None: they
    are)."""
    for key, logged in entity.items.items():
        stored = items.get(key)
        if stored is None:
            return "item gone (expired)"
        if stored.version != logged.version:
            return "written since the log was read"
    last = entity.last_write_ms or 0
    if any(key not in entity.items and at > last for key, at in updated.items()):
        return "written since the log was read"  # an item the log read has no line of
    return None


# ---- the offline side and the comparison -------------------------------------------------------
def _compare(request: ConsistencyRequest, catalog: Catalog, group: GroupPlan,
             served: list[ServedFeature], found: list[tuple[_Entity, int, dict[str,
                                                                              FeatureValue]]],
             result: ConsistencyReport) -> None:
    key_field = catalog.entity(group.group.entity).key_field
    names = [f"{group.group.name}.{s.name}" for s in served]
    with tempfile.TemporaryDirectory(prefix="fastbreak-consistency-") as folder:
        spine = Path(folder) / "spine.parquet"
        pq.write_table(pa.table({
            key_field: pa.array([entity.key for entity, _, _ in found], pa.string()),
            "timestamp": pa.array([at for _, at, _ in found], pa.int64()),
        }), spine)
        try:
            table, _ = build_training_set(TrainingSetRequest(
                spine=str(spine), features=tuple(names), raw=request.raw, as_served=True,
                s3=request.s3), catalog)
        except TrainingSetError as error:
            raise ConsistencyError(str(error)) from error
    for feature in served:
        name = f"{group.group.name}.{feature.name}"
        kind = value_type(catalog, group, feature)
        online_values, online_times = arrow_values(
            [_served_value(values.get(feature.name)) for _, _, values in found], kind)
        offline_values = table[value_column(group.group.name, feature)].to_pylist()
        offline_times = table[event_time_column(group.group.name, feature)].to_pylist()
        tally = FeatureConsistency(name)
        for row, (entity, at_ms, _) in enumerate(found):
            online = (online_values[row].as_py(), online_times[row].as_py())
            offline = (offline_values[row], offline_times[row])
            tally.checked += 1
            if online == offline:
                tally.matched += 1
            elif len(result.mismatches) < MISMATCHES_KEPT:
                result.mismatches.append(Mismatch(name, entity.key, at_ms, online, offline))
        result.features.append(tally)


def _served_value(value: FeatureValue | None) -> FeatureValue | None:
    """The API's null: no event in the window."""
    return value if value is not None and value.event_time_ms is not None else None


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def recent(now_ms: int, lookback_ms: int, settle_ms: int = DEFAULT_SETTLE_MS
           ) -> tuple[int, int]:
    """The range of last writes a scheduled check takes: ``lookback_ms`` ending ``settle_ms``
    before now."""
    until = now_ms - settle_ms
    return until - lookback_ms, until

