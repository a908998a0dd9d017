#!/usr/bin/env python3
"""CDK entry point: ``cdk synth -c env=prod`` (default ``dev``)."""

from __future__ import annotations

import sys
from pathlib import Path

# The Lambda asset root holds the feature definitions; importing them from there keeps one
# source of truth for the stacks, the processors and the local platform.
sys.path.insert(0, str(Path(__file__).resolve().parent / "lambdas"))

import aws_cdk as cdk

from fastbreak.definitions import CATALOG
from stacks import build_platform, load_settings
from stacks.platform import apply_nag_packs


def main() -> None:
    app = cdk.App()
    env_name = app.node.try_get_context("env") or "dev"
    fastbreak_context = app.node.try_get_context("fastbreak") or {}
    settings = load_settings(env_name, fastbreak_context.get("environments", {}))
    build_platform(app, settings, CATALOG)
    apply_nag_packs(app)
    app.synth()


if __name__ == "__main__":
    main()
