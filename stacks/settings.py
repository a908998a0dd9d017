"""Per-environment settings read from ``cdk.json`` context, validated before any construct exists.

``cdk synth -c env=prod`` picks ``context.fastbreak.environments.prod``; each value there
overrides ``DEFAULTS`` below. An unknown environment, an unknown key or a value out of range
fails synth with a ``SettingsError`` that names it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constructs_lib import defaults


class SettingsError(ValueError):
    """A configuration value is unknown or invalid; the message names the setting."""


# What a dev environment gets when cdk.json says nothing. The construct defaults come from
# constructs_lib.defaults, their one home; what is only a setting is stated here.
DEFAULTS: dict[str, Any] = {
    "stream": {
        "mode": "on_demand",  # on_demand | provisioned
        "shard_count": 2,  # used only when mode is provisioned
        # on_demand: the shard count the stream is planned to reach at its peak (it starts at
        # 4 and splits shards as traffic grows); the processor's concurrency must cover it.
        "on_demand_peak_shards": defaults.ON_DEMAND_INITIAL_SHARDS,
        "retention_hours": defaults.seconds(defaults.STREAM["retention_period"]) // 3600,
    },
    "processor": {
        "batch_size": defaults.PROCESSOR_EVENT_SOURCE["batch_size"],
        "max_batching_window_seconds": defaults.seconds(
            defaults.PROCESSOR_EVENT_SOURCE["max_batching_window"]),
        "parallelization_factor": defaults.PROCESSOR_EVENT_SOURCE["parallelization_factor"],
        "max_retry_attempts": defaults.PROCESSOR_EVENT_SOURCE["retry_attempts"],
        "max_record_age_seconds": defaults.seconds(
            defaults.PROCESSOR_EVENT_SOURCE["max_record_age"]),
        "memory_mb": defaults.PROCESSOR_FUNCTION["memory_size"],
        "timeout_seconds": defaults.seconds(defaults.PROCESSOR_FUNCTION["timeout"]),
        "reserved_concurrency": defaults.PROCESSOR_FUNCTION["reserved_concurrent_executions"],
        "deployment": defaults.PROCESSOR_DEPLOYMENT,
    },
    # The audience stage: partials stream -> the game's or content's entity and tile items.
    "audience": {
        # the partials stream's planned shards at peak (on demand: it starts at 4)
        "partials_peak_shards": defaults.PARTIALS_INITIAL_SHARDS,
        "batch_size": defaults.AUDIENCE_EVENT_SOURCE["batch_size"],
        "max_batching_window_seconds": defaults.seconds(
            defaults.AUDIENCE_EVENT_SOURCE["max_batching_window"]),
        "parallelization_factor": defaults.AUDIENCE_EVENT_SOURCE["parallelization_factor"],
        "max_retry_attempts": defaults.AUDIENCE_EVENT_SOURCE["retry_attempts"],
        "max_record_age_seconds": defaults.seconds(
            defaults.AUDIENCE_EVENT_SOURCE["max_record_age"]),
        "memory_mb": defaults.AUDIENCE_FUNCTION["memory_size"],
        "timeout_seconds": defaults.seconds(defaults.AUDIENCE_FUNCTION["timeout"]),
        "reserved_concurrency": defaults.AUDIENCE_FUNCTION["reserved_concurrent_executions"],
        "deployment": defaults.AUDIENCE_DEPLOYMENT,
        # lambda (the settings above) or flink (the settings of "flink"; docs/flink-runtime.md)
        "runtime": "lambda",
    },
    # The audience stage on Managed Service for Apache Flink, when 'audience.runtime' is flink.
    "flink": {
        # The application zip (`make flink-package`): an S3 object (with the key that encrypts
        # it, if a customer-managed one), or a local file that CDK uploads as an asset.
        "code_bucket_name": "",
        "code_key": "",
        "code_kms_key_arn": "",
        "code_zip": "",
        "parallelism": defaults.FLINK_APPLICATION["parallelism"],
        "parallelism_per_kpu": defaults.FLINK_APPLICATION["parallelism_per_kpu"],
        "autoscaling": defaults.FLINK_APPLICATION["auto_scaling_enabled"],
        "checkpoint_interval_seconds": defaults.seconds(
            defaults.FLINK_APPLICATION["checkpoint_interval"]),
        **defaults.FLINK_JOB,
    },
    "online_store": {"deletion_protection": False, "retain_on_delete": False},
    "offline_store": {
        "retain_on_delete": False,
        "firehose_buffer_mb": 64,
        "firehose_buffer_seconds": 300,
        "raw_infrequent_access_days": 30,
        "raw_glacier_days": 90,
        "quarantine_expiry_days": 30,
        "access_log_expiry_days": 90,
    },
    # The scheduled online/offline consistency check (docs/training-sets.md, "Consistency").
    "consistency": {
        "enabled": True,
        "every_minutes": defaults.CONSISTENCY["every_minutes"],
        "lookback_minutes": defaults.CONSISTENCY["lookback_minutes"],
        "settle_minutes": defaults.CONSISTENCY["settle_minutes"],
        "sample_size": defaults.CONSISTENCY["sample_size"],
        "max_window_hours": defaults.CONSISTENCY["max_window_hours"],
        "memory_mb": defaults.CONSISTENCY_FUNCTION["memory_size"],
    },
    "api": {
        "throttle_rate_per_second": defaults.API_THROTTLE["throttling_rate_limit"],
        "throttle_burst": defaults.API_THROTTLE["throttling_burst_limit"],
        "reserved_concurrency": defaults.READER_FUNCTION["reserved_concurrent_executions"],
        "deployment": defaults.API_DEPLOYMENT,
        # 0: no provisioned concurrency (cold starts allowed, nothing paid while idle).
        "provisioned_concurrency_min": 0,
        "provisioned_concurrency_max": 0,
        "provisioned_utilization_target": defaults.PROVISIONED_UTILIZATION_TARGET,
        # [{"name", "start", "end", "min_provisioned", "time_zone"}]: see README.
        "game_windows": [],
    },
    "monitoring": {
        "page_emails": [],
        "page_https_endpoints": [],
        # An existing SNS topic to page (an organisation's pager topic) instead of a new one.
        "page_topic_arn": "",
        # Where docs/runbooks.md is browsable (a repository URL); alarm texts link there.
        "runbook_base_url": "",
        "iterator_age_alarm_seconds": defaults.MONITORING["iterator_age_seconds"],
        "api_p99_latency_alarm_ms": defaults.MONITORING["api_p99_latency_ms"],
        "api_5xx_rate_alarm_percent": defaults.MONITORING["api_5xx_rate_percent"],
        "firehose_freshness_alarm_seconds": defaults.MONITORING["firehose_freshness_seconds"],
        "consistency_alarm_percent": defaults.MONITORING["consistency_percent"],
    },
    "log_retention_days": defaults.LOG_RETENTION_DAYS,
}

LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653}


def _int_range(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be an integer within {low}..{high}"
        return None

    return check


def _number_range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            return f"must be a number within {low}..{high}"
        return None

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _string_list(prefix: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item.startswith(prefix) for item in value
        ):
            return f"must be a list of strings starting with {prefix!r}"
        return None

    return check


def _optional_https_url(value: Any) -> str | None:
    if value == "" or (isinstance(value, str) and value.startswith("https://")):
        return None
    return "must be empty or an https:// URL"


_TOPIC_ARN = re.compile(r"arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w.-]+")


def _optional_topic_arn(value: Any) -> str | None:
    if value == "" or (isinstance(value, str) and _TOPIC_ARN.fullmatch(value)):
        return None
    return "must be empty or an SNS topic ARN"


_WINDOW_KEYS = {"name", "start", "end", "min_provisioned", "time_zone"}
# Application Auto Scaling cron: minute hour day-of-month month day-of-week year.
_CRON = re.compile(r"^\S+( \S+){5}$")


def _game_windows(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of windows"
    for window in value:
        if not isinstance(window, dict) or not {"name", "start", "end",
                                                 "min_provisioned"} <= set(window) <= _WINDOW_KEYS:
            return (f"must be a list of objects with name, start, end, min_provisioned and "
                    f"optionally time_zone, got {window!r}")
        if not re.fullmatch(r"[a-z0-9-]{1,40}", str(window["name"])):
            return f"window name {window['name']!r} must be lowercase letters, digits and '-'"
        for edge in ("start", "end"):
            if not isinstance(window[edge], str) or not _CRON.match(window[edge]):
                return (f"window '{window['name']}' {edge} must be a six-field cron expression "
                        f"(minute hour day-of-month month day-of-week year), got {window[edge]!r}")
        if _int_range(1, 1000)(window["min_provisioned"]) is not None:
            return f"window '{window['name']}' min_provisioned must be an integer within 1..1000"
    return None


def _emails(value: Any) -> str | None:
    if not isinstance(value, list) or not all(
        isinstance(item, str) and "@" in item.strip("@") for item in value
    ):
        return "must be a list of e-mail addresses"
    return None


def _log_retention(value: Any) -> str | None:
    if value not in LOG_RETENTION_DAYS:
        return f"must be one of CloudWatch's retention periods {sorted(LOG_RETENTION_DAYS)}"
    return None


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KMS_KEY_ARN = re.compile(r"arn:aws[\w-]*:kms:[\w-]+:\d{12}:key/[\w-]+")


def _optional_bucket_name(value: Any) -> str | None:
    if value == "" or (isinstance(value, str) and _BUCKET_NAME.fullmatch(value)):
        return None
    return "must be empty or an S3 bucket name"


def _optional_kms_key_arn(value: Any) -> str | None:
    if value == "" or (isinstance(value, str) and _KMS_KEY_ARN.fullmatch(value)):
        return None
    return "must be empty or a KMS key ARN"


# The limits are AWS's (its service quotas and API limits) or the kit's, where noted.
RULES: dict[str, Callable[[Any], str | None]] = {
    "stream.mode": _one_of("on_demand", "provisioned"),
    "stream.shard_count": _int_range(1, 500),
    "stream.on_demand_peak_shards": _int_range(1, 10_000),
    "stream.retention_hours": _int_range(24, 8760),
    "processor.batch_size": _int_range(1, 10_000),
    "processor.max_batching_window_seconds": _int_range(0, 300),
    "processor.parallelization_factor": _int_range(1, 10),
    # Bounded: an unbounded retry (-1) lets one poison batch block a shard for the record age.
    "processor.max_retry_attempts": _int_range(0, 10_000),
    "processor.max_record_age_seconds": _int_range(60, 604_800),
    "processor.memory_mb": _int_range(256, 10_240),
    "processor.timeout_seconds": _int_range(10, 900),
    "processor.reserved_concurrency": _int_range(1, 1000),
    "processor.deployment": _one_of(*defaults.DEPLOYMENT_CONFIGS),
    "audience.partials_peak_shards": _int_range(1, 10_000),
    "audience.batch_size": _int_range(1, 10_000),
    "audience.max_batching_window_seconds": _int_range(0, 300),
    "audience.parallelization_factor": _int_range(1, 10),
    "audience.max_retry_attempts": _int_range(0, 10_000),
    "audience.max_record_age_seconds": _int_range(60, 604_800),
    "audience.memory_mb": _int_range(256, 10_240),
    "audience.timeout_seconds": _int_range(10, 900),
    "audience.reserved_concurrency": _int_range(1, 1000),
    "audience.deployment": _one_of(*defaults.DEPLOYMENT_CONFIGS),
    "audience.runtime": _one_of("lambda", "flink"),
    "flink.code_bucket_name": _optional_bucket_name,
    "flink.code_key": _string,
    "flink.code_kms_key_arn": _optional_kms_key_arn,
    "flink.code_zip": _string,
    # Managed Flink's default quota is 64 KPUs per application; a KPU runs 1..8 subtasks.
    "flink.parallelism": _int_range(1, 512),
    "flink.parallelism_per_kpu": _int_range(1, 8),
    "flink.autoscaling": _boolean,
    "flink.checkpoint_interval_seconds": _int_range(1, 3600),
    "flink.key_buckets": _int_range(1, 4096),
    "flink.flush_interval_ms": _int_range(100, 60_000),
    "flink.flush_max_records": _int_range(1, 100_000),
    "flink.initial_position": _one_of("TRIM_HORIZON", "LATEST"),
    "online_store.deletion_protection": _boolean,
    "online_store.retain_on_delete": _boolean,
    "offline_store.retain_on_delete": _boolean,
    # Parquet conversion requires a buffer of at least 64 MiB.
    "offline_store.firehose_buffer_mb": _int_range(64, 128),
    "offline_store.firehose_buffer_seconds": _int_range(0, 900),
    "offline_store.raw_infrequent_access_days": _int_range(30, 3650),
    "offline_store.raw_glacier_days": _int_range(1, 3650),
    "offline_store.quarantine_expiry_days": _int_range(1, 3650),
    "offline_store.access_log_expiry_days": _int_range(1, 3650),
    "consistency.enabled": _boolean,
    "consistency.every_minutes": _int_range(5, 1440),
    "consistency.lookback_minutes": _int_range(5, 10_080),
    "consistency.settle_minutes": _int_range(0, 1440),
    "consistency.sample_size": _int_range(1, 10_000),
    "consistency.max_window_hours": _int_range(1, 24 * 90),
    # pyarrow and DuckDB need room besides the sample; Lambda's most.
    "consistency.memory_mb": _int_range(1024, 10_240),
    "api.throttle_rate_per_second": _int_range(1, 10_000),
    "api.throttle_burst": _int_range(1, 5_000),
    "api.reserved_concurrency": _int_range(1, 1000),
    "api.deployment": _one_of(*defaults.DEPLOYMENT_CONFIGS),
    "api.provisioned_concurrency_min": _int_range(0, 1000),
    "api.provisioned_concurrency_max": _int_range(0, 1000),
    "api.provisioned_utilization_target": _number_range(0.1, 0.9),
    "api.game_windows": _game_windows,
    "monitoring.page_emails": _emails,
    "monitoring.page_https_endpoints": _string_list("https://"),
    "monitoring.page_topic_arn": _optional_topic_arn,
    "monitoring.runbook_base_url": _optional_https_url,
    "monitoring.iterator_age_alarm_seconds": _int_range(1, 86_400),
    "monitoring.api_p99_latency_alarm_ms": _int_range(1, 29_000),
    "monitoring.api_5xx_rate_alarm_percent": _number_range(0.01, 100.0),
    "monitoring.firehose_freshness_alarm_seconds": _int_range(60, 86_400),
    "monitoring.consistency_alarm_percent": _number_range(1.0, 100.0),
    "log_retention_days": _log_retention,
}


@dataclass(frozen=True)
class Settings:
    """Validated settings of one environment; sections are plain mappings for the constructs."""

    env_name: str
    values: Mapping[str, Any]

    @property
    def is_production(self) -> bool:
        return self.env_name == "prod"

    @property
    def name_prefix(self) -> str:
        """What every stack, alarm and named resource of the environment starts with."""
        return f"Fastbreak-{self.env_name}"

    def section(self, name: str) -> Mapping[str, Any]:
        section = self.values[name]
        assert isinstance(section, Mapping)
        return section

    def get(self, dotted: str) -> Any:
        value: Any = self.values
        for part in dotted.split("."):
            value = value[part]
        return value


def load_settings(env_name: str, environments: Mapping[str, Any]) -> Settings:
    """Merge ``DEFAULTS`` with the environment's overrides and validate every value."""
    if env_name not in environments:
        known = ", ".join(sorted(environments)) or "none"
        raise SettingsError(f"unknown environment '{env_name}' (context 'env'); known: {known}")
    overrides = environments[env_name]
    if not isinstance(overrides, Mapping):
        raise SettingsError(f"environment '{env_name}' must be an object of settings")
    merged = copy.deepcopy(DEFAULTS)
    for key, value in overrides.items():
        if key not in merged:
            raise SettingsError(f"environment '{env_name}': unknown setting '{key}'")
        if isinstance(merged[key], dict):
            if not isinstance(value, Mapping):
                raise SettingsError(f"environment '{env_name}': setting '{key}' must be an object")
            for sub_key, sub_value in value.items():
                if sub_key not in merged[key]:
                    raise SettingsError(
                        f"environment '{env_name}': unknown setting '{key}.{sub_key}'"
                    )
                merged[key][sub_key] = sub_value
        else:
            merged[key] = value
    settings = Settings(env_name, merged)
    for dotted, rule in RULES.items():
        problem = rule(settings.get(dotted))
        if problem:
            raise SettingsError(
                f"environment '{env_name}': setting '{dotted}' {problem}, "
                f"got {settings.get(dotted)!r}"
            )
    _check_relations(settings)
    return settings


