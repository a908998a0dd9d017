"""The cost model's counts of what a deployment holds match the synthesized templates."""

from __future__ import annotations

from fastbreak_ops import cost
from tests.infra.conftest import SynthesizedPlatform


def test_cost_model_counts_the_keys_alarm_metrics_and_dashboards_prod_deploys(
    prod: SynthesizedPlatform,
) -> None:
    templates = prod.templates.values()
    keys = sum(len(t.find_resources("AWS::KMS::Key")) for t in templates)
    dashboards = sum(len(t.find_resources("AWS::CloudWatch::Dashboard")) for t in templates)
    alarm_metrics = sum(
        len([q for q in alarm["Properties"]["Metrics"] if "MetricStat" in q])
        if "Metrics" in alarm["Properties"] else 1
        for t in templates
        for alarm in t.find_resources("AWS::CloudWatch::Alarm").values()
    )
    deployed = (keys, alarm_metrics, dashboards)
    assert deployed == (cost.KMS_KEYS, cost.ALARM_METRICS, cost.DASHBOARDS)
