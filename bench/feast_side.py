"""The Feast side of ``bench/feast_peer.py``; runs in the Feast venv (``.venv-feast``), not ours.

Protocol, one JSON document a line. stdin, first line: the spec ``{"endpoint", "project",
"region", "groups": {view: {feature: type}}, "rows": {user: {view: {feature: value}}},
"event_time_ms"}``; types are ``int64``, ``float64`` or ``string``, values of other shapes come
already JSON-encoded as strings. The script builds a Feast repo in a temp dir (file registry,
DynamoDB online store at ``endpoint``), applies one FeatureView per group, writes the rows
through the online store, reads them all back once and answers ``{"ready": true, "checked": N}``
(N values read back equal to the written ones) or ``{"error": ...}``. Then each further stdin
line ``{"users": [...]}`` is one ``get_online_features`` of every feature of every group for
those users, answered with ``{"ms": elapsed}``. EOF ends it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENTITY, JOIN_KEY = "user", "user_id"


def _value_proto(kind: str, value: Any) -> Any:
    from feast.protos.feast.types.Value_pb2 import Value

    if value is None:
        return Value()
    if kind == "int64":
        return Value(int64_val=int(value))
    if kind == "float64":
        return Value(double_val=float(value))
    return Value(string_val=str(value))


def _feast_type(kind: str) -> Any:
    from feast.types import Float64, Int64, String

    return {"int64": Int64, "float64": Float64, "string": String}[kind]


def _same(kind: str, written: Any, read: Any) -> bool:
    if kind == "float64" and written is not None and read is not None:
        return abs(float(written) - float(read)) < 1e-9
    return bool(written == read)


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.stdin.readline())

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    groups: dict[str, dict[str, str]] = spec["groups"]
    rows: dict[str, dict[str, dict[str, Any]]] = spec["rows"]
    with tempfile.TemporaryDirectory(prefix="feast-peer-") as tmp:
        repo = Path(tmp)
        (repo / "feature_store.yaml").write_text(
            f"project: {spec['project']}\n"
            f"registry: {repo / 'registry.db'}\n"
            "provider: local\n"
            "online_store:\n"
            "  type: dynamodb\n"
            f"  region: {spec['region']}\n"
            f"  endpoint_url: {spec['endpoint']}\n"
            "offline_store:\n"
            "  type: file\n"
            "entity_key_serialization_version: 3\n"
        )
        store = FeatureStore(repo_path=str(repo))
        user = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.STRING)
        source = FileSource(path=str(repo / "unused.parquet"), timestamp_field="event_timestamp")
        views = {
            group: FeatureView(
                name=group, entities=[user], source=source, online=True,
                schema=[Field(name=name, dtype=_feast_type(kind))
                        for name, kind in features.items()],
            )
            for group, features in groups.items()
        }
        store.apply([user, *views.values()])

        event_time = datetime.fromtimestamp(spec["event_time_ms"] / 1000, tz=UTC)
        config = store.config
        provider = store._get_provider()
        for group, view in views.items():
            data = [
                (EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=user_id)]),
                 {name: _value_proto(kind, values[group].get(name))
                  for name, kind in groups[group].items()},
                 event_time, None)
                for user_id, values in rows.items()
            ]
            provider.online_write_batch(config, view, data, None)

        features = [f"{group}:{name}" for group, names in groups.items() for name in names]
        users = list(rows)
        read = store.get_online_features(
            features=features, entity_rows=[{JOIN_KEY: u} for u in users],
            full_feature_names=True).to_dict()
        checked = 0
        for index, user_id in enumerate(users):
            for group, names in groups.items():
                for name, kind in names.items():
                    written = rows[user_id][group].get(name)
                    got = read[f"{group}__{name}"][index]
                    if not _same(kind, written, got):
                        print(json.dumps({"error": f"{user_id} {group}.{name}: wrote "
                                                   f"{written!r}, read {got!r}"}), flush=True)
                        return 1
                    checked += 1
        print(json.dumps({"ready": True, "checked": checked}), flush=True)

        for line in sys.stdin:
            entity_rows = [{JOIN_KEY: u} for u in json.loads(line)["users"]]
            started = time.perf_counter()
            response = store.get_online_features(features=features, entity_rows=entity_rows,
                                                full_feature_names=True)
            response.to_dict()
            elapsed = (time.perf_counter() - started) * 1000
            print(json.dumps({"ms": elapsed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
