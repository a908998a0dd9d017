"""`make schema-check`: a new event version must not break readers of the previous one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fastbreak.definitions import CATALOG, Catalog, EventSchema, Field, FieldType
from fastbreak.engine.compatibility import compatibility_problems
from fastbreak.engine.records import SourceRecord, UserRecord
from fastbreak.engine.validation import Event, EventValidator

S, INT = FieldType.STRING, FieldType.INT
V1 = EventSchema(
    "ticket_scan", 1, (Field("user_id", S), Field("gate", S), Field("seat", INT, required=False)),
    {"user": "user_id"},
)


def catalog_with(next_version: EventSchema) -> Catalog:
    # Not validated: Catalog.validate already refuses some of these (one column, one type);
    # the compatibility rules must hold on their own.
    return replace(CATALOG, events=(*CATALOG.events, V1, next_version))


def test_the_shipped_catalog_evolves_compatibly() -> None:
    assert compatibility_problems(CATALOG) == []


def test_the_processor_accepts_the_previous_version_of_every_event() -> None:
    validator = EventValidator(CATALOG)
    source = SourceRecord(0, "1", 1, "shardId-0", "k", 0, "")
    samples = {S: "x", INT: 1, FieldType.DOUBLE: 1.5, FieldType.BOOL: True,
               FieldType.TIMESTAMP: "2026-11-26T18:30:00Z"}
    for name in CATALOG.event_names:
        versions = CATALOG.versions_of(name)
        latest = versions[-1]
        for schema in versions[-2:]:
            document = {"event_type": name, "schema_version": schema.version, "event_id": "e",
                        "event_time": "2026-11-26T18:30:00Z"}
            document.update({f.name: samples[f.type] for f in schema.fields if f.required})
            event = validator.validate(UserRecord(source, 0, json.dumps(document).encode()))
            assert isinstance(event, Event), (schema.label, event)
            assert set(event.payload) == {f.name for f in latest.fields}


def test_adding_an_optional_field_with_a_default_is_compatible() -> None:
    v2 = replace(V1, version=2, fields=(*V1.fields, Field("zone", S, required=False,
                                                          default="general")))
    assert compatibility_problems(catalog_with(v2)) == []


def test_removing_an_optional_field_is_compatible() -> None:
    v2 = replace(V1, version=2, fields=V1.fields[:2])
    assert compatibility_problems(catalog_with(v2)) == []


@pytest.mark.parametrize(
    ("fields", "entity_keys", "problem"),
    [
        ((Field("user_id", S), Field("seat", INT, required=False)), None,
         "removes required field 'gate'"),
        ((Field("user_id", S), Field("gate", INT), Field("seat", INT, required=False)), None,
         "changes field 'gate' from string to int"),
        ((*V1.fields, Field("zone", S)), None, "adds required field 'zone'"),
        ((Field("user_id", S), Field("gate", S), Field("seat", INT)), None,
         "makes field 'seat' required without a default"),
        ((*V1.fields, Field("fan_id", S, required=False)), {"user": "fan_id"},
         "entity key 'user' uses field 'fan_id'"),
    ],
    ids=["field-removed", "type-changed", "required-added", "became-required", "key-moved"],
)
def test_breaking_changes_are_named(
    fields: tuple[Field, ...], entity_keys: dict[str, str] | None, problem: str
) -> None:
    v2 = replace(V1, version=2, fields=fields, entity_keys=entity_keys or V1.entity_keys)
    problems = compatibility_problems(catalog_with(v2))
    assert len(problems) == 1
    assert problems[0].startswith("event 'ticket_scan' v2 (after v1): ")
    assert problem in problems[0]
