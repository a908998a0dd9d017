"""Every code block of README.md and docs/ runs as written, against one local platform.

As Powertools runs its documentation's examples in CI: a block that does not run is a bug of
the documentation. Blocks run in document order (README first, then docs/ by name) from a
sandbox that looks like the repository root (its entries linked), where the module's platform
has written ``.fastbreak/local.env``, in an environment with no AWS or Fastbreak settings of its
own: a block gets the platform only through what it sources.

- ``bash``: run with ``bash -euo pipefail``.
- ``console``: the ``$ `` lines run in one shell; every other line must appear in the output.
- ``python``: run by ``.venv/bin/python`` with the platform's exports set, as in a shell that
  sourced them.
- ``json``: must parse. ``text``: diagrams, sketches and output; not code.

A block preceded by ``<!-- docs: not run: REASON -->`` is not run; the reason is required.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localplatform.offline_export import export_offline_store
from localplatform.platform import LocalPlatform, PlatformOptions

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash", "console", "python", "json", "text"}
NOT_RUN = re.compile(r"<!-- docs: not run: (?P<reason>.*\S.*) -->")
BLOCK_TIMEOUT_S = 600  # a guard against a hung block, not a measurement


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason, for a block that is not run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            language = line[3:].strip()
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            marker = NOT_RUN.fullmatch(lines[index - 1].strip()) if index else None
            found.append(Block(path, index + 1, language, "\n".join(lines[index + 1 : end]) + "\n",
                               marker["reason"] if marker else None))
            index = end
        index += 1
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]


def test_every_block_names_a_language_the_docs_test_knows() -> None:
    unknown = [f"{block.where}: {block.language or '(none)'}" for block in ALL_BLOCKS
               if block.language not in LANGUAGES]
    assert unknown == []


def test_blocks_not_run_are_few_and_say_why() -> None:
    not_run = [block for block in ALL_BLOCKS if block.not_run is not None]
    runnable = [block for block in ALL_BLOCKS if block.language in {"bash", "console", "python"}]
    # 7: make demo/test and the long local-platform commands; what needs an AWS account or
    # Maven Central: the README's deploy blocks, the training-set Glue job, docs/flink-runtime.md's
    # packaging and start-application blocks.
    assert len(not_run) <= 7, [block.where for block in not_run]
    assert len(runnable) - len(not_run) >= 8


# ---- the platform and the sandbox --------------------------------------------------------------
@dataclass
class Sandbox:
    root: Path
    env_file: Path
    env_text: str
    environment: dict[str, str]  # a clean shell's
    exports: dict[str, str]  # what sourcing the env file sets

    def restore_env_file(self) -> None:
        # A block may start a platform of its own, which writes and then removes this file.
        if not self.env_file.exists() or self.env_file.read_text() != self.env_text:
            self.env_file.write_text(self.env_text)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    stale = subprocess.run(["make", "-q", "setup"], cwd=ROOT, capture_output=True, check=False)
    assert stale.returncode == 0, "run `make setup` first: a block's `make` would re-install"
    root = tmp_path_factory.mktemp("repo")
    for entry in ROOT.iterdir():
        if entry.name not in (".fastbreak", "demo-output"):
            (root / entry.name).symlink_to(entry)
    env_file = root / ".fastbreak" / "local.env"
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith(("AWS_", "FASTBREAK_", "PYTHON", "JSII_"))}
    with LocalPlatform(PlatformOptions(env_file=env_file)) as platform:
        text = env_file.read_text()
        keep_offline_files_as_a_demo_does(platform, root)
        yield Sandbox(root, env_file, text, clean, platform.environment())


def keep_offline_files_as_a_demo_does(platform: LocalPlatform, root: Path) -> None:
    """The docs open ``demo-output/offline/`` "after make demo": give the sandbox one, made the
    way the demo makes it (events through the stream, Firehose and the processor)."""
    exports = {**os.environ, **platform.environment()}
    producer = [str(ROOT / ".venv" / "bin" / "python"), "-m", "fastbreak_producer"]
    stream = ["--stream-name", platform.stream_name]
    # The example file (dated, so routed as too late) and a few seconds of live games.
    for command in (["replay", str(ROOT / "docs" / "examples" / "events.jsonl"), *stream],
                    ["simulate", "--duration", "3", "--rate", "20", *stream]):
        sent = subprocess.run([*producer, *command], env=exports, capture_output=True,
                              text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stderr
    assert platform.wait_until_processed(timeout=60)
    platform.drain_deliveries(timeout=60)
    written = export_offline_store(platform.client("s3"), platform.offline_bucket(),
                                   root / "demo-output" / "offline")
    assert written["raw/"] > 0


# ---- running blocks ----------------------------------------------------------------------------
def run_shell(sandbox: Sandbox, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=sandbox.root, env=sandbox.environment,
        capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, check=False,
    )


def run_python(sandbox: Sandbox, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(sandbox.root / ".venv" / "bin" / "python"), "-"], input=code, cwd=sandbox.root,
        env={**sandbox.environment, **sandbox.exports}, capture_output=True, text=True,
        timeout=BLOCK_TIMEOUT_S, check=False,
    )


def console_script(code: str) -> tuple[str, list[str]]:
    """The ``$ `` lines as one script, and the output lines the block shows."""
    commands = [line[2:] for line in code.splitlines() if line.startswith("$ ")]
    shown = [line.strip() for line in code.splitlines()
             if line.strip() and not line.startswith("$ ")]
    return "\n".join(commands), shown


@pytest.mark.parametrize(
    "block", [block for block in ALL_BLOCKS if block.not_run is None and block.language != "text"],
    ids=lambda block: block.where,
)
def test_the_block_runs_as_written(sandbox: Sandbox, block: Block) -> None:
    if block.language == "json":
        json.loads(block.code)
        return
    sandbox.restore_env_file()
    if block.language == "python":
        done = run_python(sandbox, block.code)
    elif block.language == "console":
        script, shown = console_script(block.code)
        done = run_shell(sandbox, script)
        output = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
        missing = [line for line in shown if line not in output]
        assert missing == [], f"{block.where} does not print {missing}:\n{done.stderr[-2000:]}"
    else:
        done = run_shell(sandbox, block.code)
    assert done.returncode == 0, (
        f"{block.where} failed ({done.returncode}):\n{shlex.quote(block.code)}\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
    )
    assert "Traceback (most recent call last)" not in done.stderr, done.stderr[-3000:]
