"""The JSON shape of feature answers, shared by the API and anything that logs answers.

    {"as_of": "...Z", "entities": [{"entity_type": "user", "entity_id": "u1",
      "features": {"user_engagement.views_1h": {"value": 3, "event_time": "...Z",
                                                "age_ms": 1500},
                   "user_engagement.clicks_1h": null}}]}
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from fastbreak.engine.fold import FeatureValue
from fastbreak.engine.timestamps import format_ms
from fastbreak.serving.client import EntityFeatures, FeatureResult

# One event feeds many served values (every window of every feature it counts in), so an answer
# repeats few distinct event times: strftime was most of the time spent shaping a batch answer.
_event_time = lru_cache(maxsize=4096)(format_ms)


def value_json(value: FeatureValue | None) -> dict[str, Any] | None:
    if value is None or value.event_time_ms is None:
        return None
    return {"value": value.value, "event_time": _event_time(value.event_time_ms),
            "age_ms": value.age_ms}


def entity_json(answer: EntityFeatures) -> dict[str, Any]:
    return {
        "entity_type": answer.entity.entity_type,
        "entity_id": answer.entity.entity_id,
        "features": {name: value_json(value) for name, value in answer.features.items()},
    }


def result_json(result: FeatureResult) -> dict[str, Any]:
    return {
        "as_of": format_ms(result.as_of_ms),
        "entities": [entity_json(answer) for answer in result.entities],
    }


def single_json(result: FeatureResult) -> dict[str, Any]:
    """``GET`` of one entity: the entity's fields at the top level."""
    return {"as_of": format_ms(result.as_of_ms), **entity_json(result.entities[0])}


def json_text(document: Any) -> str:
    """Compact JSON text of an answer. Non-finite floats are refused (``ValueError``), never
    written as ``Infinity`` or ``NaN``: those are not JSON, and a client would fail to parse the
    whole answer. The merge serves null where a value has no finite form."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False)
