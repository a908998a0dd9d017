"""Evaluate the template's CloudWatch alarms and page through its SNS topic.

moto stores alarms but never evaluates them. This evaluator reads
every ``AWS::CloudWatch::Alarm`` of the templates (single metric or metric math), computes its
datapoints from the local metric store, applies ``EvaluationPeriods``/``DatapointsToAlarm``/
``TreatMissingData`` as CloudWatch does, and on a state change publishes CloudWatch's alarm
notification to the alarm's ``AlarmActions`` or ``OKActions`` topics. The alarms are also
created in moto's CloudWatch and their state set there, so ``describe-alarms`` shows them.

``time_scale`` shortens periods (60 s at scale 6 lasts 10 s) so that an on-call drill fits in
minutes; thresholds and datapoint counts stay as the template says.
"""

from __future__ import annotations

import ast
import json
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from localplatform.aws_env import ACCOUNT, REGION
from localplatform.deploy import Deployment
from localplatform.metrics import MetricKey, MetricStore, statistic

REGION_NAME = {"us-east-1": "US East (N. Virginia)"}.get(REGION, REGION)
_COMPARISONS: Mapping[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}
_BINARY: Mapping[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARE: Mapping[type, Callable[[float, float], bool]] = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


@dataclass(frozen=True)
class MetricStat:
    key: MetricKey
    stat: str
    period_s: int


@dataclass
class Alarm:
    name: str
    arn: str
    description: str
    properties: dict[str, Any]  # resolved, for the notification's Trigger and for moto
    metrics: dict[str, MetricStat]  # by id; a single-metric alarm has one, id "m"
    expression: str | None
    period_s: int
    threshold: float
    comparison: str
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing: str
    alarm_actions: list[str]
    ok_actions: list[str]
    state: str = "INSUFFICIENT_DATA"
    history: list[tuple[float, str]] = field(default_factory=list)

    @staticmethod
    def from_properties(properties: dict[str, Any]) -> Alarm:
        if "Metrics" in properties:
            metrics = {
                query["Id"]: _metric_stat(query["MetricStat"]["Metric"],
                                          query["MetricStat"]["Stat"],
                                          query["MetricStat"]["Period"])
                for query in properties["Metrics"] if "MetricStat" in query
            }
            (expression,) = [q["Expression"] for q in properties["Metrics"]
                             if q.get("ReturnData", True) and "Expression" in q]
            period = min(stat.period_s for stat in metrics.values())
        else:
            stat = properties.get("ExtendedStatistic") or properties["Statistic"]
            metrics = {"m": _metric_stat(properties, stat, properties["Period"])}
            expression, period = None, int(properties["Period"])
        evaluation_periods = int(properties["EvaluationPeriods"])
        return Alarm(
            name=properties["AlarmName"],
            arn=f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{properties['AlarmName']}",
            description=properties.get("AlarmDescription", ""),
            properties=properties,
            metrics=metrics,
            expression=expression,
            period_s=period,
            threshold=float(properties["Threshold"]),
            comparison=properties["ComparisonOperator"],
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=int(properties.get("DatapointsToAlarm", evaluation_periods)),
            treat_missing=properties.get("TreatMissingData", "missing"),
            alarm_actions=list(properties.get("AlarmActions", [])),
            ok_actions=list(properties.get("OKActions", [])),
        )


def _metric_stat(metric: Mapping[str, Any], stat: str, period: Any) -> MetricStat:
    dimensions = {d["Name"]: str(d["Value"]) for d in metric.get("Dimensions", [])}
    return MetricStat(MetricKey.of(metric["Namespace"], metric["MetricName"], dimensions),
                      stat, int(period))


def evaluate_expression(expression: str, values: Mapping[str, float | None]) -> float | None:
    """Metric math, the subset CDK alarms use: + - * /, comparisons, IF(cond, a, b)."""
    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ValueError(f"metric math names unknown id {node.id!r}")
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Div) and right == 0:
                return None
            return _BINARY[type(node.op)](left, right)
        if (isinstance(node, ast.Compare) and len(node.ops) == 1
                and type(node.ops[0]) in _COMPARE):
            left, right = walk(node.left), walk(node.comparators[0])
            if left is None or right is None:
                return None
            return 1.0 if _COMPARE[type(node.ops[0])](left, right) else 0.0
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "IF" and len(node.args) == 3):
            condition = walk(node.args[0])
            if condition is None:
                return None
            return walk(node.args[1]) if condition else walk(node.args[2])
        raise ValueError(f"metric math {expression!r} uses what the local platform lacks")

    result = walk(ast.parse(expression, mode="eval"))
    return None if result is None else float(result)


def template_alarms(deployment: Deployment) -> list[Alarm]:
    return [
        Alarm.from_properties(stack.resolve(resource["Properties"]))
        for stack, _, resource in deployment.each("AWS::CloudWatch::Alarm")
    ]


