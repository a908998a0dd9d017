"""The Managed Flink application zip of the audience stage.

    python -m fastbreak_flink.package --jar fastbreak_flink/target/fastbreak-flink-connectors.jar \\
        --out dist/fastbreak-audience-stage.zip

Layout (the application's run options name it, ``fastbreak_flink.settings``):

- ``main.py``: the entry point (``fastbreak_flink/zip_main.py``);
- ``lib/fastbreak-flink-connectors.jar``: the one jar of connectors (the Kinesis source), which
  Maven builds from ``fastbreak_flink/pom.xml``; it is not in the repository;
- ``python/``: the job (``fastbreak_flink``), the engine and the feature definitions
  (``fastbreak``, without the Lambda handlers, the API and the CLI), and boto3 with its
  dependencies for Python 3.12 on Linux (the Flink 2.2 runtime), fetched by pip unless
  ``--deps`` names a folder that holds them already.

``make flink-package`` runs Maven and then this.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from fastbreak_flink.settings import ZIP_ENTRY, ZIP_JAR, ZIP_PYTHON

REPOSITORY = Path(__file__).resolve().parent.parent
# What the job imports of the Lambda asset's package: the engine and the definitions only.
PACKAGES = ("fastbreak/engine", "fastbreak/definitions")
PACKAGE_FILES = ("fastbreak/__init__.py", "fastbreak/py.typed")
# The local runner and the packager are tools of this repository, not of the job.
LEFT_OUT = {"local.py", "package.py", "zip_main.py", "pom.xml"}
RUNTIME_PYTHON = "3.12"  # Managed Flink 2.2's


def boto3_requirement() -> str:
    """boto3 as requirements-flink.txt pins it: the version the tests ran the job with."""
    for line in (REPOSITORY / "requirements-flink.txt").read_text().splitlines():
        if line.startswith("boto3=="):
            return line.strip()
    raise SystemExit("requirements-flink.txt pins no boto3")


def fetch_dependencies(target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
         "--platform", "manylinux2014_x86_64", "--python-version", RUNTIME_PYTHON,
         "--only-binary=:all:", boto3_requirement()],
        check=True,
    )


def _sources() -> Iterator[tuple[Path, str]]:
    lambdas = REPOSITORY / "lambdas"
    for name in PACKAGE_FILES:
        yield lambdas / name, name
    for package in PACKAGES:
        for path in sorted((lambdas / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path, path.relative_to(lambdas).as_posix()
    for path in sorted((REPOSITORY / "fastbreak_flink").glob("*.py")):
        if path.name not in LEFT_OUT:
            yield path, f"fastbreak_flink/{path.name}"


def build_zip(jar: Path, out: Path, deps: Path) -> Path:
    """Write the zip; ``deps`` holds the Python dependencies to ship (boto3 and its own)."""
    if not jar.is_file():
        raise SystemExit(f"{jar}: no connectors jar (mvn -f fastbreak_flink/pom.xml package "
                         "builds it, where Maven Central is reachable)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(REPOSITORY / "fastbreak_flink" / "zip_main.py", ZIP_ENTRY)
        archive.write(jar, ZIP_JAR)
        for path, name in _sources():
            archive.write(path, ZIP_PYTHON + name)
        for path in sorted(deps.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, ZIP_PYTHON + path.relative_to(deps).as_posix())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastbreak_flink.package",
                                     description="Build the audience stage's Flink zip.")
    parser.add_argument("--jar", type=Path, required=True, help="the connectors jar (Maven)")
    parser.add_argument("--out", type=Path, required=True, help="the zip to write")
    parser.add_argument("--deps", type=Path,
                        help="a folder with boto3 and its dependencies (default: fetch by pip)")
    args = parser.parse_args(argv)
    if args.deps is not None:
        if not args.deps.is_dir():
            parser.error(f"--deps {args.deps}: not a folder")
        built = build_zip(args.jar, args.out, args.deps)
    else:
        with tempfile.TemporaryDirectory() as fetched:
            fetch_dependencies(Path(fetched))
            built = build_zip(args.jar, args.out, Path(fetched))
    print(built)
    return 0


if __name__ == "__main__":
    sys.exit(main())
