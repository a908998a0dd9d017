"""CodeDeploy's Lambda deployments, which moto's CloudFormation skips: shift an alias to a new
version by the template's deployment configuration, and roll it back as soon as one of the
deployment group's alarms is in ALARM.

The deployment group, its configuration and its alarms come from the synthesized template
(``AWS::CodeDeploy::DeploymentGroup`` and the alias's ``CodeDeployLambdaAliasUpdate`` update
policy); the alarms are the ones the local alarm evaluator computes from the handlers'
metrics. ``time_scale`` shortens the configuration's minutes as it shortens alarm periods.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from localplatform.aliases import LocalAlias
from localplatform.deploy import DeployedStack
from localplatform.lambda_runtime import LocalFunction

_CANARY = re.compile(r"^CodeDeployDefault\.LambdaCanary(\d+)Percent(\d+)Minutes?$")
_LINEAR = re.compile(r"^CodeDeployDefault\.LambdaLinear(\d+)PercentEvery(\d+)Minutes?$")
POLL_S = 0.2


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True)
class TrafficStep:
    weight: float  # share of invocations the new version gets during the step
    minutes: int


def traffic_steps(config_name: str) -> list[TrafficStep]:
    """The shifts of a predefined Lambda deployment configuration, before the final 100 %."""
    if config_name == "CodeDeployDefault.LambdaAllAtOnce":
        return []
    if match := _CANARY.match(config_name):
        return [TrafficStep(int(match.group(1)) / 100, int(match.group(2)))]
    if match := _LINEAR.match(config_name):
        percent, minutes = int(match.group(1)), int(match.group(2))
        return [TrafficStep(share / 100, minutes) for share in range(percent, 100, percent)]
    raise ValueError(f"deployment configuration {config_name!r} is not known locally")


@dataclass(frozen=True)
class DeploymentGroupSpec:
    alias_logical_id: str
    config_name: str
    alarm_names: tuple[str, ...]
    auto_rollback_on_alarm: bool

    @staticmethod
    def of_alias(stack: DeployedStack, alias_logical_id: str) -> DeploymentGroupSpec | None:
        """The group that deploys an alias, from the alias's update policy."""
        alias = stack.template["Resources"][alias_logical_id]
        update = alias.get("UpdatePolicy", {}).get("CodeDeployLambdaAliasUpdate")
        if update is None:
            return None
        group_id = update["DeploymentGroupName"]["Ref"]
        group = stack.template["Resources"][group_id]["Properties"]
        alarms = group.get("AlarmConfiguration", {})
        events = group.get("AutoRollbackConfiguration", {}).get("Events", [])
        return DeploymentGroupSpec(
            alias_logical_id=alias_logical_id,
            config_name=group.get("DeploymentConfigName", "CodeDeployDefault.LambdaAllAtOnce"),
            alarm_names=tuple(
                stack.resolve(stack.template["Resources"][alarm["Name"]["Ref"]]["Properties"]
                              ["AlarmName"])
                for alarm in alarms.get("Alarms", []) if alarms.get("Enabled", True)
            ),
            auto_rollback_on_alarm="DEPLOYMENT_STOP_ON_ALARM" in events,
        )


@dataclass
class DeploymentReport:
    version: str
    outcome: Outcome
    alarms_in_alarm: tuple[str, ...] = ()
    # (seconds since the start, what happened)
    timeline: list[tuple[float, str]] = field(default_factory=list)


class LocalDeployment:
    """Deploys new versions of one alias, one at a time, as its deployment group would."""

    def __init__(self, spec: DeploymentGroupSpec, alias: LocalAlias,
                 alarm_states: Callable[[], Mapping[str, str]], *,
                 time_scale: float = 1.0) -> None:
        self.spec = spec
        self.alias = alias
        self.alarm_states = alarm_states
        self.time_scale = time_scale
        self._next_version = 2
        self._lock = threading.Lock()

    def deploy(self, prepare: Callable[[LocalFunction], None] | None = None,
               stop: threading.Event | None = None) -> DeploymentReport:
        """Publish a new version of the alias's function (``prepare`` may change it, a drill
        injects its defect there) and shift the alias to it, step by step."""
        with self._lock:
            started = time.monotonic()
            version = str(self._next_version)
            self._next_version += 1
            new = self.alias.current.published(version)
            if prepare is not None:
                prepare(new)
            self.alias.publish(new)
            previous = self.alias.version
            report = DeploymentReport(version, Outcome.SUCCEEDED)

            def note(what: str) -> None:
                report.timeline.append((round(time.monotonic() - started, 1), what))

            for step in traffic_steps(self.spec.config_name):
                self.alias.shift(version, step.weight)
                note(f"{step.weight:.0%} of invocations to version {version}")
                deadline = time.monotonic() + step.minutes * 60 / self.time_scale
                while time.monotonic() < deadline and not (stop and stop.is_set()):
                    firing = self._firing()
                    if firing and self.spec.auto_rollback_on_alarm:
                        self.alias.point_to(previous)
                        report.outcome, report.alarms_in_alarm = Outcome.ROLLED_BACK, firing
                        note(f"{', '.join(firing)} in ALARM: rolled back to version {previous}")
                        return report
                    time.sleep(POLL_S)
            self.alias.point_to(version)
            note(f"all invocations to version {version}")
            return report

    def _firing(self) -> tuple[str, ...]:
        states = self.alarm_states()
        return tuple(name for name in self.spec.alarm_names if states.get(name) == "ALARM")
