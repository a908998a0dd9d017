"""Typed feature definitions and their validation.

A definition reads like a sentence (Chronon / Feast style) and fails early: ``Catalog.validate``
raises ``DefinitionError`` naming the object and the field at fault. The CDK app calls it at
synth and the Lambdas at cold start, so a bad definition never reaches a running processor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Every event carries these envelope fields; schemas declare only their own payload fields.
ENVELOPE_FIELDS = ("event_type", "schema_version", "event_id", "event_time")


class DefinitionError(ValueError):
    """A feature definition is invalid; the message names the object and the field."""


class FieldType(StrEnum):
    STRING = "string"
    INT = "int"
    DOUBLE = "double"
    BOOL = "bool"
    TIMESTAMP = "timestamp"

    @property
    def glue_type(self) -> str:
        return {
            FieldType.STRING: "string",
            FieldType.INT: "bigint",
            FieldType.DOUBLE: "double",
            FieldType.BOOL: "boolean",
            FieldType.TIMESTAMP: "timestamp",
        }[self]


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    LAST_N = "last_n"
    APPROX_DISTINCT = "approx_distinct"
    TOP_K = "top_k"

    @property
    def needs_field(self) -> bool:
        return self is not Aggregation.COUNT

    @property
    def needs_numeric_field(self) -> bool:
        return self in (Aggregation.SUM, Aggregation.MEAN, Aggregation.MIN, Aggregation.MAX)

    @property
    def needs_size(self) -> bool:
        return self in (Aggregation.LAST_N, Aggregation.TOP_K)


class WindowKind(StrEnum):
    SLIDING = "sliding"  # event-time tiles merged at read time
    TUMBLING = "tumbling"  # the current fixed bucket, aligned to the epoch
    LIFETIME = "lifetime"  # everything ever seen
    SINCE_KICKOFF = "since_kickoff"  # session of a game, opened by its first live score_update


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    required: bool = True
    default: Any = None
    doc: str = ""


@dataclass(frozen=True)
class Entity:
    name: str
    key_field: str
    doc: str = ""


@dataclass(frozen=True)
class EventSchema:
    """One version of one event type.

    ``entity_keys`` maps an entity name to the payload field that holds its id; an event feeds
    the feature groups of every entity it names.
    """

    name: str
    version: int
    fields: tuple[Field, ...]
    entity_keys: Mapping[str, str]
    doc: str = ""

    def field_named(self, name: str) -> Field | None:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        return None

    @property
    def label(self) -> str:
        return f"event '{self.name}' v{self.version}"


@dataclass(frozen=True)
class Window:
    kind: WindowKind
    size_seconds: int = 0
    tile_seconds: int = 0

    @property
    def name(self) -> str:
        if self.kind is WindowKind.LIFETIME:
            return "lifetime"
        if self.kind is WindowKind.SINCE_KICKOFF:
            return "since_kickoff"
        prefix = "tumbling_" if self.kind is WindowKind.TUMBLING else ""
        return prefix + format_duration(self.size_seconds)

    @staticmethod
    def sliding(size: str, tile: str) -> Window:
        return Window(WindowKind.SLIDING, parse_duration(size), parse_duration(tile))

    @staticmethod
    def tumbling(size: str) -> Window:
        seconds = parse_duration(size)
        return Window(WindowKind.TUMBLING, seconds, seconds)

    @staticmethod
    def lifetime() -> Window:
        return Window(WindowKind.LIFETIME)

    @staticmethod
    def since_kickoff() -> Window:
        return Window(WindowKind.SINCE_KICKOFF)


@dataclass(frozen=True)
class Feature:
    """An aggregation of one field (or of events, for count) over one or more windows.

    Each window yields one served feature named ``{name}_{window.name}``.
    """

    name: str
    aggregation: Aggregation
    windows: tuple[Window, ...]
    field: str | None = None
    size: int = 0  # N of last_n, K of top_k
    events: tuple[str, ...] = ()  # restrict to these event types; empty = every source event
    doc: str = ""

    def served_names(self) -> list[str]:
        return [f"{self.name}_{window.name}" for window in self.windows]


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    entity: str
    sources: tuple[str, ...]
    features: tuple[Feature, ...]
    allowed_lateness_seconds: int = 3600
    doc: str = ""

    def served_names(self) -> list[str]:
        return [name for feature in self.features for name in feature.served_names()]

    @property
    def retention_seconds(self) -> int:
        """How long tiles must stay readable: the longest bounded window plus lateness."""
        bounded = [
            window.size_seconds
            for feature in self.features
            for window in feature.windows
            if window.kind in (WindowKind.SLIDING, WindowKind.TUMBLING)
        ]
        return max(bounded, default=0) + self.allowed_lateness_seconds


@dataclass(frozen=True)
class Catalog:
    entities: tuple[Entity, ...]
    events: tuple[EventSchema, ...]
    groups: tuple[FeatureGroup, ...]
    max_allowed_lateness_seconds: int = 7 * 24 * 3600
    # Producers partition the events stream by this entity's key (where an event names one),
    # so its groups have one writer per shard, in order; other entities' groups are
    # cross-entity aggregates (see docs/exactly-once.md).
    partition_entity: str = "user"

    # ---- lookups -------------------------------------------------------------------------
    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    def group(self, name: str) -> FeatureGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def versions_of(self, event_name: str) -> list[EventSchema]:
        return sorted((e for e in self.events if e.name == event_name), key=lambda e: e.version)

    def latest(self, event_name: str) -> EventSchema:
        versions = self.versions_of(event_name)
        if not versions:
            raise KeyError(event_name)
        return versions[-1]

    def schema(self, event_name: str, version: int) -> EventSchema:
        for event in self.events:
            if event.name == event_name and event.version == version:
                return event
        raise KeyError(f"{event_name} v{version}")

    @property
    def event_names(self) -> list[str]:
        return sorted({event.name for event in self.events})

    def cross_entity_groups(self) -> list[FeatureGroup]:
        """Groups keyed by another entity than the stream's partition key (game, content)."""
        return [group for group in self.groups if group.entity != self.partition_entity]

    def groups_for_event(self, event_name: str) -> list[FeatureGroup]:
        return [group for group in self.groups if event_name in group.sources]

    def offline_columns(self) -> list[tuple[str, FieldType]]:
        """Columns of the raw events table: the envelope, then the union of payload fields.

        The Kinesis-sourced Firehose writes every event type into one Parquet table, so each
        payload field becomes a nullable column; ``validate`` guarantees one type per name.
        """
        columns: dict[str, FieldType] = {
            "event_type": FieldType.STRING,
            "schema_version": FieldType.INT,
            "event_id": FieldType.STRING,
            "event_time": FieldType.TIMESTAMP,
        }
        for event in sorted(self.events, key=lambda e: (e.name, e.version)):
            for payload_field in event.fields:
                columns.setdefault(payload_field.name, payload_field.type)
        return list(columns.items())

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> Catalog:
        """Raise ``DefinitionError`` naming the first invalid object and field; return self."""
        _unique("entity", (entity.name for entity in self.entities))
        for entity in self.entities:
            _check_name(f"entity '{entity.name}'", "name", entity.name)
            _check_name(f"entity '{entity.name}'", "key_field", entity.key_field)
        entity_names = {entity.name for entity in self.entities}
        if self.partition_entity not in entity_names:
            raise DefinitionError(
                f"catalog: field 'partition_entity' names unknown entity '{self.partition_entity}'"
            )
        _unique("event schema", (f"{e.name} v{e.version}" for e in self.events))
        for event in self.events:
            _validate_event(event, entity_names)
        self._validate_versions()
        self._validate_column_types()
        _unique("feature group", (group.name for group in self.groups))
        for group in self.groups:
            self._validate_group(group, entity_names)
        return self

    def _validate_versions(self) -> None:
        for name in self.event_names:
            versions = [event.version for event in self.versions_of(name)]
            expected = list(range(versions[0], versions[0] + len(versions)))
            if versions != expected:
                raise DefinitionError(
                    f"event '{name}': field 'version' must be consecutive, got {versions}"
                )

    def _validate_column_types(self) -> None:
        seen: dict[str, tuple[FieldType, str]] = {}
        for event in self.events:
            for payload_field in event.fields:
                earlier = seen.setdefault(payload_field.name, (payload_field.type, event.label))
                if earlier[0] is not payload_field.type:
                    raise DefinitionError(
                        f"{event.label}: field '{payload_field.name}' is {payload_field.type.value}"
                        f" but {earlier[1]} declares it {earlier[0].value}; one column, one type"
                    )

    def _validate_group(self, group: FeatureGroup, entity_names: set[str]) -> None:
        where = f"feature group '{group.name}'"
        _check_name(where, "name", group.name)
        if group.entity not in entity_names:
            raise DefinitionError(f"{where}: field 'entity' names unknown entity '{group.entity}'")
        if not group.sources:
            raise DefinitionError(f"{where}: field 'sources' is empty")
        if not 0 <= group.allowed_lateness_seconds <= self.max_allowed_lateness_seconds:
            raise DefinitionError(
                f"{where}: field 'allowed_lateness_seconds' must be within 0.."
                f"{self.max_allowed_lateness_seconds}, got {group.allowed_lateness_seconds}"
            )
        for source in group.sources:
            versions = self.versions_of(source)
            if not versions:
                raise DefinitionError(f"{where}: field 'sources' names unknown event '{source}'")
            for event in versions:
                if group.entity not in event.entity_keys:
                    raise DefinitionError(
                        f"{where}: field 'sources': {event.label} has no key for entity "
                        f"'{group.entity}'"
                    )
        if not group.features:
            raise DefinitionError(f"{where}: field 'features' is empty")
        _unique(f"{where}: feature", (feature.name for feature in group.features))
        _unique(f"{where}: served feature", group.served_names())
        for feature in group.features:
            self._validate_feature(group, feature)

    def _validate_feature(self, group: FeatureGroup, feature: Feature) -> None:
        where = f"feature group '{group.name}', feature '{feature.name}'"
        _check_name(where, "name", feature.name)
        if not feature.windows:
            raise DefinitionError(f"{where}: field 'windows' is empty")
        _unique(f"{where}: window", (window.name for window in feature.windows))
        for window in feature.windows:
            _validate_window(where, window, group)
        if feature.aggregation.needs_size and not 1 <= feature.size <= 100:
            raise DefinitionError(
                f"{where}: field 'size' must be within 1..100, got {feature.size}"
            )
        unknown_events = [name for name in feature.events if name not in group.sources]
        if unknown_events:
            raise DefinitionError(
                f"{where}: field 'events' names {unknown_events}, not among the group's sources"
            )
        if not feature.aggregation.needs_field:
            if feature.field is not None:
                raise DefinitionError(f"{where}: field 'field' must be empty for count")
            return
        if feature.field is None:
            raise DefinitionError(
                f"{where}: field 'field' is required for {feature.aggregation.value}"
            )
        for source in feature.events or group.sources:
            for event in self.versions_of(source):
                payload_field = event.field_named(feature.field)
                if payload_field is None:
                    raise DefinitionError(
                        f"{where}: field 'field' names '{feature.field}', missing from "
                        f"{event.label}"
                    )
                if feature.aggregation.needs_numeric_field and payload_field.type not in (
                    FieldType.INT,
                    FieldType.DOUBLE,
                ):
                    raise DefinitionError(
                        f"{where}: field 'field' names '{feature.field}' of type "
                        f"{payload_field.type.value}; {feature.aggregation.value} needs a number"
                    )


