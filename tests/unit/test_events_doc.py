"""docs/events.md lists the catalog's event types: the table must say what the catalog says."""

from __future__ import annotations

import re
from pathlib import Path

from fastbreak.definitions import CATALOG

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def documented_types() -> dict[str, tuple[list[int], list[str], str]]:
    """event type -> (versions, field names in order, partition key field)."""
    text = DOC.read_text()
    table = text.split("## Event types", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, tuple[list[int], list[str], str]] = {}
    for line in table.splitlines()[2:]:
        name, versions, fields, key = (cell.strip() for cell in line.strip("|").split("|"))
        rows[name.strip("`")] = (
            [int(v) for v in versions.split(",")],
            re.findall(r"`([a-z_]+)`", fields),
            key.strip("`"),
        )
    return rows


def test_the_event_types_table_names_every_type_its_versions_fields_and_partition_key() -> None:
    expected = {}
    for name in CATALOG.event_names:
        versions = CATALOG.versions_of(name)
        latest = versions[-1]
        keys = latest.entity_keys
        partition = keys.get(CATALOG.partition_entity) or next(iter(keys.values()))
        expected[name] = ([schema.version for schema in versions],
                          [field.name for field in latest.fields], partition)

    documented = documented_types()

    assert set(documented) == set(expected)
    for name, (versions, fields, partition) in expected.items():
        doc_versions, doc_fields, doc_partition = documented[name]
        assert doc_versions == versions, name
        # a field's allowed values may be quoted in the cell too: the declared fields, in order
        assert [f for f in doc_fields if f in fields] == fields, name
        assert doc_partition == partition, name
