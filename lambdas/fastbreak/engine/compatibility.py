"""Schema evolution rules: a new event version must not break readers of the previous one.

The processor upcasts every older version to the latest (missing fields take the latest
version's default), and readers of version N must still make sense of data written as N + 1.
So, between consecutive versions of an event:

- a removed field must have been optional (its default stands in for it);
- a field keeps its type;
- an added field must be optional (upcast fills its default into older events);
- a field may not become required unless it has a default;
- every entity key field must exist in the previous version too (or older events would lose
  the key that routes them).
"""

from __future__ import annotations

from itertools import pairwise

from fastbreak.definitions.model import Catalog, EventSchema


def compatibility_problems(catalog: Catalog) -> list[str]:
    problems: list[str] = []
    for name in catalog.event_names:
        versions = catalog.versions_of(name)
        for previous, current in pairwise(versions):
            problems.extend(_between(previous, current))
    return problems


def _between(previous: EventSchema, current: EventSchema) -> list[str]:
    where = f"{current.label} (after v{previous.version})"
    problems: list[str] = []
    for old in previous.fields:
        new = current.field_named(old.name)
        if new is None:
            if old.required:
                problems.append(f"{where}: removes required field '{old.name}'")
        elif new.type is not old.type:
            problems.append(
                f"{where}: changes field '{old.name}' from {old.type.value} to {new.type.value}"
            )
        elif new.required and not old.required and new.default is None:
            problems.append(f"{where}: makes field '{old.name}' required without a default")
    for new in current.fields:
        if previous.field_named(new.name) is None and new.required:
            problems.append(f"{where}: adds required field '{new.name}'; make it optional "
                            "with a default")
    for entity, key_field in current.entity_keys.items():
        if previous.field_named(key_field) is None:
            problems.append(
                f"{where}: entity key '{entity}' uses field '{key_field}', which v"
                f"{previous.version} events do not have"
            )
    return problems
