from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.settings import DEFAULTS, SettingsError, load_settings
from tests.infra.conftest import CDK_CONTEXT, REPO, environments

ENVIRONMENTS = CDK_CONTEXT["fastbreak"]["environments"]


def test_dev_gets_the_kit_defaults() -> None:
    settings = load_settings("dev", ENVIRONMENTS)
    assert settings.get("processor.batch_size") == DEFAULTS["processor"]["batch_size"]
    assert not settings.is_production


def test_prod_overrides_only_what_it_names() -> None:
    settings = load_settings("prod", environments())
    assert settings.get("stream.retention_hours") == 168
    assert settings.get("stream.mode") == "on_demand"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stream": {"retention_hours": 12}}, "'stream.retention_hours' must be an integer"),
        ({"processor": {"batch_size": 20000}}, "'processor.batch_size'"),
        ({"processor": {"parallelization_factor": 0}}, "'processor.parallelization_factor'"),
        ({"processor": {"max_retry_attempts": -1}}, "'processor.max_retry_attempts'"),
        ({"processor": {"batchsize": 10}}, "unknown setting 'processor.batchsize'"),
        ({"streams": {}}, "unknown setting 'streams'"),
        ({"stream": {"mode": "serverless"}}, "'stream.mode' must be one of"),
        ({"offline_store": {"firehose_buffer_mb": 8}}, "'offline_store.firehose_buffer_mb'"),
        ({"monitoring": {"page_emails": ["not-an-address"]}}, "'monitoring.page_emails'"),
        ({"monitoring": {"page_https_endpoints": ["http://x"]}}, "page_https_endpoints"),
        ({"log_retention_days": 31}, "'log_retention_days' must be one of"),
        ({"processor": {"max_record_age_seconds": 200_000}}, "exceeds the streams' retention"),
    ],
)
def test_invalid_setting_fails_naming_it(overrides: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings("test", {"test": overrides})


def test_unknown_environment_lists_the_known_ones() -> None:
    with pytest.raises(SettingsError, match=r"unknown environment 'staging'.*dev, prod"):
        load_settings("staging", ENVIRONMENTS)


def test_cdk_synth_of_an_unknown_environment_fails_with_the_message() -> None:
    context = {**CDK_CONTEXT, "env": "staging"}
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        env={**os.environ, "CDK_CONTEXT_JSON": json.dumps(context),
             "CDK_OUTDIR": str(REPO / "cdk.out" / "test-unknown-env")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unknown environment 'staging'" in result.stderr


def test_parallelization_up_to_ten_is_allowed_with_audience_groups(tmp_path: Path) -> None:
    # The audience stage re-keys game and content groups: stage 1 writes only user items.
    from tests.infra.conftest import synthesize

    synthesized = synthesize("dev", tmp_path, dev={"processor": {
        "parallelization_factor": 10, "reserved_concurrency": 40}})
    (mapping,) = [resource["Properties"] for resource in synthesized.processing.find_resources(
        "AWS::Lambda::EventSourceMapping").values()
        if resource["Properties"]["ParallelizationFactor"] == 10]
    variables = [resource["Properties"]["Environment"]["Variables"] for resource in
                 synthesized.processing.find_resources("AWS::Lambda::Function").values()
                 if "PARTIALS_STREAM_NAME" in resource["Properties"]["Environment"]["Variables"]]
    assert [v["PARALLELIZATION_FACTOR"] for v in variables] == ["10"]
    assert mapping["BatchSize"] == 1000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stream": {"on_demand_peak_shards": 60}},
         r"'processor.reserved_concurrency' is 50, below the 60 concurrent batches the "
         r"mapping runs \('stream.on_demand_peak_shards' 60 x "
         r"'processor.parallelization_factor' 1\)"),
        ({"stream": {"mode": "provisioned", "shard_count": 30},
          "processor": {"parallelization_factor": 2}},
         r"below the 60 concurrent batches .*'stream.shard_count' 30"),
        ({"api": {"provisioned_concurrency_min": 10, "provisioned_concurrency_max": 60}},
         r"'api.provisioned_concurrency_max' \(60\) exceeds 'api.reserved_concurrency' \(50\)"),
        ({"api": {"provisioned_concurrency_min": 10}}, "must both be 0"),
        ({"api": {"game_windows": [{"name": "sat", "start": "0 14 ? * SAT *",
                                    "end": "0 20 ? * SAT *", "min_provisioned": 5}]}},
         "'api.game_windows' needs provisioned concurrency"),
        ({"api": {"game_windows": [{"name": "sat", "start": "0 14 * SAT",
                                    "end": "0 20 ? * SAT *", "min_provisioned": 5}]}},
         "window 'sat' start must be a six-field cron expression"),
        ({"api": {"provisioned_concurrency_min": 5, "provisioned_concurrency_max": 20,
                  "game_windows": [{"name": "sat", "start": "0 14 ? * SAT *",
                                    "end": "0 20 ? * SAT *", "min_provisioned": 40}]}},
         "window 'sat' min_provisioned 40 is outside"),
        ({"processor": {"deployment": "yolo"}}, "'processor.deployment' must be one of"),
        ({"audience": {"parallelization_factor": 10}},
         r"'audience.reserved_concurrency' is 20, below the 40 concurrent batches the "
         r"audience stage's mapping runs \('audience.partials_peak_shards' 4 x "
         r"'audience.parallelization_factor' 10\)"),
        ({"audience": {"max_record_age_seconds": 90_000}},
         "'audience.max_record_age_seconds' exceeds the streams' retention"),
        ({"audience": {"batch_size": 0}}, "'audience.batch_size' must be an integer"),
        ({"monitoring": {"page_topic_arn": "pager"}}, "'monitoring.page_topic_arn'"),
    ],
)
def test_capacity_and_deployment_settings_are_checked_naming_the_setting(
    overrides: dict, message: str,
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings("test", {"test": overrides})


def test_defaults_live_in_the_constructs_defaults_module() -> None:
    from constructs_lib import defaults

    settings = load_settings("dev", ENVIRONMENTS)
    assert settings.get("processor.memory_mb") == defaults.PROCESSOR_FUNCTION["memory_size"]
    assert settings.get("processor.max_record_age_seconds") == (
        defaults.PROCESSOR_EVENT_SOURCE["max_record_age"].to_seconds())
    assert settings.get("api.throttle_rate_per_second") == (
        defaults.API_THROTTLE["throttling_rate_limit"])
    assert settings.get("monitoring.api_p99_latency_alarm_ms") == (
        defaults.MONITORING["api_p99_latency_ms"])
