"""Each aggregation: folding, merge laws (associative, commutative), served results."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fastbreak.definitions.model import Aggregation
from fastbreak.engine.aggregations import Aggregator, TopK, aggregator_for, empty_result
from fastbreak.engine.hll import RELATIVE_STANDARD_ERROR, HyperLogLog

# (time ms, event id, value): ids unique, as after dedup. Doubles of any magnitude: sums and
# means are exact, so merge laws hold with no tolerance.
events_strategy = st.lists(
    st.tuples(
        st.integers(1, 10_000),
        st.integers(0, 10**6),
        st.one_of(
            st.integers(-1000, 1000),
            st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
        ),
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


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=30),
    seed=st.integers(0, 1000),
)
def test_sums_and_means_are_the_exact_value_rounded_once_whatever_the_order(
    values: list[float], seed: int
) -> None:
    total = Fraction(0)
    for value in values:
        total += Fraction(value)
    shuffled = list(values)
    random.Random(seed).shuffle(shuffled)
    for aggregation in (Aggregation.SUM, Aggregation.MEAN):
        aggregator = aggregator_for(aggregation, floating=True)
        one = fold(aggregator, [(1, n, v) for n, v in enumerate(values)])
        # the same values in another order, folded as two partials merged the other way round
        cut = len(shuffled) // 2
        parts = [fold(aggregator, [(1, n, v) for n, v in enumerate(part)])
                 for part in (shuffled[:cut], shuffled[cut:])]
        other = aggregator.merge(parts[1], parts[0])
        assert canonical(aggregator, one) == canonical(aggregator, other)
        exact_value = total if aggregation is Aggregation.SUM else (
            total / len(values) if values else None
        )
        expected = _rounded(exact_value)
        assert aggregator.result(one) == expected or (
            expected is None and aggregator.result(one) is None
        )


def _rounded(value: Fraction | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # Fraction -> float is correctly rounded
    except OverflowError:
        return None


def test_a_sum_past_the_double_range_is_served_as_null_never_infinity() -> None:
    aggregator = aggregator_for(Aggregation.SUM, floating=True)
    state = fold(aggregator, [(1, 1, 1e308), (2, 2, 1e308)])
    assert aggregator.result(state) is None
    assert "Infinity" not in json.dumps(aggregator.dump(state))
    mean = aggregator_for(Aggregation.MEAN)
    assert mean.result(fold(mean, [(1, 1, 1e308), (2, 2, 1e308)])) == 1e308


def test_a_double_field_sums_to_a_float_and_an_int_field_to_an_int() -> None:
    events = [(1, 1, 2), (2, 2, 3)]
    as_int = aggregator_for(Aggregation.SUM)
    assert as_int.result(fold(as_int, events)) == 5
    as_double = aggregator_for(Aggregation.SUM, floating=True)
    served = as_double.result(fold(as_double, events))
    assert served == 5.0 and type(served) is float


def test_sum_and_mean_states_written_before_sums_were_exact_still_load() -> None:
    total, mean = aggregator_for(Aggregation.SUM, floating=True), aggregator_for(Aggregation.MEAN)
    assert total.result(total.load([7, 2.5])) == 2.5
    assert mean.result(mean.load([7, 7.5, 3])) == 2.5
    merged = total.merge(total.load([7, 0.1]), total.load([8, 0.2]))
    assert total.result(merged) == 0.30000000000000004  # 0.1 + 0.2, each as stored, exact


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
