"""The kit's defaults, in one place: what each construct builds when its user says nothing.

Constructs merge these with their user's props and then with what they enforce
(``constructs_lib.props``); ``stacks/settings.py`` takes its per-environment defaults from
here too, so a default changes in this file and nowhere else. Each value says why it is what
it is; the AWS limits behind them are in the comments of ``stacks/settings.py``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_glue as glue
from aws_cdk import aws_lambda as lambda_

# ---- logs -------------------------------------------------------------------------------------
LOG_RETENTION_DAYS = 30

# ---- the events stream ------------------------------------------------------------------------
STREAM: MappingProxyType[str, Any] = MappingProxyType({
    "retention_period": Duration.hours(24),  # how long a failed batch can still be replayed
})
# An on-demand stream starts with 4 shards and splits them as its traffic grows; the
# processor's reserved concurrency is checked against the shard count planned for.
ON_DEMAND_INITIAL_SHARDS = 4

# ---- the stream processor ---------------------------------------------------------------------
PROCESSOR_FUNCTION: MappingProxyType[str, Any] = MappingProxyType({
    # Lambda's CPU share scales with memory, and decoding plus aggregating a 1,000-record
    # batch is CPU-bound: 1,024 MB is 0.58 of a vCPU.
    "memory_size": 1024,
    # A full batch with DynamoDB retries and backoff, far below the record age limit.
    "timeout": Duration.seconds(60),
    # At least shards x parallelization factor (checked at synth by the stacks).
    "reserved_concurrent_executions": 50,
})
PROCESSOR_EVENT_SOURCE: MappingProxyType[str, Any] = MappingProxyType({
    "starting_position": lambda_.StartingPosition.TRIM_HORIZON,
    "batch_size": 1000,
    "max_batching_window": Duration.seconds(1),  # latency vs. invocations
    "parallelization_factor": 1,  # per-shard order; >1 keeps order per partition key only
    "retry_attempts": 10,  # bounded: a poison batch cannot block its shard
    "max_record_age": Duration.hours(6),
})
# SQS keeps a message at most 14 days: the longest an on-call engineer has to redrive it.
ON_FAILURE_QUEUE_RETENTION = Duration.days(14)
# A shorter canary than the API's: a bad processor makes its shards retry and fall behind,
# and the mapping's own invocations reach the new version within the first minute.
PROCESSOR_DEPLOYMENT = "canary_10_percent_5_minutes"

# ---- the audience stage (stage 2) -------------------------------------------------------------
AUDIENCE_FUNCTION: MappingProxyType[str, Any] = MappingProxyType({
    # Merging partials is lighter than decoding and validating events: a batch of 1,000
    # partials is a few thousand state merges.
    "memory_size": 512,
    "timeout": Duration.seconds(60),
    # At least the partials stream's shards x the audience parallelization factor (checked).
    "reserved_concurrent_executions": 20,
})
AUDIENCE_EVENT_SOURCE: MappingProxyType[str, Any] = MappingProxyType({
    "starting_position": lambda_.StartingPosition.TRIM_HORIZON,
    # A hot game is one partition key of the partials stream: one record per stage-1 batch
    # that saw it. Larger batches merge more of them into one write per item.
    "batch_size": 1000,
    "max_batching_window": Duration.seconds(1),
    # Items are keyed by the partials stream's partition key (the entity): any factor keeps one
    # writer per item; 1 keeps the fewest concurrent writers of the stage's dedup memory.
    "parallelization_factor": 1,
    "retry_attempts": 10,
    "max_record_age": Duration.hours(6),
})
AUDIENCE_DEPLOYMENT = PROCESSOR_DEPLOYMENT
# An on-demand partials stream starts with 4 shards, like the events stream.
PARTIALS_INITIAL_SHARDS = ON_DEMAND_INITIAL_SHARDS

# ---- the feature API --------------------------------------------------------------------------
READER_FUNCTION: MappingProxyType[str, Any] = MappingProxyType({
    "memory_size": 512,  # reads are I/O-bound; enough CPU to merge 100 entities' tiles
    "timeout": Duration.seconds(10),
    "reserved_concurrent_executions": 50,
})
API_THROTTLE: MappingProxyType[str, Any] = MappingProxyType({
    "throttling_rate_limit": 500,
    "throttling_burst_limit": 1000,
})
# Ten minutes at 10 %: enough requests for a 5xx rate of the new version to show.
API_DEPLOYMENT = "canary_10_percent_10_minutes"
# Application Auto Scaling keeps provisioned concurrency near this share in use, leaving
# headroom for a burst while a scale-out (a minute or two) catches up.
PROVISIONED_UTILIZATION_TARGET = 0.7

# ---- the training-set job (AWS Glue) -----------------------------------------------------------
TRAINING_SET_JOB: MappingProxyType[str, Any] = MappingProxyType({
    # G.1X: 4 vCPUs and 16 GB per worker; the per-entity fold holds one entity's events at a
    # time. Two workers is Glue's minimum; raise number_of_workers for millions of spine rows.
    "worker_type": glue.WorkerType.G_1X,
    "number_of_workers": 2,
    # A run that passes this is a mistake (a spine of every row of the year), not a workload.
    "timeout": Duration.hours(2),
    # A failed run writes nothing: retrying bad input would fail again and bill again.
    "max_retries": 0,
    "max_concurrent_runs": 2,
    # Runs beyond max_concurrent_runs wait in Glue's queue instead of failing.
    "job_run_queuing_enabled": True,
    "description": "Fastbreak: point-in-time training sets from the raw events table (Spark)",
})

# ---- the consistency check -----------------------------------------------------------------------
CONSISTENCY_FUNCTION: MappingProxyType[str, Any] = MappingProxyType({
    # DuckDB reads the raw partitions the sample's windows need (a week, for a 7-day window)
    # and the builder recomputes each sampled value: 3,008 MB is 1.7 vCPUs.
    "memory_size": 3008,
    "timeout": Duration.minutes(15),  # the most Lambda allows
})
CONSISTENCY = MappingProxyType({
    "every_minutes": 60,
    "lookback_minutes": 60,  # the entities last written in the last hour...
    # ... up to 20 minutes ago: their events are in the raw table (Firehose delivers within
    # 15 minutes) and later ones had time to be applied
    "settle_minutes": 20,
    "sample_size": 100,  # entities per group
    # Features of windows up to a day: each run reads a day of the raw table, not a week.
    "max_window_hours": 24,
})

# ---- monitoring thresholds ----------------------------------------------------------------------
MONITORING: MappingProxyType[str, Any] = MappingProxyType({
    "iterator_age_seconds": 60,  # feature staleness that pages
    "api_p99_latency_ms": 250,  # the budget a ranking request leaves for features
    "api_5xx_rate_percent": 1.0,
    "firehose_freshness_seconds": 900,
    # An exactly-once pipeline matches every sampled value; one value in a hundred off, in any
    # feature, is an event applied twice or lost, or a processor behind by over 5 minutes.
    "consistency_percent": 99.0,
})

# CodeDeploy's predefined Lambda configurations, by the name cdk.json uses for them.
DEPLOYMENT_CONFIGS: MappingProxyType[str, codedeploy.ILambdaDeploymentConfig] = MappingProxyType({
    "all_at_once": codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE,
    "canary_10_percent_5_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "canary_10_percent_10_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_10_MINUTES,
    "canary_10_percent_15_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_15_MINUTES,
    "canary_10_percent_30_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_30_MINUTES,
    "linear_10_percent_every_1_minute":
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "linear_10_percent_every_2_minutes":
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_2_MINUTES,
    "linear_10_percent_every_3_minutes":
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_3_MINUTES,
    "linear_10_percent_every_10_minutes":
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_10_MINUTES,
})


def seconds(duration: Duration) -> int:
    """A default duration as the whole seconds cdk.json states it in."""
    return int(duration.to_seconds())


# ---- the audience stage on Managed Service for Apache Flink ------------------------------------
FLINK_APPLICATION: MappingProxyType[str, Any] = MappingProxyType({
    # Two subtasks, one KPU each (1 vCPU, 4 GB): the merge is Python, CPU-bound per record.
    "parallelism": 2,
    "parallelism_per_kpu": 1,
    # Managed Flink scales parallelism up on CPU above 75% and down below 10% (it restarts
    # the job from a snapshot to do so).
    "auto_scaling_enabled": True,
    "checkpointing_enabled": True,
    # What a restart re-delivers at most (the merge skips what was applied); a flush is at
    # most one flush interval behind.
    "checkpoint_interval": Duration.minutes(1),
    "min_pause_between_checkpoints": Duration.seconds(5),
    "snapshots_enabled": True,  # a snapshot on every stop and update: no re-read on deploys
})
# The job's own settings (fastbreak_flink.job.JobSettings), passed as runtime properties.
FLINK_JOB: MappingProxyType[str, Any] = MappingProxyType({
    # Keys of the merge: a bucket of entities each. Every flush of a bucket writes each
    # partials shard's dedup item once, so buckets x flushes per second is the rate of those
    # writes; more buckets spread the merge over more subtasks.
    "key_buckets": 8,
    "flush_interval_ms": 1000,  # the Lambda stage's default batching window
    "flush_max_records": 2000,
    "initial_position": "TRIM_HORIZON",
})