def _validate_event(event: EventSchema, entity_names: set[str]) -> None:
    where = event.label
    _check_name(where, "name", event.name)
    if event.version < 1:
        raise DefinitionError(f"{where}: field 'version' must be at least 1")
    _unique(f"{where}: field", (payload_field.name for payload_field in event.fields))
    for payload_field in event.fields:
        _check_name(where, "fields", payload_field.name)
        if payload_field.name in ENVELOPE_FIELDS:
            raise DefinitionError(
                f"{where}: field '{payload_field.name}' is an envelope field; do not redeclare it"
            )
        if not payload_field.required and payload_field.default is not None:
            _check_default(where, payload_field)
    if not event.entity_keys:
        raise DefinitionError(f"{where}: field 'entity_keys' is empty")
    for entity_name, key_field in event.entity_keys.items():
        if entity_name not in entity_names:
            raise DefinitionError(
                f"{where}: field 'entity_keys' names unknown entity '{entity_name}'"
            )
        key = event.field_named(key_field)
        if key is None or key.type is not FieldType.STRING:
            raise DefinitionError(
                f"{where}: field 'entity_keys' maps '{entity_name}' to '{key_field}', which is "
                "not a string field of the event"
            )


def _check_default(where: str, payload_field: Field) -> None:
    expected: dict[FieldType, tuple[type, ...]] = {
        FieldType.STRING: (str,),
        FieldType.INT: (int,),
        FieldType.DOUBLE: (int, float),
        FieldType.BOOL: (bool,),
        FieldType.TIMESTAMP: (str,),
    }
    value = payload_field.default
    wrong_bool = isinstance(value, bool) and payload_field.type is not FieldType.BOOL
    if wrong_bool or not isinstance(value, expected[payload_field.type]):
        raise DefinitionError(
            f"{where}: field '{payload_field.name}' has a default {value!r} that is not "
            f"a {payload_field.type.value}"
        )


