"""cdk-nag passes on the real app, fails on a known-bad resource, and no policy grants '*'."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs

from stacks.platform import apply_nag_packs
from tests.infra.conftest import SynthesizedPlatform


def policy_statements(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(properties["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in properties.get("Policies", [])]
        for document in documents:
            yield from document["Statement"]


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_nag_packs_report_no_unacknowledged_finding(
    env_name: str, request: pytest.FixtureRequest
) -> None:
    platform: SynthesizedPlatform = request.getfixturevalue(env_name)
    report = json.loads(
        (Path(platform.assembly.directory) / "validation-report.json").read_text()
    )
    violations = [
        (plugin["pluginName"], violation["ruleName"])
        for plugin in report["pluginReports"]
        for violation in plugin.get("violations", [])
    ]
    assert violations == []
    plugins = {plugin["pluginName"] for plugin in report["pluginReports"]}
    assert {"AwsSolutions", "Serverless", "NIST.800.53.R5"} <= plugins


def test_every_acknowledgement_names_a_resource_and_a_specific_reason(
    dev: SynthesizedPlatform,
) -> None:
    report = json.loads((Path(dev.assembly.directory) / "validation-report.json").read_text())
    stack_names = {stack.stack_name for stack in dev.platform.stacks}
    acknowledged = [
        violation
        for plugin in report["pluginReports"]
        for violation in plugin.get("suppressedViolations", [])
    ]
    assert acknowledged, "expected the documented acknowledgements"
    for violation in acknowledged:
        assert len(violation["reason"]) >= 60, violation["acknowledgedId"]
        if not violation["acknowledgedId"].startswith("CloudFormation-Validate::"):
            # Acknowledged on a resource's construct, never on a whole stack.
            assert violation["acknowledgedAt"] not in stack_names, violation["acknowledgedId"]


def test_nag_fails_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Insecure")
    sqs.Queue(stack, "PlainQueue", encryption=sqs.QueueEncryption.UNENCRYPTED)
    apply_nag_packs(app)
    with pytest.raises(Exception, match=r"(?i)validation"):
        app.synth()


def test_no_policy_grants_every_action(dev: SynthesizedPlatform) -> None:
    for name, template in dev.templates.items():
        for statement in policy_statements(template.to_json()):
            actions = statement.get("Action", [])
            for action in [actions] if isinstance(actions, str) else actions:
                assert action != "*" and not action.endswith(":*"), (name, action)