class AlarmEvaluator:
    def __init__(self, alarms: Sequence[Alarm], metrics: MetricStore, sns: Any,
                 cloudwatch: Any, sqs: Any, *, time_scale: float = 1.0,
                 interval_s: float = 1.0) -> None:
        self.alarms = list(alarms)
        self.metrics = metrics
        self.sns = sns
        self.cloudwatch = cloudwatch
        self.sqs = sqs
        self.time_scale = time_scale
        self.interval_s = interval_s
        self.notifications: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarms", daemon=True)
        self._queue_urls: dict[str, str] = {}
        self.registered: set[str] = set()  # alarms moto's CloudWatch accepted

    def start(self) -> None:
        for alarm in self.alarms:
            self._register(alarm)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def states(self) -> dict[str, str]:
        return {alarm.name: alarm.state for alarm in self.alarms}

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.evaluate(time.time())

    def evaluate(self, now: float) -> None:
        self._sample_queue_depths(now)
        for alarm in self.alarms:
            new_state, reason = self._state_of(alarm, now)
            if new_state != alarm.state:
                old_state, alarm.state = alarm.state, new_state
                alarm.history.append((now, new_state))
                self._notify(alarm, old_state, reason, now)

    def _state_of(self, alarm: Alarm, now: float) -> tuple[str, str]:
        period = alarm.period_s / self.time_scale
        breaching, present = 0, 0
        datapoints = []
        for index in range(alarm.evaluation_periods):
            end = now - index * period
            value = self._datapoint(alarm, end - period, end)
            if value is None:
                if alarm.treat_missing == "breaching":
                    breaching += 1
                continue
            present += 1
            datapoints.append(value)
            if _COMPARISONS[alarm.comparison][0](value, alarm.threshold):
                breaching += 1
        if not present and alarm.treat_missing == "missing":
            return "INSUFFICIENT_DATA", "no datapoints"
        state = "ALARM" if breaching >= alarm.datapoints_to_alarm else "OK"
        shown = ", ".join(f"{value:g}" for value in datapoints) or "none"
        reason = (
            f"Threshold Crossed: {breaching} out of the last {alarm.evaluation_periods} "
            f"datapoints [{shown}] were {'not ' if state == 'OK' else ''}"
            f"{_COMPARISONS[alarm.comparison][1]} the threshold ({alarm.threshold:g})"
        )
        return state, reason

    def _datapoint(self, alarm: Alarm, start: float, end: float) -> float | None:
        values = {
            metric_id: statistic(self.metrics.values(stat.key, start, end), stat.stat)
            for metric_id, stat in alarm.metrics.items()
        }
        if alarm.expression is None:
            return values["m"]
        return evaluate_expression(alarm.expression, values)

    def _sample_queue_depths(self, now: float) -> None:
        """SQS publishes queue depth itself; the evaluator samples it for the queue alarms."""
        for alarm in self.alarms:
            for stat in alarm.metrics.values():
                if (stat.key.namespace, stat.key.name) != (
                        "AWS/SQS", "ApproximateNumberOfMessagesVisible"):
                    continue
                queue = dict(stat.key.dimensions)["QueueName"]
                if queue not in self._queue_urls:
                    self._queue_urls[queue] = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=self._queue_urls[queue],
                    AttributeNames=["ApproximateNumberOfMessages"],
                )["Attributes"]
                self.metrics.put("AWS/SQS", "ApproximateNumberOfMessagesVisible",
                                 float(attributes["ApproximateNumberOfMessages"]),
                                 {"QueueName": queue}, at=now)

    # ---- notifications -------------------------------------------------------------------
    def _notify(self, alarm: Alarm, old_state: str, reason: str, now: float) -> None:
        when = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        message = {
            "AlarmName": alarm.name,
            "AlarmDescription": alarm.description,
            "AWSAccountId": ACCOUNT,
            "NewStateValue": alarm.state,
            "NewStateReason": reason,
            "StateChangeTime": when + "+0000",
            "Region": REGION_NAME,
            "AlarmArn": alarm.arn,
            "OldStateValue": old_state,
            "OKActions": alarm.ok_actions,
            "AlarmActions": alarm.alarm_actions,
            "InsufficientDataActions": [],
            "Trigger": _trigger(alarm),
        }
        self.notifications.append(message)
        if alarm.name in self.registered:
            self.cloudwatch.set_alarm_state(AlarmName=alarm.name, StateValue=alarm.state,
                                            StateReason=reason[:1000])
        actions = {"ALARM": alarm.alarm_actions, "OK": alarm.ok_actions}.get(alarm.state, [])
        subject = f'{alarm.state}: "{alarm.name}" in {REGION_NAME}'
        for topic in actions:
            self.sns.publish(TopicArn=topic, Subject=subject[:100], Message=json.dumps(message))

    def _register(self, alarm: Alarm) -> None:
        wanted = ("AlarmName", "AlarmDescription", "AlarmActions", "OKActions", "MetricName",
                  "Namespace", "Statistic", "ExtendedStatistic", "Dimensions", "Period",
                  "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
                  "TreatMissingData", "Metrics")
        try:
            self.cloudwatch.put_metric_alarm(
                **{key: value for key, value in alarm.properties.items() if key in wanted}
            )
        except ClientError:
            # moto validates some definitions differently from CloudWatch; the alarm is still
            # evaluated and pages, it is only missing from moto's describe-alarms.
            return
        self.registered.add(alarm.name)


def _trigger(alarm: Alarm) -> dict[str, Any]:
    properties = alarm.properties
    trigger: dict[str, Any] = {
        "Period": alarm.period_s,
        "EvaluationPeriods": alarm.evaluation_periods,
        "DatapointsToAlarm": alarm.datapoints_to_alarm,
        "ComparisonOperator": alarm.comparison,
        "Threshold": alarm.threshold,
        "TreatMissingData": alarm.treat_missing,
        "EvaluateLowSampleCountPercentile": "",
    }
    if alarm.expression is not None:
        trigger["Metrics"] = properties["Metrics"]
        return trigger
    trigger.update(
        MetricName=properties["MetricName"],
        Namespace=properties["Namespace"],
        StatisticType="ExtendedStatistic" if "ExtendedStatistic" in properties
        else "Statistic",
        Statistic=str(properties.get("Statistic", properties.get("ExtendedStatistic"))).upper(),
        Unit=None,
        Dimensions=[{"value": d["Value"], "name": d["Name"]}
                    for d in properties.get("Dimensions", [])],
    )
    return trigger
