"""Run a template's Lambda function in-process: the real handler module, imported unchanged.

What the Lambda service would provide is provided here: the template's environment variables
at cold start, a context object, the function's log (JSON lines in a file, EMF metrics into
the metric store) and the ``AWS/Lambda`` metrics (Invocations, Errors, Duration).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from localplatform import output_capture
from localplatform.deploy import DeployedStack
from localplatform.intrinsics import attribute
from localplatform.lambda_context import LambdaContext
from localplatform.metrics import MetricStore

# One process hosts every function, and the handlers read their configuration from
# os.environ at cold start: cold starts take turns, each with its own environment.
_COLD_START_LOCK = threading.Lock()

Fault = Callable[[Mapping[str, Any]], None]


class Invocable(Protocol):
    """What an event source or an integration invokes: a function, or an alias of one."""

    def invoke(self, event: Mapping[str, Any]) -> Any: ...


class FunctionError(RuntimeError):
    """The handler raised (Lambda's ``Unhandled`` function error) or ran past its timeout."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    arn: str
    handler: str
    environment: Mapping[str, str]
    timeout_s: float
    memory_mb: int
    role_arn: str
    version: str = "$LATEST"

    @staticmethod
    def from_template(stack: DeployedStack, logical_id: str) -> FunctionSpec:
        properties = stack.resolve(stack.template["Resources"][logical_id]["Properties"])
        name = stack.physical_ids[logical_id]
        return FunctionSpec(
            name=name,
            arn=attribute("AWS::Lambda::Function", name, "Arn"),
            handler=properties["Handler"],
            environment={k: str(v) for k, v in
                         properties.get("Environment", {}).get("Variables", {}).items()},
            timeout_s=float(properties.get("Timeout", 3)),
            memory_mb=int(properties.get("MemorySize", 128)),
            role_arn=properties["Role"],
        )


class LocalFunction:
    def __init__(self, spec: FunctionSpec, metrics: MetricStore, log_dir: Path) -> None:
        self.spec = spec
        self.metrics = metrics
        self.log_dir = log_dir
        suffix = "" if spec.version == "$LATEST" else f"-v{spec.version}"
        self.log_path = log_dir / f"{spec.name}{suffix}.log"
        self._log_lock = threading.Lock()
        self._handler: Callable[[Any, Any], Any] | None = None
        self._warm = False
        # Set by drills and tests: runs before the handler and may raise, as a crash would.
        self.fault: Fault | None = None
        # Set by benchmarks: given the handler's module right after a cold start's import,
        # e.g. to call its ``configure`` with other clients.
        self.on_cold_start: Callable[[ModuleType], None] | None = None
        self._base: LocalFunction | None = None  # the function a published version is of

    def published(self, version: str) -> LocalFunction:
        """A published version of this function: the same code in an execution environment
        of its own. The handler module is shared with this one (one process cannot import two
        copies of it), so versions differ only by what a drill injects (``fault``)."""
        published = LocalFunction(replace(self.spec, version=version), self.metrics,
                                  self.log_dir)
        published._handler = self._handler
        published.on_cold_start = self.on_cold_start
        published._base = self
        return published

    def invoke(self, event: Mapping[str, Any]) -> Any:
        dimensions = {"FunctionName": self.spec.name}
        self.metrics.put("AWS/Lambda", "Invocations", 1, dimensions)
        started = time.monotonic()
        context = LambdaContext.invocation(self.spec.name, self.spec.arn, self.spec.memory_mb,
                                           self.spec.timeout_s, version=self.spec.version)
        try:
            with output_capture.captured(self._log_line):
                if not self._warm:
                    # Cold until the handler itself has run once: it reads its configuration
                    # on its first call, which an injected fault may have kept from happening.
                    with self._environment():
                        if self._handler is None:
                            self._handler = self._load()
                        return self._run(event, context)
                return self._run(event, context)
        except Exception as error:
            self.metrics.put("AWS/Lambda", "Errors", 1, dimensions)
            self._log_line(f'{{"level":"ERROR","errorType":"{type(error).__name__}"}}')
            raise FunctionError("Unhandled", f"{type(error).__name__}: {error}") from error
        finally:
            elapsed = time.monotonic() - started
            self.metrics.put("AWS/Lambda", "Duration", elapsed * 1000, dimensions)

    def _run(self, event: Mapping[str, Any], context: LambdaContext) -> Any:
        if self.fault is not None:
            self.fault(event)
        assert self._handler is not None
        self._warm = True
        response = self._handler(dict(event), context)
        if context.get_remaining_time_in_millis() == 0:
            # A thread cannot be stopped; the effects stay, as they may on AWS after a timeout.
            raise TimeoutError(f"Task timed out after {self.spec.timeout_s:.0f} seconds")
        return response

    def _load(self) -> Callable[[Any, Any], Any]:
        """The handler of a fresh execution environment: a module imported by an earlier
        platform in this process (tests start several) is re-executed, so that its clients and
        caches from the cold start are this deployment's. A published version takes its
        function's handler (re-executing the module would reset the other version's state)."""
        if self._base is not None:
            if self._base._handler is None:
                self._base._handler = self._base._load()
            return self._base._handler
        module_name, _, attribute_name = self.spec.handler.rpartition(".")
        module = sys.modules.get(module_name)
        module = importlib.reload(module) if module else importlib.import_module(module_name)
        if self.on_cold_start is not None:
            self.on_cold_start(module)
        handler: Callable[[Any, Any], Any] = getattr(module, attribute_name)
        return handler

    @contextmanager
    def _environment(self) -> Iterator[None]:
        with _COLD_START_LOCK:
            saved = {key: os.environ.get(key) for key in self.spec.environment}
            os.environ.update(self.spec.environment)
            try:
                yield
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def _log_line(self, line: str) -> None:
        self.metrics.ingest_emf(line)
        with self._log_lock, self.log_path.open("a", encoding="utf-8") as log:
            log.write(line + "\n")
