"""What a feature read may ask for, checked against the catalog before any I/O.

The feature API and the ``FeatureClient`` share this validation, so a request the client
accepts is one the API accepts. Every refusal is an ``InvalidRequest`` that names the field at
fault; the API turns it into a 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastbreak.definitions.model import Catalog

MAX_ENTITIES = 100  # one BatchGet-sized request; the API Gateway body model says the same
MAX_ENTITY_ID_LENGTH = 128
MAX_FEATURE_NAMES = 200
MAX_BODY_BYTES = 64 * 1024  # 100 entities of 128-character ids fit several times over


class InvalidRequest(ValueError):
    """The request cannot be served as asked; ``field`` names what is wrong in it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BodyTooLarge(InvalidRequest):
    """The body is over ``MAX_BODY_BYTES``: the API answers 413 rather than 400."""


@dataclass(frozen=True, slots=True)
class EntityRef:
    entity_type: str
    entity_id: str


@dataclass(frozen=True, slots=True)
class GroupSelection:
    """Served features of one group to answer, as ``{feature}_{window}`` names."""

    group: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class ReadRequest:
    entities: tuple[EntityRef, ...]
    # entity type -> the groups (and their features) every entity of that type is answered with
    selections: Mapping[str, tuple[GroupSelection, ...]]


class RequestValidator:
    """Turns caller input into a ``ReadRequest``, or raises ``InvalidRequest``."""

    def __init__(self, catalog: Catalog) -> None:
        self._entity_types = tuple(entity.name for entity in catalog.entities)
        self._served: dict[str, tuple[str, ...]] = {
            group.name: tuple(group.served_names()) for group in catalog.groups
        }
        self._entity_of = {group.name: group.entity for group in catalog.groups}

    # ---- the two request shapes of the API ---------------------------------------------------
    def single(self, entity_type: Any, entity_id: Any, names: Sequence[str] | None) -> ReadRequest:
        entity = self.entity(entity_type, entity_id, "")
        return ReadRequest((entity,), self.selections(names, {entity.entity_type}, "groups"))

    def batch_body(self, body: bytes | None) -> ReadRequest:
        """The JSON body of ``POST /v1/features/batch-get``, as received (bytes)."""
        if not body:
            raise InvalidRequest("body", "is empty; expected a JSON object with 'entities'")
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge("body", f"is {len(body)} bytes; at most {MAX_BODY_BYTES}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidRequest(
                "body", f"is not UTF-8 text (byte {error.start} cannot be decoded)"
            ) from None
        try:
            document = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            raise InvalidRequest("body", "is not valid JSON") from None
        if not isinstance(document, dict):
            raise InvalidRequest("body", "must be a JSON object with 'entities'")
        unknown = sorted(set(document) - {"entities", "features"})
        if unknown:
            raise InvalidRequest("body", f"has unknown fields {unknown}")
        return self.batch(document.get("entities"), document.get("features"))

    def batch(self, entities: Any, names: Any) -> ReadRequest:
        if not isinstance(entities, list) or not entities:
            raise InvalidRequest("entities", "must be a non-empty list")
        if len(entities) > MAX_ENTITIES:
            raise InvalidRequest(
                "entities", f"has {len(entities)} entities; at most {MAX_ENTITIES} per request"
            )
        refs: list[EntityRef] = []
        for index, item in enumerate(entities):
            where = f"entities[{index}]"
            if not isinstance(item, dict) or set(item) != {"entity_type", "entity_id"}:
                raise InvalidRequest(where, "must be an object with entity_type and entity_id")
            refs.append(self.entity(item["entity_type"], item["entity_id"], where + "."))
        if names is not None and not isinstance(names, list):
            raise InvalidRequest("features", "must be a list of group or group.feature names")
        selections = self.selections(names, {ref.entity_type for ref in refs}, "features")
        return ReadRequest(tuple(refs), selections)

    # ---- parts -------------------------------------------------------------------------------
    def entity(self, entity_type: Any, entity_id: Any, where: str) -> EntityRef:
        if entity_type not in self._entity_types:
            raise InvalidRequest(
                where + "entity_type",
                f"unknown entity type {_shown(entity_type)}; known: {list(self._entity_types)}",
            )
        if not isinstance(entity_id, str) or not 0 < len(entity_id) <= MAX_ENTITY_ID_LENGTH:
            raise InvalidRequest(
                where + "entity_id", f"must be a string of 1..{MAX_ENTITY_ID_LENGTH} characters"
            )
        # Control characters and lone surrogates (JSON can carry "\ud800") are never ids, and
        # a lone surrogate would make the SDK fail to encode the request: refuse them here.
        if not entity_id.isprintable():
            raise InvalidRequest(where + "entity_id", "contains control or unpaired characters")
        return EntityRef(entity_type, entity_id)

    def selections(
        self, names: Sequence[Any] | None, entity_types: set[str], where: str
    ) -> dict[str, tuple[GroupSelection, ...]]:
        """Resolve group and ``group.feature`` names for the entity types asked about.

        No names means every feature of every group of those types. A name whose group is of
        no requested type, or a type left with no feature, is a mistake worth a 400 rather
        than an answer with silently nothing in it.
        """
        if names is None:
            names = [group for group, entity in self._entity_of.items() if entity in entity_types]
        if len(names) > MAX_FEATURE_NAMES:
            raise InvalidRequest(where, f"has {len(names)} names; at most {MAX_FEATURE_NAMES}")
        chosen: dict[str, dict[str, None]] = {}  # group -> served names, as first asked
        for index, name in enumerate(names):
            group, feature = self._resolve(name, f"{where}[{index}]")
            if self._entity_of[group] not in entity_types:
                raise InvalidRequest(
                    f"{where}[{index}]",
                    f"{name!r} is a feature of '{self._entity_of[group]}' entities, and no "
                    "requested entity is one",
                )
            wanted = chosen.setdefault(group, {})
            for served in self._served[group]:
                if feature is None or served == feature:
                    wanted[served] = None
        by_type: dict[str, tuple[GroupSelection, ...]] = {}
        for entity_type in sorted(entity_types):
            by_type[entity_type] = tuple(
                GroupSelection(group, tuple(features))
                for group, features in chosen.items()
                if self._entity_of[group] == entity_type
            )
            if not by_type[entity_type]:
                raise InvalidRequest(where, f"names no feature of '{entity_type}' entities")
        return by_type

    def _resolve(self, name: Any, where: str) -> tuple[str, str | None]:
        if not isinstance(name, str) or not name:
            raise InvalidRequest(where, "must be a group or group.feature name")
        group, _, feature = name.partition(".")
        if group not in self._served:
            raise InvalidRequest(
                where, f"unknown feature group {_shown(group)}; known: {sorted(self._served)}"
            )
        if not feature:
            return group, None
        if feature not in self._served[group]:
            raise InvalidRequest(
                where,
                f"group '{group}' has no feature {_shown(feature)}; it serves "
                f"{list(self._served[group])}",
            )
        return group, feature


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's extension, not JSON


def _shown(value: Any) -> str:
    # Echo caller input bounded: an error message must not become an amplifier.
    return repr(value)[:80]
