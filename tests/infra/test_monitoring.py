from __future__ import annotations

import json
import re

import aws_cdk as cdk

from constructs_lib import Monitoring
from tests.infra.conftest import REPO, SynthesizedPlatform
from tests.infra.template_queries import logical_id, only

EXPECTED_ALARMS = {
    "EventsStreamIteratorAge", "EventsStreamWriteThrottled", "EventsStreamReadThrottled",
    "ProcessorErrors", "ProcessorThrottles", "ProcessorIteratorAge", "ProcessorFailedBatches",
    "ProcessorQuarantineSurge", "AudienceErrors", "AudienceThrottles", "AudienceIteratorAge",
    "AudienceFailedBatches", "PartialsStreamWriteThrottled",
    "OnlineStoreThrottles", "OnlineStoreSystemErrors",
    "OfflineDeliveryFreshness", "FeatureApiServerErrors", "FeatureApiLatencyP99",
    "ConsistencyBelowTarget", "ConsistencyCheckErrors",
}


def alarms(platform: SynthesizedPlatform) -> dict[str, dict]:
    return {
        alarm["Properties"]["AlarmName"].removeprefix("Fastbreak-dev-"): alarm["Properties"]
        for alarm in platform.monitoring.find_resources("AWS::CloudWatch::Alarm").values()
    }


def test_the_documented_alarms_exist(dev: SynthesizedPlatform) -> None:
    assert set(alarms(dev)) == EXPECTED_ALARMS


def test_every_alarm_pages_on_alarm_and_on_recovery(dev: SynthesizedPlatform) -> None:
    topic = {"Ref": logical_id(dev.monitoring, "AWS::SNS::Topic")}
    for name, alarm in alarms(dev).items():
        assert alarm["AlarmActions"] == [topic], name
        assert alarm["OKActions"] == [topic], name


def test_every_alarm_of_every_stack_links_an_existing_runbook_section(
    dev: SynthesizedPlatform, prod: SynthesizedPlatform,
) -> None:
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")
        for heading in re.findall(r"^## (.+)$", runbooks, flags=re.MULTILINE)
    }
    every_alarm = [
        alarm["Properties"]
        for platform in (dev, prod)
        for template in platform.templates.values()
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
    ]
    assert len(every_alarm) > 2 * len(EXPECTED_ALARMS)
    for alarm in every_alarm:
        name = alarm["AlarmName"]
        match = re.search(r"docs/runbooks\.md#([a-z0-9-]+)", alarm["AlarmDescription"])
        assert match, f"{name} has no runbook link"
        assert match.group(1) in anchors, f"{name} links a missing section {match.group(1)}"


def test_page_topic_is_encrypted_and_tls_only(dev: SynthesizedPlatform) -> None:
    assert "KmsMasterKeyId" in only(dev.monitoring, "AWS::SNS::Topic")["Properties"]
    policy = only(dev.monitoring, "AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}} for s in policy["Statement"])


def test_iterator_age_thresholds_come_from_settings(dev: SynthesizedPlatform) -> None:
    assert alarms(dev)["ProcessorIteratorAge"]["Threshold"] == 60_000
    assert alarms(dev)["AudienceIteratorAge"]["Threshold"] == 60_000


def test_the_dashboard_shows_both_stages(dev: SynthesizedPlatform) -> None:
    body = json.dumps(only(dev.monitoring, "AWS::CloudWatch::Dashboard")["Properties"])
    for title in ("Processor iterator age (ms)", "Audience stage iterator age (ms)",
                  "Audience stage errors/throttles", "Partials stream write throttles"):
        assert title in body


def test_dashboard_is_created(dev: SynthesizedPlatform) -> None:
    only(dev.monitoring, "AWS::CloudWatch::Dashboard")


def test_paging_subscriptions_come_from_configuration(stack: cdk.Stack) -> None:
    Monitoring(stack, "Monitoring", name_prefix="Test", environment="test",
               page_emails=["oncall@example.com"],
               page_https_endpoints=["https://pager.example.com/hook"])
    template = cdk.assertions.Template.from_stack(stack)
    protocols = sorted(s["Properties"]["Protocol"]
                       for s in template.find_resources("AWS::SNS::Subscription").values())
    assert protocols == ["email", "https"]
