"""cfn-lint reports no error on any synthesized template (dev, prod, and a reader with game
windows, the one resource shape neither environment synthesizes as shipped)."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template
from cfnlint.api import ManualArgs, lint

from constructs_lib import FeatureApi
from constructs_lib.feature_api import GameWindow, ProvisionedConcurrency
from tests.infra.conftest import SynthesizedPlatform

REGIONS = ["us-east-1"]


def errors(template: dict) -> list[str]:
    matches = lint(json.dumps(template), config=ManualArgs(regions=REGIONS))
    return [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches
            if m.rule.id.startswith("E")]


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_template_lints_without_errors(env_name: str,
                                             request: pytest.FixtureRequest) -> None:
    platform: SynthesizedPlatform = request.getfixturevalue(env_name)
    for stack in platform.platform.stacks:
        template = json.loads(
            (Path(platform.assembly.directory) / f"{stack.stack_name}.template.json").read_text()
        )
        assert errors(template) == [], stack.stack_name


def test_a_reader_with_game_windows_lints_without_errors(stack: cdk.Stack) -> None:
    key = kms.Key(stack, "LogKey", enable_key_rotation=True)
    window = GameWindow("saturday", "0 14 ? * SAT *", "0 20 ? * SAT *", 40, "Europe/London")
    FeatureApi(stack, "Api", environment={}, log_key=key,
               provisioned_concurrency=ProvisionedConcurrency(10, 50, game_windows=(window,)))
    assert errors(Template.from_stack(stack).to_json()) == []
