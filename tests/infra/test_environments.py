"""Environments cannot page each other: every name and metric dimension an alarm selects on
is the environment's own, and no alarm of dev would count prod's data or the other way."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import only


def alarms(platform: SynthesizedPlatform) -> dict[str, dict[str, Any]]:
    return {
        alarm["Properties"]["AlarmName"]: alarm["Properties"]
        for template in platform.templates.values()
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
    }


def selected_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    if "Metrics" in alarm:
        return [query["MetricStat"]["Metric"] for query in alarm["Metrics"]
                if "MetricStat" in query]
    return [alarm]


def literal_selections(platform: SynthesizedPlatform) -> set[str]:
    """Every (namespace, metric, dimensions) an alarm selects with literal values only: those
    are the selections CloudFormation cannot make unique by itself."""
    found = set()
    for alarm in alarms(platform).values():
        for metric in selected_metrics(alarm):
            dimensions = metric.get("Dimensions", [])
            if all(isinstance(d["Value"], str) for d in dimensions):
                found.add(json.dumps([metric["Namespace"], metric["MetricName"], dimensions],
                                     sort_keys=True))
    return found


def test_alarm_names_carry_the_environment(dev: SynthesizedPlatform,
                                           prod: SynthesizedPlatform) -> None:
    assert all(name.startswith("Fastbreak-dev-") for name in alarms(dev))
    assert all(name.startswith("Fastbreak-prod-") for name in alarms(prod))


def test_no_alarm_of_dev_selects_a_metric_that_an_alarm_of_prod_selects(
    dev: SynthesizedPlatform, prod: SynthesizedPlatform,
) -> None:
    shared = literal_selections(dev) & literal_selections(prod)
    assert shared == set()
    # Those with only literal values are the API's (by name) and the handlers' custom metrics.
    assert any('"ApiName"' in selection for selection in literal_selections(prod))


def test_rest_api_is_named_per_environment(dev: SynthesizedPlatform,
                                           prod: SynthesizedPlatform) -> None:
    assert only(dev.serving, "AWS::ApiGateway::RestApi")["Properties"]["Name"] == (
        "Fastbreak-dev-FeatureApi")
    assert only(prod.serving, "AWS::ApiGateway::RestApi")["Properties"]["Name"] == (
        "Fastbreak-prod-FeatureApi")


def test_custom_metric_alarms_select_the_environment_dimension(
    dev: SynthesizedPlatform,
) -> None:
    custom = [
        metric for alarm in alarms(dev).values() for metric in selected_metrics(alarm)
        if metric["Namespace"] == "Fastbreak"
    ]
    assert custom, "expected an alarm on a handler's custom metric"
    for metric in custom:
        assert {"Name": "environment", "Value": "dev"} in metric["Dimensions"], metric


def test_the_handlers_are_told_their_environment(dev: SynthesizedPlatform) -> None:
    functions = [function["Properties"] for template in (dev.processing, dev.serving)
                 for function in template.find_resources("AWS::Lambda::Function").values()]
    assert len(functions) == 3
    for function in functions:
        assert function["Environment"]["Variables"]["FASTBREAK_ENV"] == "dev"
