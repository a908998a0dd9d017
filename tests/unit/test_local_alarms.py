"""The local alarm evaluator: CloudWatch's datapoint rules, metric math and notifications."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localplatform.alarms import Alarm, AlarmEvaluator, evaluate_expression
from localplatform.metrics import MetricStore

TOPIC = "arn:aws:sns:us-east-1:123456789012:page"
T0 = 1_800_000_000.0
ERRORS_ALARM = {
    "AlarmName": "Fastbreak-dev-ProcessorErrors",
    "AlarmDescription": "The processor fails. Runbook: docs/runbooks.md#processor-errors",
    "Namespace": "AWS/Lambda", "MetricName": "Errors", "Statistic": "Sum", "Period": 60,
    "Dimensions": [{"Name": "FunctionName", "Value": "processor"}],
    "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": 0,
    "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
    "AlarmActions": [TOPIC], "OKActions": [TOPIC],
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: self.calls.append((name, kwargs))


def evaluator(
    *definitions: dict[str, Any], time_scale: float = 1.0
) -> tuple[AlarmEvaluator, MetricStore, Recorder]:
    metrics, sns = MetricStore(), Recorder()
    alarms = [Alarm.from_properties(definition) for definition in definitions]
    return AlarmEvaluator(alarms, metrics, sns, Recorder(), Recorder(), time_scale=time_scale), \
        metrics, sns


def errors(metrics: MetricStore, at: float, value: float = 1) -> None:
    metrics.put("AWS/Lambda", "Errors", value, {"FunctionName": "processor"}, at=at)


def test_two_breaching_datapoints_of_three_page_with_cloudwatchs_message() -> None:
    alarms, metrics, sns = evaluator(ERRORS_ALARM)
    errors(metrics, T0 - 150)
    errors(metrics, T0 - 30)
    alarms.evaluate(T0)
    assert alarms.states() == {"Fastbreak-dev-ProcessorErrors": "ALARM"}
    ((action, published),) = sns.calls
    assert action == "publish" and published["TopicArn"] == TOPIC
    assert published["Subject"] == 'ALARM: "Fastbreak-dev-ProcessorErrors" in US East (N. Virginia)'
    message = json.loads(published["Message"])
    assert (message["OldStateValue"], message["NewStateValue"]) == ("INSUFFICIENT_DATA", "ALARM")
    assert message["Trigger"]["MetricName"] == "Errors"
    assert message["Trigger"]["Dimensions"] == [{"value": "processor", "name": "FunctionName"}]
    assert message["NewStateReason"].startswith("Threshold Crossed: 2 out of the last 3")


def test_one_breaching_datapoint_of_three_is_ok() -> None:
    alarms, metrics, _ = evaluator(ERRORS_ALARM)
    errors(metrics, T0 - 30)
    alarms.evaluate(T0)
    assert alarms.states() == {"Fastbreak-dev-ProcessorErrors": "OK"}


def test_missing_data_is_not_breaching_and_the_all_clear_goes_to_ok_actions() -> None:
    alarms, metrics, sns = evaluator(ERRORS_ALARM)
    errors(metrics, T0 - 90)
    errors(metrics, T0 - 30)
    alarms.evaluate(T0)
    alarms.evaluate(T0 + 240)  # no data for three periods
    states = [json.loads(call["Message"])["NewStateValue"] for _, call in sns.calls]
    assert states == ["ALARM", "OK"]


def test_time_scale_shortens_periods_but_keeps_the_rules() -> None:
    alarms, metrics, _ = evaluator(ERRORS_ALARM, time_scale=6)
    errors(metrics, T0 - 15)  # a 60 s period lasts 10 s
    errors(metrics, T0 - 5)
    alarms.evaluate(T0)
    assert alarms.states()["Fastbreak-dev-ProcessorErrors"] == "ALARM"


@pytest.mark.parametrize(
    ("values", "expected"),
    [({"errors": 3.0, "requests": 200.0}, 1.5), ({"errors": 0.0, "requests": 0.0}, 0.0),
     ({"errors": None, "requests": 10.0}, None)],
)
def test_metric_math_of_the_api_error_rate(values: dict[str, float | None],
                                           expected: float | None) -> None:
    assert evaluate_expression("IF(requests > 0, 100 * errors / requests, 0)", values) == expected


def test_metric_math_outside_the_supported_subset_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        evaluate_expression("ANOMALY_DETECTION_BAND(m1)", {"m1": 1.0})


def test_the_demo_summary_tells_alarm_pages_from_the_first_ok_of_each_alarm() -> None:
    from localplatform.demo import _pages_line

    pages = [
        {"alarm": "a", "state": "OK", "from": "INSUFFICIENT_DATA"},
        {"alarm": "b", "state": "OK", "from": "INSUFFICIENT_DATA"},
        {"alarm": "a", "state": "ALARM", "from": "OK"},
        {"alarm": "a", "state": "OK", "from": "ALARM"},
    ]
    assert _pages_line(pages) == "4: 1 ALARM, 1 back to OK, 2 first OK at start"
    assert _pages_line([]) == "0: 0 ALARM, 0 back to OK"
