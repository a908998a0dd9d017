"""Each aggregation: folding, merge laws (associative, commutative), served results."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fastbreak.definitions.model import Aggregation
from fastbreak.engine.aggregations import Aggregator, TopK, aggregator_for, empty_result
from fastbreak.engine.hll import RELATIVE_STANDARD_ERROR, HyperLogLog

# (time ms, event id, value): ids unique, as after dedup; values exact in binary floating point
events_strategy = st.lists(
    st.tuples(
        st.integers(1, 10_000),
        st.integers(0, 10**6),
        st.one_of(st.integers(-1000, 1000), st.sampled_from([0.5, 1.25, -3.75, 8.0])),
    ),
    max_size=40,
    unique_by=lambda event: event[1],
)

CASES: list[tuple[Aggregation, int]] = [
    (Aggregation.COUNT, 0),
    (Aggregation.SUM, 0),
    (Aggregation.MEAN, 0),
    (Aggregation.MIN, 0),
    (Aggregation.MAX, 0),
    (Aggregation.LAST, 0),
    (Aggregation.LAST_N, 3),
    (Aggregation.APPROX_DISTINCT, 0),
    (Aggregation.TOP_K, 2),
]


def fold(aggregator: Aggregator, events: list[tuple[int, int, Any]]) -> list[Any]:
    state = aggregator.empty()
    for time_ms, event_id, value in events:
        if isinstance(aggregator, TopK):
            # Merge laws hold exactly while distinct values fit the counters (tested apart).
            value = f"v{int(value) % 9}"
        aggregator.add(state, value, time_ms, f"e{event_id:07d}")
    return state


def canonical(aggregator: Aggregator, state: list[Any]) -> str:
    return json.dumps(aggregator.dump(state), sort_keys=True)


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, cuts=st.tuples(st.integers(0, 40), st.integers(0, 40)))
def test_merge_of_partials_equals_folding_everything_in_any_grouping(
    events: list[tuple[int, int, Any]], cuts: tuple[int, int]
) -> None:
    low, high = sorted(cuts)
    parts = [events[:low], events[low:high], events[high:]]
    for aggregation, size in CASES:
        aggregator = aggregator_for(aggregation, size)
        a, b, c = (fold(aggregator, part) for part in parts)
        whole = canonical(aggregator, fold(aggregator, events))
        left = aggregator.merge(aggregator.merge(a, b), c)
        right = aggregator.merge(a, aggregator.merge(b, c))
        swapped = aggregator.merge(c, aggregator.merge(b, a))
        assert canonical(aggregator, left) == whole, aggregation
        assert canonical(aggregator, right) == whole, aggregation
        assert canonical(aggregator, swapped) == whole, aggregation


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, missing=st.sets(st.integers(0, 40)), zero_time=st.booleans())
def test_the_processor_fold_step_leaves_exactly_the_state_add_leaves(
    events: list[tuple[int, int, Any]], missing: set[int], zero_time: bool
) -> None:
    # fold_step inlines add for speed; it must agree on every state, including events that
    # lack the field (skipped) and event time 0 (the empty state's own time).
    for aggregation, size in CASES:
        for field in ("x", None):
            aggregator = aggregator_for(aggregation, size)
            step = aggregator.fold_step("slot", field)
            states: dict[str, list[Any]] = {}
            expected: list[Any] | None = None
            for n, (time_ms, event_id, value) in enumerate(events):
                time_ms = 0 if zero_time and n == 0 else time_ms
                payload = {} if n in missing else {"x": value}
                step(states, payload, time_ms, f"e{event_id:07d}")
                added = time_ms if field is None else payload.get("x")
                if added is not None:
                    expected = expected if expected is not None else aggregator.empty()
                    aggregator.add(expected, added, time_ms, f"e{event_id:07d}")
            if expected is None:
                assert states == {}, aggregation
            else:
                assert canonical(aggregator, states["slot"]) == canonical(aggregator, expected), (
                    aggregation, field,
                )


@settings(max_examples=40, deadline=None)
@given(events=events_strategy)
def test_states_survive_their_json_round_trip(events: list[tuple[int, int, Any]]) -> None:
    for aggregation, size in CASES:
        aggregator = aggregator_for(aggregation, size)
        state = fold(aggregator, events)
        loaded = aggregator.load(json.loads(json.dumps(aggregator.dump(state))))
        assert aggregator.result(loaded) == aggregator.result(state)
        assert canonical(aggregator, loaded) == canonical(aggregator, state)


def test_results_of_the_simple_aggregations() -> None:
    events = [(10, 1, 4), (30, 2, -2), (20, 3, 7)]
    expected = {
        Aggregation.COUNT: 3, Aggregation.SUM: 9, Aggregation.MEAN: 3.0, Aggregation.MIN: -2,
        Aggregation.MAX: 7, Aggregation.LAST: -2,
    }
    for aggregation, value in expected.items():
        aggregator = aggregator_for(aggregation)
        state = fold(aggregator, events)
        assert aggregator.result(state) == value, aggregation
        assert state[0] == 30, "the state carries its newest event time"


def test_an_older_event_never_overwrites_a_newer_last_value() -> None:
    aggregator = aggregator_for(Aggregation.LAST)
    state = aggregator.empty()
    aggregator.add(state, "new", 2_000, "b")
    aggregator.add(state, "old", 1_000, "z")
    assert aggregator.result(state) == "new"
    older = aggregator.empty()
    aggregator.add(older, "old", 1_000, "z")
    assert aggregator.result(aggregator.merge(older, state)) == "new"


def test_equal_event_times_are_broken_by_event_id_so_every_order_agrees() -> None:
    aggregator = aggregator_for(Aggregation.LAST)
    one, two = aggregator.empty(), aggregator.empty()
    aggregator.add(one, "from-a", 5, "a")
    aggregator.add(two, "from-b", 5, "b")
    assert aggregator.result(aggregator.merge(one, two)) == "from-b"
    assert aggregator.result(aggregator.merge(two, one)) == "from-b"


def test_last_n_keeps_the_newest_values_newest_first() -> None:
    aggregator = aggregator_for(Aggregation.LAST_N, 2)
    state = fold(aggregator, [(1, 1, "a"), (3, 2, "c"), (2, 3, "b")])
    assert aggregator.result(state) == ["c", "b"]


def test_empty_windows_serve_zero_counts_and_no_values() -> None:
    assert empty_result(Aggregation.COUNT) == 0
    assert empty_result(Aggregation.SUM) == 0
    assert empty_result(Aggregation.MEAN) is None
    assert empty_result(Aggregation.LAST) is None
    assert empty_result(Aggregation.LAST_N) == []
    assert empty_result(Aggregation.APPROX_DISTINCT) == 0
    assert empty_result(Aggregation.TOP_K) == []


def test_top_k_is_exact_while_distinct_values_fit_its_counters() -> None:
    aggregator = TopK(3)
    state = aggregator.empty()
    counts = {f"team{i}": i + 1 for i in range(aggregator.capacity)}
    for value, count in counts.items():
        for n in range(count):
            aggregator.add(state, value, n, f"{value}-{n}")
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    assert aggregator.result(state) == [[v, c] for v, c in top]


def test_top_k_beyond_capacity_underestimates_by_at_most_n_over_capacity_plus_one() -> None:
    aggregator = TopK(2)
    rng = random.Random(7)
    stream = [f"v{min(int(rng.paretovariate(1.2)), 500)}" for _ in range(20_000)]
    parts = [stream[i::4] for i in range(4)]
    states = []
    for part_index, part in enumerate(parts):
        state = aggregator.empty()
        for n, value in enumerate(part):
            aggregator.add(state, value, n, f"{part_index}-{n}")
        states.append(state)
    merged = states[0]
    for state in states[1:]:
        merged = aggregator.merge(merged, state)
    truth: dict[str, int] = {}
    for value in stream:
        truth[value] = truth.get(value, 0) + 1
    bound = len(stream) / (aggregator.capacity + 1)
    for value, estimate in merged[1].items():
        assert truth[value] - bound <= estimate <= truth[value]
    heaviest = max(truth, key=lambda v: truth[v])
    assert aggregator.result(merged)[0][0] == heaviest


def test_hll_estimates_stay_within_three_standard_errors() -> None:
    for cardinality in (10, 1_000, 20_000, 200_000):
        sketch = HyperLogLog()
        for n in range(cardinality):
            sketch.add(f"user-{cardinality}-{n}")
        error = abs(sketch.estimate() - cardinality) / cardinality
        assert error <= 3 * RELATIVE_STANDARD_ERROR, (cardinality, error)


def test_hll_merge_is_the_sketch_of_the_union_and_idempotent() -> None:
    left, right, union = HyperLogLog(), HyperLogLog(), HyperLogLog()
    for n in range(3_000):
        (left if n % 3 else right).add(n)
        union.add(n)
    left.add(5)  # overlap
    assert left.merge(right) == union
    assert right.merge(left) == union
    assert left.merge(right).merge(right) == union


def test_hll_switches_from_sparse_to_dense_without_changing_registers() -> None:
    sketch = HyperLogLog()
    for n in range(600):
        sketch.add(n)
    assert sketch.sparse is None
    restored = HyperLogLog.load(json.loads(json.dumps(sketch.dump())))
    assert restored == sketch
    small = HyperLogLog()
    small.add("only")
    assert isinstance(small.dump(), list)
    assert math.isclose(small.estimate(), 1)


def test_the_register_memo_changes_no_register_and_keeps_equal_keys_of_other_types_apart() -> None:
    from fastbreak.engine import hll

    values: list[object] = ["a", "b", "a", 1, 1.0, True, "1", "True"]
    hll.forget_registers()
    memoized = HyperLogLog()
    for value in values * 2:  # the second pass reads the memo
        memoized.add(value)
    expected = bytearray(hll.REGISTERS)
    for value in values:
        index, rank = hll.register_of(value)
        expected[index] = max(expected[index], rank)
    assert memoized.registers() == bytes(expected)
    assert len({hll.register_of(v) for v in (1, 1.0, True)}) == 3