def _check_relations(settings: Settings) -> None:
    where = f"environment '{settings.env_name}'"
    offline = settings.section("offline_store")
    if offline["raw_glacier_days"] <= offline["raw_infrequent_access_days"]:
        raise SettingsError(
            f"{where}: setting 'offline_store.raw_glacier_days' must be after "
            "'offline_store.raw_infrequent_access_days'"
        )
    retention_seconds = settings.get("stream.retention_hours") * 3600
    for stage in ("processor", "audience"):  # the partials stream keeps the events' retention
        if settings.get(f"{stage}.max_record_age_seconds") > retention_seconds:
            raise SettingsError(
                f"{where}: setting '{stage}.max_record_age_seconds' exceeds the streams' "
                "retention ('stream.retention_hours'); records would expire before they age out"
            )
    if settings.get("api.throttle_burst") < settings.get("api.throttle_rate_per_second") // 10:
        raise SettingsError(f"{where}: setting 'api.throttle_burst' is too small for the rate")
    _check_processor_concurrency(settings, where)
    _check_audience_concurrency(settings, where)
    _check_flink_code(settings, where)
    _check_provisioned_concurrency(settings, where)


def check_deployable(settings: Settings) -> None:
    """What a deployable environment needs beyond valid values (checked at synth, not when
    tools such as the cost model read the settings): prod pages must reach someone."""
    if settings.is_production:
        _check_paging(settings, f"environment '{settings.env_name}'")
    code_zip = settings.get("flink.code_zip")
    if settings.get("audience.runtime") == "flink" and code_zip and not Path(code_zip).is_file():
        raise SettingsError(
            f"environment '{settings.env_name}': setting 'flink.code_zip' names {code_zip!r}, "
            "which is not a file (`make flink-package` builds it)")


