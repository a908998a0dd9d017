"""The result format shared by every Fastbreak benchmark (``bench/results/latest.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float
    unit: str
    baseline: str  # what the value is compared with
    baseline_value: float
    ratio: float  # value / baseline_value
    target: str
    met: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
