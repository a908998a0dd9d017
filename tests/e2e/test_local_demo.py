"""The demo and ``serve`` as a user runs them, in a process of their own: output piped to a file
(as in CI or ``| tee``), Ctrl-C to the whole process group (as a terminal sends it)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "local-platform.md"


def documented_summary_keys() -> set[str]:
    section = DOC.read_text().split("## The summary", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for row in re.findall(r"^\| (`[^|]+) \|", section, flags=re.MULTILINE):
        keys.update(re.findall(r"`([a-z_0-9]+)`", row))
    return keys


def localplatform(*args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "localplatform", *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,  # type: ignore[call-overload]
    )


def test_a_piped_demo_shows_progress_lines_no_handler_output_and_writes_its_summary(
    tmp_path: Path,
) -> None:
    summary_path = tmp_path / "summary.json"
    env_file = tmp_path / "local.env"
    demo = localplatform("demo", "--duration", "8", "--games", "2", "--rate", "10",
                         "--summary-json", str(summary_path), "--env-file", str(env_file))
    stdout, stderr = demo.communicate(timeout=600)

    assert demo.returncode == 0, stderr[-3000:]
    lines = stdout.splitlines()
    assert any(re.match(r"\s*\d+s  sent [\d,]+ \(", line) for line in lines), stdout
    assert not [line for line in lines if line.startswith("{")], "handler output on stdout"
    assert "Traceback" not in stderr
    for name in ("endpoint (every AWS service)", "events stream", "online store table",
                 "offline store bucket", "feature API"):
        assert any(line.strip().startswith(name) and "…" not in line for line in lines), name
    summary = json.loads(summary_path.read_text())
    assert summary["events_in"] > 0 and summary["caught_up"] is True
    assert set(summary) == documented_summary_keys() - {"fault_drill"}
    assert not env_file.exists()  # removed when the platform stopped


def test_ctrl_c_stops_serve_cleanly_and_removes_its_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "local.env"
    serve = localplatform("serve", "--env-file", str(env_file), start_new_session=True)
    deadline = time.monotonic() + 300  # a guard against a platform that never starts
    while not env_file.exists():
        assert serve.poll() is None, serve.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the platform did not start"
        time.sleep(0.2)
    exports = dict(re.findall(r"^export (\w+)=(.*)$", env_file.read_text(), re.MULTILINE))
    assert {"AWS_ENDPOINT_URL", "AWS_REGION", "FASTBREAK_STREAM", "FASTBREAK_ONLINE_TABLE",
            "FASTBREAK_OFFLINE_BUCKET", "FASTBREAK_API_URL"} <= set(exports)

    os.killpg(serve.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    stdout, stderr = serve.communicate(timeout=120)

    assert serve.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    assert "stopping" in stdout
    assert not env_file.exists()