def planned_shards(settings: Settings) -> tuple[int, str]:
    """The shard count the processor must keep up with, and the setting it comes from."""
    if settings.get("stream.mode") == "provisioned":
        return settings.get("stream.shard_count"), "stream.shard_count"
    return settings.get("stream.on_demand_peak_shards"), "stream.on_demand_peak_shards"


def _check_processor_concurrency(settings: Settings, where: str) -> None:
    # The mapping runs one batch per shard and parallelization slot at a time; fewer
    # concurrent executions than that leave shards waiting (throttles) and features stale.
    shards, setting = planned_shards(settings)
    factor = settings.get("processor.parallelization_factor")
    reserved = settings.get("processor.reserved_concurrency")
    if reserved < shards * factor:
        raise SettingsError(
            f"{where}: setting 'processor.reserved_concurrency' is {reserved}, below the "
            f"{shards * factor} concurrent batches the mapping runs ('{setting}' {shards} x "
            f"'processor.parallelization_factor' {factor}); raise it or plan fewer shards"
        )


def _check_audience_concurrency(settings: Settings, where: str) -> None:
    shards = settings.get("audience.partials_peak_shards")
    factor = settings.get("audience.parallelization_factor")
    reserved = settings.get("audience.reserved_concurrency")
    if reserved < shards * factor:
        raise SettingsError(
            f"{where}: setting 'audience.reserved_concurrency' is {reserved}, below the "
            f"{shards * factor} concurrent batches the audience stage's mapping runs "
            f"('audience.partials_peak_shards' {shards} x 'audience.parallelization_factor' "
            f"{factor}); raise it or plan fewer shards"
        )


