"""Pages reach someone: CloudWatch may publish to the page topic (only this environment's
alarms), undelivered pages are kept, and prod refuses to synth without a subscriber or a
runbook URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sns as sns

from constructs_lib import ConstructPropsError, Monitoring
from stacks.settings import SettingsError, check_deployable, load_settings
from tests.infra.conftest import CDK_CONTEXT, REPO, SynthesizedPlatform, environments
from tests.infra.template_queries import only


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["Statement"])


def cloudwatch_statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in statements(document)
            if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]


def alarm_pattern(statement: dict[str, Any]) -> str:
    parts = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Join"][1]
    return "".join(part if isinstance(part, str) else "<>" for part in parts)


def test_page_topic_lets_only_this_environments_alarms_publish(
    prod: SynthesizedPlatform,
) -> None:
    policy = only(prod.monitoring, "AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]
    (allow,) = cloudwatch_statements(policy)
    assert allow["Effect"] == "Allow"
    assert allow["Action"] == "sns:Publish"
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert alarm_pattern(allow).endswith(":alarm:Fastbreak-prod-*")


def test_page_topic_key_lets_only_this_environments_alarms_encrypt(
    prod: SynthesizedPlatform,
) -> None:
    topic = only(prod.monitoring, "AWS::SNS::Topic")["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = prod.monitoring.find_resources("AWS::KMS::Key")[key_id]["Properties"]
    (allow,) = cloudwatch_statements(key["KeyPolicy"])
    assert set(allow["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert alarm_pattern(allow).endswith(":alarm:Fastbreak-prod-*")


def test_every_service_principal_in_a_key_policy_is_conditioned(
    dev: SynthesizedPlatform,
) -> None:
    for name, template in dev.templates.items():
        for key_id, key in template.find_resources("AWS::KMS::Key").items():
            for statement in statements(key["Properties"]["KeyPolicy"]):
                principal = statement.get("Principal", {})
                if "Service" in principal:
                    condition = statement.get("Condition", {})
                    keys = {k for test in condition.values() for k in test}
                    assert keys & {"aws:SourceArn", "aws:SourceAccount",
                                   "kms:EncryptionContext:aws:logs:arn"}, (name, key_id)


def test_log_keys_admit_only_the_log_groups_of_their_stack(dev: SynthesizedPlatform) -> None:
    (key,) = [k for k in dev.storage.find_resources("AWS::KMS::Key").values()
              if "log groups of this stack" in k["Properties"]["Description"]]
    (logs_statement,) = [
        s for s in statements(key["Properties"]["KeyPolicy"])
        if "logs" in json.dumps(s.get("Principal", {}))
    ]
    pattern = logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert pattern["Fn::Join"][1][-1] == ":log-group:Fastbreak-dev-Storage-*"


def test_prod_pages_the_configured_addresses_and_keeps_undelivered_pages(
    prod: SynthesizedPlatform,
) -> None:
    (subscription,) = prod.monitoring.find_resources("AWS::SNS::Subscription").values()
    properties = subscription["Properties"]
    assert (properties["Protocol"], properties["Endpoint"]) == ("email", "oncall@example.com")
    dead_letters = properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    queue = prod.monitoring.find_resources("AWS::SQS::Queue")[dead_letters]["Properties"]
    assert "KmsMasterKeyId" in queue
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in prod.monitoring.find_resources("AWS::CloudWatch::Alarm").values()}
    undelivered = alarms["Fastbreak-prod-PagesUndelivered"]
    assert undelivered["Dimensions"][0]["Value"]["Fn::GetAtt"] == [dead_letters, "QueueName"]


def test_prod_alarm_descriptions_link_runbooks_by_absolute_url(
    prod: SynthesizedPlatform,
) -> None:
    for template in prod.templates.values():
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values():
            description = alarm["Properties"]["AlarmDescription"]
            assert "Runbook: https://github.com/example/fastbreak/blob/main/docs/runbooks.md#" in (
                description), alarm["Properties"]["AlarmName"]


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ({"runbook_base_url": "https://example.com/repo"},
         r"'monitoring.page_emails', 'monitoring.page_https_endpoints' or "
         r"'monitoring.page_topic_arn' must name who is paged"),
        ({"page_emails": ["oncall@example.com"]},
         r"'monitoring.runbook_base_url' must be the https:// URL"),
    ],
)
def test_prod_without_a_subscriber_or_runbook_url_is_refused_naming_the_setting(
    monitoring: dict[str, Any], message: str,
) -> None:
    envs = environments()
    envs["prod"]["monitoring"] = {
        key: value for key, value in envs["prod"]["monitoring"].items()
        if key not in ("page_emails", "runbook_base_url")
    } | monitoring
    settings = load_settings("prod", envs)  # valid values: tools may read them
    with pytest.raises(SettingsError, match=message):
        check_deployable(settings)


def test_an_existing_pager_topic_counts_as_a_subscriber() -> None:
    envs = environments()
    envs["prod"]["monitoring"] = {
        "page_topic_arn": "arn:aws:sns:us-east-1:123456789012:org-pager",
        "runbook_base_url": "https://example.com/repo",
    }
    settings = load_settings("prod", envs)
    check_deployable(settings)
    assert settings.get("monitoring.page_topic_arn").endswith(":org-pager")


def test_cdk_synth_of_prod_as_shipped_fails_naming_the_paging_setting() -> None:
    context = {**CDK_CONTEXT, "env": "prod"}
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        env={**os.environ, "CDK_CONTEXT_JSON": json.dumps(context),
             "CDK_OUTDIR": str(REPO / "cdk.out" / "test-prod-unpaged")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "environment 'prod': setting 'monitoring.page_emails'" in result.stderr


def test_monitoring_refuses_an_existing_topic_together_with_topic_props(
    stack: cdk.Stack,
) -> None:
    existing = sns.Topic.from_topic_arn(stack, "Pager",
                                        "arn:aws:sns:us-east-1:123456789012:pager")
    with pytest.raises(ConstructPropsError,
                       match="either 'existing_page_topic' or 'topic_props'"):
        Monitoring(stack, "Monitoring", name_prefix="Test", environment="test",
                   existing_page_topic=existing, topic_props={"display_name": "pages"})


def test_monitoring_refuses_a_page_topic_that_accepts_plain_http(stack: cdk.Stack) -> None:
    with pytest.raises(ConstructPropsError, match="'enforce_ssl' is enforced"):
        Monitoring(stack, "Monitoring", name_prefix="Test", environment="test",
                   topic_props={"enforce_ssl": False})
