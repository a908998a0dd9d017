"""Workarounds for moto behaviour that would make the local platform slower than it must be.

The server runs in this process (``embedded_aws``), so a fix is a method replaced on moto's
model class, with the same result. Each one says which moto release it was written against.
"""

from __future__ import annotations


def apply() -> None:
    _kinesis_put_in_constant_time()


def _kinesis_put_in_constant_time() -> None:
    """moto 5.2.5: every record put lists all keys of the shard to find the last sequence
    number, so PutRecords slows down with the shard's size (minutes for 100,000 records).
    The keys are ascending integers in insertion order: the last one is the last key."""
    from moto.kinesis.models import Shard

    def last_sequence_number(shard: Shard) -> int:
        last: int = next(reversed(shard.records), 0)
        return last

    # setattr: a plain assignment would be type-checked against moto's bound signature.
    setattr(Shard, "get_max_sequence_number", last_sequence_number)  # noqa: B010
