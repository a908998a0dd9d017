"""The hot-path shortcuts keep the values that outlive a process (stored dedup ids, sketches)."""

from __future__ import annotations

from fastbreak.engine.hll import HyperLogLog, hash64, register_of


class _Label(str):
    def __str__(self) -> str:
        return "relabelled"


def test_hash64_is_the_stored_blake2b_value_of_the_text() -> None:
    # Pinned: dedup ids and HLL registers in DynamoDB were written with these values.
    assert hash64("user-000001") == 11_996_295_846_175_197_683
    assert hash64(42) == hash64("42") == 6_319_743_179_241_711_738
    assert register_of("user-000001") == (2663, 1)


def test_hash64_of_a_str_subclass_hashes_what_str_makes_of_it() -> None:
    assert hash64(_Label("x")) == hash64("relabelled")


def test_a_sketch_counts_equal_values_of_any_type_alike_through_the_register_memo() -> None:
    sketch = HyperLogLog()
    for value in ("7", 7, "7", "8"):
        sketch.add(value)
    assert sketch.estimate() == 2