def _validate_window(where: str, window: Window, group: FeatureGroup) -> None:
    if window.kind in (WindowKind.LIFETIME, WindowKind.SINCE_KICKOFF):
        if window.size_seconds or window.tile_seconds:
            raise DefinitionError(f"{where}: window '{window.name}' takes no size or tile")
        if window.kind is WindowKind.SINCE_KICKOFF and group.entity != "game":
            raise DefinitionError(
                f"{where}: field 'windows': since_kickoff needs a game entity, got '{group.entity}'"
            )
        return
    if window.size_seconds <= 0 or window.tile_seconds <= 0:
        raise DefinitionError(f"{where}: window '{window.name}' needs a positive size and tile")
    if window.size_seconds % window.tile_seconds:
        raise DefinitionError(
            f"{where}: window '{window.name}': field 'tile_seconds' ({window.tile_seconds}) must "
            f"divide the size ({window.size_seconds})"
        )
    if window.size_seconds // window.tile_seconds > 1440:
        raise DefinitionError(
            f"{where}: window '{window.name}' spans more than 1440 tiles; use a larger tile"
        )


def _check_name(where: str, field_name: str, value: str) -> None:
    if not NAME_PATTERN.match(value):
        raise DefinitionError(
            f"{where}: field '{field_name}' value {value!r} must be snake_case "
            "(a-z, 0-9, _; starting with a letter; at most 63 characters)"
        )


def _unique(what: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DefinitionError(f"{what} '{name}' is declared twice")
        seen.add(name)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"7d"`` to seconds."""
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise DefinitionError(f"duration {text!r} must look like 30s, 5m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: int) -> str:
    # A day is written 24h (as fans and analysts say it); multi-day windows in days.
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0 and (unit != "d" or seconds >= 2 * _UNITS["d"]):
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
