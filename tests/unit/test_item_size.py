"""The size bound behind the item limit: each slot cap holds at its worst, and the values an
event does not carry itself (defaults, reference data) stay within the allowance."""

from __future__ import annotations

import json

from fastbreak.definitions import CATALOG
from fastbreak.engine.aggregations import ApproxDistinct, Count, Mean, Sum
from fastbreak.engine.item_size import STATIC_VALUE_BYTES, capped_state_bytes
from fastbreak.engine.reference import _team_leagues

LATEST_MS = 253_402_300_799_999  # the last millisecond of year 9999
EARLIEST_MS = -62_135_596_800_000  # year 1


def _json_bytes(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def test_a_count_stays_within_its_cap() -> None:
    count = Count()
    state = [EARLIEST_MS, 2**64]
    assert _json_bytes(count.dump(state)) <= (capped_state_bytes(count) or 0)


def test_an_exact_sum_of_the_most_distant_doubles_stays_within_its_cap() -> None:
    for aggregator in (Sum(floating=True), Mean()):
        state = aggregator.empty()
        for value in [1.7976931348623157e308, 5e-324, -1.7976931348623157e308, 2.5e-308] * 1000:
            aggregator.add(state, value, EARLIEST_MS, "e")
        aggregator.add(state, 1.7976931348623157e308, LATEST_MS, "e")
        assert _json_bytes(aggregator.dump(state)) <= (capped_state_bytes(aggregator) or 0)


def test_a_dense_sketch_stays_within_its_cap() -> None:
    sketch = ApproxDistinct()
    state = sketch.empty()
    for n in range(50_000):
        sketch.add(state, f"value-{n}", LATEST_MS, "e")
    assert _json_bytes(sketch.dump(state)) <= (capped_state_bytes(sketch) or 0)


def test_defaults_and_reference_values_fit_the_static_allowance() -> None:
    defaults = [field.default for name in CATALOG.event_names
                for schema in CATALOG.versions_of(name) for field in schema.fields]
    assert max(map(_json_bytes, [*defaults, *_team_leagues().values()])) <= STATIC_VALUE_BYTES
