"""Lambda aliases, which moto's CloudFormation skips: the name event sources and integrations
invoke, resolved to a published version, or split between two while a deployment shifts
traffic (the alias's routing configuration).

Each invocation goes to one version; the split follows the weight exactly over every run of
invocations (a credit counter, not a coin), so a drill is the same on every run, and the first
invocation after a shift goes to the new version: a quiet function (a Kinesis mapping invokes
about once a second per shard) still tries it early in a short canary. Recorded as
Lambda records an alias: ``AWS/Lambda`` Invocations and Errors by ``FunctionName`` and
``Resource`` (``function:alias``), and by ``ExecutedVersion`` too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from localplatform.lambda_runtime import FunctionError, LocalFunction
from localplatform.metrics import MetricStore


class LocalAlias:
    def __init__(self, name: str, version: str, function: LocalFunction,
                 metrics: MetricStore) -> None:
        self.name = name
        self.function_name = function.spec.name
        self.qualified_name = f"{self.function_name}:{name}"
        self.arn = f"{function.spec.arn}:{name}"
        self.metrics = metrics
        self.versions: dict[str, LocalFunction] = {version: function}
        self.version = version
        # (the version traffic is shifting to, the share of invocations it gets)
        self.routing: tuple[str, float] | None = None
        self._credit = 0.0
        self._lock = threading.Lock()

    @property
    def current(self) -> LocalFunction:
        """The version the alias points to (the one that serves everything outside a shift)."""
        return self.versions[self.version]

    @property
    def role_arn(self) -> str:
        return self.current.spec.role_arn

    # ---- what a deployment does -------------------------------------------------------------
    def publish(self, function: LocalFunction) -> None:
        self.versions[function.spec.version] = function

    def shift(self, version: str, weight: float) -> None:
        """Send ``weight`` (0..1) of the invocations to ``version``, the rest to the current."""
        with self._lock:
            self.routing = (version, weight)
            self._credit = 1.0 - weight

    def point_to(self, version: str) -> None:
        """All traffic to ``version``: a deployment's last step, or its rollback."""
        with self._lock:
            self.version = version
            self.routing = None
            self._credit = 0.0

    # ---- invoking ---------------------------------------------------------------------------
    def invoke(self, event: Mapping[str, Any]) -> Any:
        function = self._pick()
        dimensions = {"FunctionName": self.function_name, "Resource": self.qualified_name}
        executed = {**dimensions, "ExecutedVersion": function.spec.version}
        for where in (dimensions, executed):
            self.metrics.put("AWS/Lambda", "Invocations", 1, where)
        try:
            return function.invoke(event)
        except FunctionError:
            for where in (dimensions, executed):
                self.metrics.put("AWS/Lambda", "Errors", 1, where)
            raise

    def _pick(self) -> LocalFunction:
        with self._lock:
            if self.routing is None:
                return self.current
            version, weight = self.routing
            self._credit += weight
            if self._credit >= 1.0:
                self._credit -= 1.0
                return self.versions[version]
            return self.current
