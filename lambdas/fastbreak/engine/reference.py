"""Enrichment from reference data: fields an event does not carry, looked up from one it does.

Today: ``league`` from ``team_id``. An event type is enriched only if its latest schema
declares the derived field (optional, so producers need not send it); the lookup fills it
when the producer left it empty or at its default. The table ships in the Lambda asset
(``reference_data/teams.json``) and is loaded once per execution environment; lookups are
cached, so a remote source could replace the file without touching the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from fastbreak.definitions.model import Catalog

UNKNOWN = "unknown"
_TEAMS_FILE = Path(__file__).parent / "reference_data" / "teams.json"


@cache
def _team_leagues() -> dict[str, str]:
    leagues: dict[str, str] = json.loads(_TEAMS_FILE.read_text())["teams"]
    return leagues


@lru_cache(maxsize=65_536)
def league_of(team_id: str) -> str:
    return _team_leagues().get(team_id, UNKNOWN)


# derived field -> (source field, lookup)
ENRICHMENTS: dict[str, tuple[str, Callable[[str], str]]] = {"league": ("team_id", league_of)}


class Enricher:
    def __init__(self, catalog: Catalog) -> None:
        self._steps: dict[str, tuple[tuple[str, str, Any, Callable[[str], str]], ...]] = {}
        for name in catalog.event_names:
            latest = catalog.latest(name)
            steps = []
            for target, (source, lookup) in ENRICHMENTS.items():
                declared, given = latest.field_named(target), latest.field_named(source)
                if declared is not None and given is not None:
                    steps.append((target, source, declared.default, lookup))
            if steps:
                self._steps[name] = tuple(steps)

    def applies_to(self, event_type: str) -> bool:
        return event_type in self._steps

    def enrich(self, event_type: str, payload: dict[str, Any]) -> None:
        for target, source, default, lookup in self._steps.get(event_type, ()):
            current = payload.get(target)
            if (current is None or current == default) and payload.get(source) is not None:
                payload[target] = lookup(payload[source])
