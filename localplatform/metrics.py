"""An in-memory CloudWatch: datapoints in, statistics per period out.

Fed by the CloudWatch embedded metric format (EMF) lines the handlers print, exactly as the
Lambda log pipeline would, and by the emulators for the metrics AWS services publish
themselves (``AWS/Lambda`` Errors and IteratorAge, ``AWS/Kinesis`` iterator age, ...).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Dimensions = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class MetricKey:
    namespace: str
    name: str
    dimensions: Dimensions

    @staticmethod
    def of(namespace: str, name: str, dimensions: Mapping[str, str] | None = None) -> MetricKey:
        return MetricKey(namespace, name, frozenset((dimensions or {}).items()))


class MetricStore:
    """Thread-safe; CloudWatch semantics where alarms depend on them (exact dimension match)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: dict[MetricKey, list[tuple[float, float]]] = {}

    def put(
        self, namespace: str, name: str, value: float,
        dimensions: Mapping[str, str] | None = None, at: float | None = None,
    ) -> None:
        key = MetricKey.of(namespace, name, dimensions)
        point = (time.time() if at is None else at, float(value))
        with self._lock:
            self._points.setdefault(key, []).append(point)

    def values(self, key: MetricKey, start: float, end: float) -> list[float]:
        """Values with ``start <= timestamp < end``."""
        with self._lock:
            points = list(self._points.get(key, ()))
        return [value for at, value in points if start <= at < end]

    def total(
        self, namespace: str, name: str, dimensions: Mapping[str, str] | None = None
    ) -> float:
        with self._lock:
            points = self._points.get(MetricKey.of(namespace, name, dimensions), [])
            return sum(value for _, value in points)

    def ingest_emf(self, line: str) -> bool:
        """Record the metrics of one EMF log line; False if the line is not EMF."""
        if '"_aws"' not in line:
            return False
        try:
            document = json.loads(line)
        except ValueError:
            return False
        if not isinstance(document, dict) or not isinstance(document.get("_aws"), dict):
            return False
        metadata = document["_aws"]
        at = float(metadata.get("Timestamp", time.time() * 1000)) / 1000
        for directive in metadata.get("CloudWatchMetrics", []):
            namespace = directive.get("Namespace", "")
            for dimension_set in directive.get("Dimensions", []) or [[]]:
                dimensions = {name: str(document.get(name, "")) for name in dimension_set}
                for metric in directive.get("Metrics", []):
                    for value in _as_values(document.get(metric.get("Name"))):
                        self.put(namespace, metric["Name"], value, dimensions, at)
        return True


def _as_values(raw: Any) -> Iterable[float]:
    items = raw if isinstance(raw, list) else [raw]
    return [float(item) for item in items if isinstance(item, int | float)]


def statistic(values: list[float], name: str) -> float | None:
    """CloudWatch's statistic ``name`` (Sum, Average, Maximum, Minimum, SampleCount, pNN)."""
    if not values:
        return None
    if name == "Sum":
        return sum(values)
    if name == "Average":
        return sum(values) / len(values)
    if name == "Maximum":
        return max(values)
    if name == "Minimum":
        return min(values)
    if name == "SampleCount":
        return float(len(values))
    if name.startswith("p"):
        return percentile(values, float(name[1:]))
    raise ValueError(f"statistic {name!r} is not supported locally")


def percentile(values: list[float], rank: float) -> float:
    """Nearest-rank percentile, as CloudWatch computes it for raw datapoints."""
    ordered = sorted(values)
    index = max(0, math.ceil(rank / 100 * len(ordered)) - 1)
    return ordered[min(index, len(ordered) - 1)]
