"""Synthesize the CDK app in-process and hand out its templates in deployment order.

The same ``build_platform`` as ``app.py`` and ``cdk synth``, so the local platform deploys what
a platform team deploys. cdk-nag packs are left to ``make synth``: they validate, they do not
change a template.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackTemplate:
    name: str
    template: dict[str, Any]

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template.get("Resources", {}).items()
            if resource.get("Type") == resource_type
        }


def synthesize(outdir: Path, env_name: str = "dev") -> list[StackTemplate]:
    """Templates of every stack of ``env_name``, dependencies first."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    # Imported here: loading jsii starts a node process, which `--help` should not pay for.
    import aws_cdk as cdk

    from fastbreak.definitions import CATALOG
    from stacks import build_platform, load_settings

    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(context=context, outdir=str(outdir))
    settings = load_settings(env_name, context["fastbreak"]["environments"])
    platform = build_platform(app, settings, CATALOG)
    assembly = app.synth()
    return [
        StackTemplate(stack.stack_name, assembly.get_stack_by_name(stack.stack_name).template)
        for stack in platform.stacks
    ]
