"""Deployable units of Fastbreak, composed from constructs_lib."""

from stacks.platform import Platform, build_platform
from stacks.settings import Settings, SettingsError, load_settings

__all__ = ["Platform", "Settings", "SettingsError", "build_platform", "load_settings"]