def _check_flink_code(settings: Settings, where: str) -> None:
    """With 'audience.runtime' flink, the application zip comes from one place."""
    flink = settings.section("flink")
    in_s3 = bool(flink["code_bucket_name"] or flink["code_key"])
    if flink["code_kms_key_arn"] and not in_s3:
        raise SettingsError(f"{where}: setting 'flink.code_kms_key_arn' is the key of the "
                            "zip's S3 object: set 'flink.code_bucket_name' and 'flink.code_key'")
    if settings.get("audience.runtime") != "flink":
        return
    if in_s3 and not (flink["code_bucket_name"] and flink["code_key"]):
        raise SettingsError(f"{where}: settings 'flink.code_bucket_name' and 'flink.code_key' "
                            "name the application zip together; one of them is empty")
    if in_s3 == bool(flink["code_zip"]):
        which = ("both are set: keep one" if in_s3 else
                 "neither is set (docs/flink-runtime.md, Packaging)")
        raise SettingsError(
            f"{where}: setting 'audience.runtime' is flink, so the application zip is either in "
            "S3 ('flink.code_bucket_name' and 'flink.code_key') or a local file "
            f"('flink.code_zip'); {which}")


def remember_seconds(settings: Settings) -> int:
    """How long the audience stage remembers an applied partial: the longest stage 1 can
    still complete an emission (its retries last up to the mapping's record age; an emission
    whose writer is gone waits at most for the shard's next batch), and an hour."""
    age: int = settings.get("processor.max_record_age_seconds")
    return age + 3600


