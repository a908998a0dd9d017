"""Synthesize the CDK app once per test session (dev and prod) and share the templates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from fastbreak.definitions import CATALOG
from stacks import Platform, build_platform, load_settings
from stacks.platform import apply_nag_packs

REPO = Path(__file__).resolve().parents[2]
CDK_CONTEXT: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]


@dataclass
class SynthesizedPlatform:
    platform: Platform
    assembly: cdk.cx_api.CloudAssembly
    storage: Template
    processing: Template
    serving: Template
    monitoring: Template

    @property
    def templates(self) -> dict[str, Template]:
        return {"storage": self.storage, "processing": self.processing,
                "serving": self.serving, "monitoring": self.monitoring}


# What a platform team adds to cdk.json before prod synthesizes: who is paged, and where the
# runbooks are browsable (prod refuses to synth without them).
PROD_PAGING = {
    "page_emails": ["oncall@example.com"],
    "runbook_base_url": "https://github.com/example/fastbreak/blob/main",
}


def environments(**overrides: dict[str, Any]) -> dict[str, Any]:
    """cdk.json's environments, prod with paging configured, and ``overrides`` merged in."""
    merged: dict[str, Any] = json.loads(json.dumps(CDK_CONTEXT["fastbreak"]["environments"]))
    prod = merged["prod"]
    prod["monitoring"] = {**prod.get("monitoring", {}), **PROD_PAGING}
    for name, sections in overrides.items():
        target = merged.setdefault(name, {})
        for section, values in sections.items():
            if isinstance(values, dict):
                target[section] = {**target.get(section, {}), **values}
            else:
                target[section] = values
    return merged


def synthesize(env_name: str, outdir: Path, **overrides: dict[str, Any]) -> SynthesizedPlatform:
    envs = environments(**overrides)
    context = {**CDK_CONTEXT, "fastbreak": {**CDK_CONTEXT["fastbreak"], "environments": envs}}
    app = cdk.App(context=context, outdir=str(outdir))
    settings = load_settings(env_name, envs)
    platform = build_platform(app, settings, CATALOG)
    apply_nag_packs(app)
    assembly = app.synth()  # raises if a cdk-nag finding is not acknowledged

    def template(stack: cdk.Stack) -> Template:
        return Template.from_json(assembly.get_stack_by_name(stack.stack_name).template)

    return SynthesizedPlatform(
        platform, assembly, template(platform.storage), template(platform.processing),
        template(platform.serving), template(platform.monitoring),
    )


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedPlatform:
    return synthesize("dev", tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedPlatform:
    return synthesize("prod", tmp_path_factory.mktemp("cdk-prod"))


@pytest.fixture
def stack() -> Iterator[cdk.Stack]:
    """An empty stack for construct-level tests of props and errors."""
    app = cdk.App(context=CDK_CONTEXT)
    yield cdk.Stack(app, "ConstructUnderTest")
