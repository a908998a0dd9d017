"""Peer comparison: Feast's ``get_online_features`` (DynamoDB online store) vs our feature API.

Both read the same feature values from the same moto server. Our side is loaded exactly as in
``bench/feature_read.py`` (the real processor over a day of activity of 50 fans); the values
our API then serves for those 50 users x 3 groups are written, unchanged, into Feast's DynamoDB
online store (one FeatureView per group, user entity, local file registry in a temp dir).
Two shapes, p50 and p99 each: 1 user and 50 users, every feature of the 3 groups. The two are
timed in the same run, interleaved (alternating order), the same number of samples each, over
several repeats (``bench.sampling``).

Two runs, as in ``bench/feature_read.py``: against moto directly, where moto's work per key
read dominates both sides, and through ``bench.latency_proxy``, which adds a modelled in-region
round trip (3 ms) to every request of both clients, so that the number of round trips counts
as it does against DynamoDB: Feast reads its feature views one after the other, we read all
groups of all users in one round of parallel requests. Target, on the modelled run: our p99 at
least 3x lower than Feast's.

Feast is optional and never a runtime dependency: ``feast[aws]`` cannot share our venv (its
aiobotocore pins an older botocore), so the Feast side (``bench/feast_side.py``) runs in its own
venv, ``.venv-feast`` at the repository root, created from ``requirements-feast.txt`` when
missing (``FEAST_PYTHON`` may name another interpreter with Feast installed). It is driven one
JSON line at a time and times ``get_online_features`` itself, so the pipe between the two
processes is not counted against Feast.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from bench import feature_read as fr
from bench.latency_proxy import latency_proxy
from bench.results_format import BenchResult
from bench.sampling import measure, percentiles, result, timed

ROOT = Path(__file__).resolve().parent.parent
FEAST_VENV = ROOT / ".venv-feast"
REQUIREMENTS = ROOT / "requirements-feast.txt"
SIDE_SCRIPT = Path(__file__).resolve().parent / "feast_side.py"
PROJECT, REGION = "fastbreak_peer", "us-east-1"
TARGET_FACTOR = 3.0


def feast_python() -> str:
    """The interpreter of the Feast venv, created (about 30 s) if missing."""
    override = os.environ.get("FEAST_PYTHON")
    if override:
        return override
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FEAST_VENV} from {REQUIREMENTS.name}", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(FEAST_VENV / "bin" / "pip"), "install", "-q", "-r",
                        str(REQUIREMENTS)], check=True)
    return str(python)


def _our_values(users: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """What our API serves: user -> group -> feature -> value (None where it has none)."""
    body = json.loads(fr._api(fr.batch_event(users))()["body"])
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for entity in body["entities"]:
        groups: dict[str, dict[str, Any]] = {group: {} for group in fr.GROUPS}
        for key, feature in entity["features"].items():
            group, name = key.split(".", 1)
            groups[group][name] = None if feature is None else feature["value"]
        rows[entity["entity_id"]] = groups
    return rows


def _kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int64"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float64"
    return "string"  # strings as they are, lists and pairs JSON-encoded


def _feast_spec(rows: dict[str, dict[str, dict[str, Any]]],
                endpoint: str) -> dict[str, Any]:
    names = {group: sorted({n for user in rows.values() for n in user[group]})
             for group in fr.GROUPS}
    kinds = {group: {name: _kind([user[group].get(name) for user in rows.values()])
                     for name in names[group]}
             for group in fr.GROUPS}
    encoded = {
        user_id: {group: {name: (value if value is None or isinstance(value, str)
                                 or kinds[group][name] != "string" else json.dumps(value))
                          for name, value in values[group].items()}
                  for group in fr.GROUPS}
        for user_id, values in rows.items()
    }
    return {"endpoint": endpoint, "project": PROJECT, "region": REGION, "groups": kinds,
            "rows": encoded, "event_time_ms": fr.NOW_MS}


class _FeastSide:
    """The Feast subprocess, one request and one answer a line."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "fastbreak-local",
               "AWS_SECRET_ACCESS_KEY": "fastbreak-local", "AWS_DEFAULT_REGION": REGION,
               "FEAST_USAGE": "False"}
        self.process = subprocess.Popen(
            [feast_python(), str(SIDE_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )
        ready = self._ask(spec)
        if not ready.get("ready"):
            raise RuntimeError(f"Feast side failed: {ready}")
        self.checked = int(ready["checked"])

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        stdin: IO[str] | None = self.process.stdin
        stdout: IO[str] | None = self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"Feast side exited ({self.process.wait(30)})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def read_ms(self, users: list[str]) -> float:
        return float(self._ask({"users": users})["ms"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def run() -> list[BenchResult]:
    results: list[BenchResult] = []
    with fr.loaded_store() as endpoint, latency_proxy(endpoint) as modelled:
        fr.serve_from(endpoint)
        rows = _our_values(fr.USERS)
        for suffix, route in fr.ROUTES:
            read_endpoint = modelled if suffix else endpoint
            bare = fr.BareReads(fr.serve_from(read_endpoint))
            feast = _FeastSide(_feast_spec(rows, read_endpoint))
            print(f"Feast online store loaded ({route}), {feast.checked} values read back equal",
                  file=sys.stderr)
            try:
                for shape_name, shape, users, runs in fr.SHAPES:
                    results.extend(_compared(
                        f"feast_peer_{shape_name}{suffix}", f"{shape}, {route}", users, runs,
                        feast, bare, None if suffix else "the target is on the modelled run",
                    ))
            finally:
                feast.close()
    return results


def _compared(name: str, shape: str, users: list[str], runs: int, feast: _FeastSide,
              bare: fr.BareReads, informational: str | None) -> list[BenchResult]:
    """Ours, Feast, and the bare calls for our keys, interleaved: the bare calls are what a
    reader with no cost of its own would take on this backend, so their ratio to Feast is the
    best any reader could show here."""
    entities = [("user", user) for user in users]
    measured = measure(
        [timed(fr._api(fr.event_for(users))), functools.partial(feast.read_ms, users),
         timed(functools.partial(bare.read, entities, fr.GROUPS))],
        runs=runs, repeats=fr.REPEATS, label=name,
    )
    feast_label = "Feast 0.67 get_online_features, DynamoDB store"
    target = f"at least {TARGET_FACTOR:g}x lower than Feast's"

    def met(ratio: float) -> bool:
        return ratio * TARGET_FACTOR <= 1

    return [
        result(name, f"ms, {shape}, API handler", feast_label, percentiles(measured, 50),
               target, met, runs, informational),
        result(name, f"ms, {shape}, API handler", feast_label, percentiles(measured, 99),
               target, met, runs, informational),
        result(f"{name}_floor", f"ms, {shape}, bare DynamoDB calls for our keys", feast_label,
               percentiles(measured, 99, ours=2), target, met, runs,
               "the best ratio any reader reaches on this backend"),
    ]


if __name__ == "__main__":
    for outcome in run():
        print(json.dumps(outcome.to_json()))