def cutover_delay_seconds(settings: Settings) -> int:
    """How long after the stream processor first meets a new feature slot it starts folding it
    live (``fastbreak.engine.cutover``): until then a release's canary still runs the previous
    version of either stage, which does not know the slot. The longer of the two stages'
    deployments, an invocation of the previous version still running when it ends (the longer
    timeout), and a quarter of an hour."""
    longest: int = max(_deployment_seconds(settings.get(f"{stage}.deployment"))
                       + settings.get(f"{stage}.timeout_seconds")
                       for stage in ("processor", "audience"))
    return longest + 15 * 60


def _deployment_seconds(config: str) -> int:
    """How long a CodeDeploy Lambda configuration of ``DEPLOYMENT_CONFIGS`` keeps two versions
    live: a canary's wait, or a linear one's ten steps."""
    words = config.split("_")
    if words[0] == "canary":
        return int(words[3]) * 60
    if words[0] == "linear":
        return 10 * int(words[4]) * 60
    return 0


def _check_provisioned_concurrency(settings: Settings, where: str) -> None:
    api = settings.section("api")
    low, high = api["provisioned_concurrency_min"], api["provisioned_concurrency_max"]
    if (low == 0) != (high == 0) or low > high:
        raise SettingsError(
            f"{where}: settings 'api.provisioned_concurrency_min' ({low}) and "
            f"'api.provisioned_concurrency_max' ({high}) must both be 0 (off) or satisfy "
            "1 <= min <= max"
        )
    if high > api["reserved_concurrency"]:
        raise SettingsError(
            f"{where}: setting 'api.provisioned_concurrency_max' ({high}) exceeds "
            f"'api.reserved_concurrency' ({api['reserved_concurrency']}); Lambda carves "
            "provisioned concurrency out of the reserved concurrency"
        )
    if api["game_windows"] and high == 0:
        raise SettingsError(
            f"{where}: setting 'api.game_windows' needs provisioned concurrency "
            "('api.provisioned_concurrency_min' and '_max')"
        )
    for window in api["game_windows"]:
        if not low <= window["min_provisioned"] <= high:
            raise SettingsError(
                f"{where}: setting 'api.game_windows' window '{window['name']}' "
                f"min_provisioned {window['min_provisioned']} is outside "
                f"'api.provisioned_concurrency_min'..'_max' ({low}..{high})"
            )


def _check_paging(settings: Settings, where: str) -> None:
    monitoring = settings.section("monitoring")
    if not (monitoring["page_emails"] or monitoring["page_https_endpoints"]
            or monitoring["page_topic_arn"]):
        raise SettingsError(
            f"{where}: setting 'monitoring.page_emails', 'monitoring.page_https_endpoints' or "
            "'monitoring.page_topic_arn' must name who is paged; a production alarm would "
            "reach nobody"
        )
    if not monitoring["runbook_base_url"]:
        raise SettingsError(
            f"{where}: setting 'monitoring.runbook_base_url' must be the https:// URL where "
            "docs/runbooks.md is browsable; a production page would link its runbook by a "
            "repository path no pager can open"
        )
