"""Where an alarm's runbook section is: ``docs/runbooks.md#<anchor>``, under a base URL."""

from __future__ import annotations

RUNBOOK_DOC = "docs/runbooks.md"


def runbook_url(base_url: str, anchor: str) -> str:
    """The link an alarm description carries. Without a base URL it is a repository path,
    which is enough for dev; prod refuses to synth without one (``stacks/settings.py``)."""
    base = base_url.rstrip("/")
    return f"{base}/{RUNBOOK_DOC}#{anchor}" if base else f"{RUNBOOK_DOC}#{anchor}"
