"""Reference-data enrichment: league from team, for event types that declare it."""

from __future__ import annotations

from dataclasses import replace

from fastbreak.definitions import CATALOG, Field, FieldType
from fastbreak.engine.reference import UNKNOWN, Enricher, league_of


def test_leagues_come_from_the_shipped_reference_data() -> None:
    assert league_of("lal") == "nba"
    assert league_of("ars") == "epl"
    assert league_of("no-such-team") == UNKNOWN


def test_only_event_types_that_declare_the_derived_field_are_enriched() -> None:
    assert not any(Enricher(CATALOG).applies_to(name) for name in CATALOG.event_names)
    follow = CATALOG.latest("game_follow")
    with_league = replace(
        follow, version=follow.version + 1,
        fields=(*follow.fields, Field("league", FieldType.STRING, required=False,
                                      default=UNKNOWN)),
    )
    enricher = Enricher(replace(CATALOG, events=(*CATALOG.events, with_league)))
    assert enricher.applies_to("game_follow")
    payload = {"team_id": "bos", "league": UNKNOWN}
    enricher.enrich("game_follow", payload)
    assert payload["league"] == "nba"
    sent = {"team_id": "bos", "league": "nba-g-league"}  # what the producer sent stands
    enricher.enrich("game_follow", sent)
    assert sent["league"] == "nba-g-league"
