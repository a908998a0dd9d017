"""Synthesize the CDK app and hand out its templates in deployment order.

The same ``build_platform`` as ``app.py`` and ``cdk synth``, so the local platform deploys what
a platform team deploys. cdk-nag packs are left to ``make synth``: they validate, they do not
change a template.

Synthesis runs in a child process (``python -m localplatform.assembly OUTDIR ENV``): CDK's jsii
runtime starts a node process that would otherwise live as long as the platform, and would die
with the platform's terminal's Ctrl-C before Python can stop it, leaving a traceback on exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ORDER_FILE = "fastbreak-stacks.json"  # the stack names, dependencies first
# jsii prints an end-of-life banner for Node 20 on every synth unless told not to (the first
# name is the documented one, the second the one this jsii version reads).
QUIET_JSII = {"JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
              "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}


class SynthesisError(RuntimeError):
    """The CDK app did not synthesize; the message holds what the app printed."""


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
    path = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "lambdas"),
                            os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "localplatform.assembly", str(outdir), env_name],
        env={**os.environ, **QUIET_JSII, "PYTHONPATH": path}, cwd=REPO_ROOT,
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SynthesisError(f"synthesis of '{env_name}' failed:\n{done.stderr[-4000:]}")
    names: list[str] = json.loads((outdir / ORDER_FILE).read_text())
    return [
        StackTemplate(name, json.loads((outdir / f"{name}.template.json").read_text()))
        for name in names
    ]


def _synthesize_here(outdir: Path, env_name: str) -> None:
    import aws_cdk as cdk

    from fastbreak.definitions import CATALOG
    from stacks import build_platform, load_settings

    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    # No asset is bundled: the functions run in this process from the repository, and the
    # deployment uploads placeholder code (deploy.py). Bundling would install the Lambda
    # platform's wheels on every start for nothing.
    context["aws:cdk:bundling-stacks"] = []
    app = cdk.App(context=context, outdir=str(outdir))
    settings = load_settings(env_name, context["fastbreak"]["environments"])
    platform = build_platform(app, settings, CATALOG)
    assembly = app.synth()
    names = []
    for stack in platform.stacks:
        artifact = assembly.get_stack_by_name(stack.stack_name)
        (outdir / f"{stack.stack_name}.template.json").write_text(json.dumps(artifact.template))
        names.append(stack.stack_name)
    (outdir / ORDER_FILE).write_text(json.dumps(names))


if __name__ == "__main__":
    _synthesize_here(Path(sys.argv[1]), sys.argv[2])
