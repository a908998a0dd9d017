"""Request validation of the read path, without AWS: what is selected, and what is refused."""

from __future__ import annotations

import pytest

from fastbreak.definitions import CATALOG
from fastbreak.serving.request import (
    EntityRef,
    GroupSelection,
    InvalidRequest,
    RequestValidator,
)

VALIDATOR = RequestValidator(CATALOG)


def test_no_names_select_every_feature_of_every_group_of_the_type_in_catalog_order() -> None:
    request = VALIDATOR.single("game", "g-1", None)

    assert request.entities == (EntityRef("game", "g-1"),)
    assert request.selections == {
        "game": (GroupSelection("game_live", tuple(CATALOG.group("game_live").served_names())),)
    }


def test_features_and_groups_merge_without_repeats_in_the_order_first_asked() -> None:
    request = VALIDATOR.single(
        "user", "u-1",
        ["user_experiments.exposures_24h", "user_experiments", "user_engagement.views_7d",
         "user_engagement.views_1h"],
    )

    assert request.selections["user"] == (
        GroupSelection("user_experiments", ("exposures_24h", "recent_exposures_lifetime",
                                            "last_variant_lifetime")),
        GroupSelection("user_engagement", ("views_7d", "views_1h")),
    )


def test_a_mixed_batch_selects_per_entity_type() -> None:
    request = VALIDATOR.batch(
        [{"entity_type": "user", "entity_id": "u"}, {"entity_type": "content", "entity_id": "c"}],
        ["user_affinity.top_teams_lifetime", "content_trending.views_1h"],
    )

    assert request.selections == {
        "content": (GroupSelection("content_trending", ("views_1h",)),),
        "user": (GroupSelection("user_affinity", ("top_teams_lifetime",)),),
    }


@pytest.mark.parametrize(
    "entity_id", ["", "x" * 129, "tab\there", "nul\x00", "lone\ud800", "zero\u200bwidth"]
)
def test_ids_that_are_empty_too_long_or_not_printable_are_refused(entity_id: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        VALIDATOR.single("user", entity_id, None)

    assert refused.value.field == "entity_id"


def test_ids_with_any_printable_characters_up_to_128_are_accepted() -> None:
    for entity_id in ("x" * 128, "user#42", "Zoë's fan", "a/b?c=d", "🏀"):
        assert VALIDATOR.single("user", entity_id, None).entities[0].entity_id == entity_id


def test_error_messages_bound_what_they_echo() -> None:
    with pytest.raises(InvalidRequest) as refused:
        VALIDATOR.single("u" * 10_000, "id", None)

    assert len(refused.value.message) < 200
