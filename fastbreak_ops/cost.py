"""``python -m fastbreak_ops.cost --events-per-second N --reads-per-second M``: what a
Fastbreak environment costs a month, per component, at a steady traffic.

Three inputs, each named in the output:

- **measured ratios** from ``make bench`` (``bench/results/latest.json``, benchmark
  ``cost_ratios``): DynamoDB write and read units per event (both stages) and per feature
  read, processor, audience stage and reader CPU GB-seconds, event, partials, Parquet and
  feature-log bytes;
- **the environment's settings** from ``cdk.json`` (``--env``): memory sizes, batching,
  stream retention, provisioned concurrency, log retention;
- **a dated price table** (``fastbreak_ops/prices/us-east-1.json``: each price with its
  source and date) and a few stated assumptions (DynamoDB round-trip time, log bytes per
  invocation, the online store's size), each an option.

A month is 730 hours, as AWS bills. Not included: data transfer out of AWS, the free tiers,
Athena queries, Glue, and requests made by people (consoles, redrives).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastbreak_ops.arguments import ArgumentParser, non_negative_float

PROG = "python -m fastbreak_ops.cost"
REPO = Path(__file__).resolve().parent.parent
BENCH_RESULTS = REPO / "bench" / "results" / "latest.json"
PRICES = Path(__file__).resolve().parent / "prices" / "us-east-1.json"
SECONDS_PER_MONTH = 730 * 3600
GB = 1024**3
LAMBDA_MB_PER_VCPU = 1769
BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem limit
# What this release deploys, counted in its synthesized templates (a test keeps these true).
KMS_KEYS = 9
ALARM_METRICS = 35  # metrics the alarms of one environment evaluate (metric math: each)
DASHBOARDS = 1
# Custom metrics the handlers publish (each a metric-month): the processor's 15 totals and its
# invalid-record reasons (14 with the partition-key one), the audience stage's 11 and its
# reasons (3 seen in practice), the reader's 8, the consistency check's 3 (its per-feature
# figures only for a feature that diverges), and Powertools' cold starts, per function.
CUSTOM_METRICS = 15 + 14 + 11 + 3 + 8 + 3 + 4
STREAM_CONSUMERS = 2  # the processor's mapping and Firehose, both shared throughput
PARTIALS_CONSUMERS = 1  # the audience stage's mapping
RATIOS = {  # the name in latest.json -> what it measures
    "cost_processor_gb_s_per_event": "processor CPU GB-seconds per event",
    "cost_audience_gb_s_per_event": "audience stage CPU GB-seconds per event",
    "cost_partials_kb_per_event": "partials stream billed KB per event",
    "cost_write_units_per_event": "DynamoDB write units per event",
    "cost_processor_read_units_per_event": "processor read units per event",
    "cost_feature_log_bytes_per_event": "feature-log bytes per event",
    "cost_kinesis_kb_per_event": "Kinesis billed KB per event",
    "cost_parquet_bytes_per_event": "Parquet bytes per event",
    "cost_read_units_per_read": "read units per feature read",
    "cost_reader_gb_s_per_read": "reader CPU GB-seconds per read",
}


class CostInputError(ValueError):
    """An input file is missing or lacks what the model needs; the message says which."""


@dataclass(frozen=True)
class Measured:
    """The ratios ``make bench`` measured (each a ``BenchResult``: value and baseline)."""

    values: Mapping[str, float]
    baselines: Mapping[str, float]

    @staticmethod
    def load(path: Path) -> Measured:
        if not path.exists():
            raise CostInputError(
                f"no benchmark results at {path}: run `make bench` (or `make bench "
                "ARGS='--only cost_ratios'`) first"
            )
        try:
            results = {result["name"]: result for result in json.loads(path.read_text())}
        except (ValueError, KeyError, TypeError) as error:
            raise CostInputError(f"{path} is not a benchmark results file ({error})") from None
        missing = sorted(set(RATIOS) - set(results))
        if missing:
            raise CostInputError(
                f"{path} lacks {', '.join(missing)}: run `make bench ARGS='--only cost_ratios'`"
            )
        return Measured({name: float(results[name]["value"]) for name in RATIOS},
                        {name: float(results[name]["baseline_value"]) for name in RATIOS})

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    @property
    def write_requests_per_event(self) -> float:
        return self.baselines["cost_write_units_per_event"]

    @property
    def event_json_bytes(self) -> float:
        return self.baselines["cost_parquet_bytes_per_event"]


@dataclass(frozen=True)
class Prices:
    values: Mapping[str, float]
    recorded: str

    @staticmethod
    def load(path: Path) -> Prices:
        try:
            document = json.loads(path.read_text())
            return Prices({name: float(entry["price"])
                           for name, entry in document["prices"].items()},
                          str(document["recorded"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CostInputError(f"cannot read the price table {path} ({error})") from None

    def __getitem__(self, name: str) -> float:
        if name not in self.values:
            raise CostInputError(f"the price table has no {name!r}")
        return self.values[name]


@dataclass(frozen=True)
class Traffic:
    events_per_second: float
    reads_per_second: float


@dataclass(frozen=True)
class Assumptions:
    dynamodb_round_trip_ms: float = 5.0  # DynamoDB's single-digit-millisecond reads/writes
    s3_put_ms: float = 30.0  # one feature-log object per processor invocation
    log_bytes_per_invocation: float = 1500.0  # START/END/REPORT lines and one EMF line
    online_store_gb: float = 10.0
    firehose_record_rounding_kb: float = 5.0  # the pricing page's rule for Direct PUT


@dataclass(frozen=True)
class Deployment:
    """What the environment's settings say about capacity."""

    processor_memory_mb: int
    audience_memory_mb: int
    audience_batching_window_s: float
    partials_shards: int
    reader_memory_mb: int
    batch_size: int
    batching_window_s: float
    planned_shards: int
    write_concurrency: int
    retention_hours: int
    log_retention_days: int
    provisioned_concurrency: int
    firehose_buffer_seconds: int

    @staticmethod
    def of_environment(env_name: str) -> Deployment:
        from localplatform.assembly import QUIET_JSII

        # constructs_lib loads aws-cdk-lib, whose jsii runtime would print its Node banner
        for name, value in QUIET_JSII.items():
            os.environ.setdefault(name, value)
        from constructs_lib.defaults import READER_FUNCTION
        from stacks.settings import SettingsError, load_settings, planned_shards

        context = json.loads((REPO / "cdk.json").read_text())["context"]
        try:
            settings = load_settings(env_name, context["fastbreak"]["environments"])
        except SettingsError as error:
            raise CostInputError(str(error)) from None
        return Deployment(
            processor_memory_mb=settings.get("processor.memory_mb"),
            audience_memory_mb=settings.get("audience.memory_mb"),
            audience_batching_window_s=settings.get("audience.max_batching_window_seconds"),
            partials_shards=settings.get("audience.partials_peak_shards"),
            reader_memory_mb=READER_FUNCTION["memory_size"],
            batch_size=settings.get("processor.batch_size"),
            batching_window_s=settings.get("processor.max_batching_window_seconds"),
            planned_shards=planned_shards(settings)[0],
            write_concurrency=16,  # the handler's WRITE_CONCURRENCY default
            retention_hours=settings.get("stream.retention_hours"),
            log_retention_days=settings.get("log_retention_days"),
            provisioned_concurrency=settings.get("api.provisioned_concurrency_min"),
            firehose_buffer_seconds=settings.get("offline_store.firehose_buffer_seconds"),
        )


@dataclass(frozen=True)
class Line:
    component: str
    usd: float
    basis: str


def estimate(traffic: Traffic, deployment: Deployment, measured: Measured, prices: Prices,
             assume: Assumptions) -> list[Line]:
    """Monthly cost per component."""
    events = traffic.events_per_second * SECONDS_PER_MONTH
    reads = traffic.reads_per_second * SECONDS_PER_MONTH
    lines: list[Line] = []

    # Kinesis: on-demand, every record rounded up to 1 KB, read by two consumers.
    ingest_gb = events * measured["cost_kinesis_kb_per_event"] / 1024**2
    extra_hours = max(0, deployment.retention_hours - 24)
    retained_gb = ingest_gb / 730 * extra_hours  # stored beyond 24 h, at any time
    kinesis = (730 * prices["kinesis_on_demand_stream_hour"]
               + ingest_gb * prices["kinesis_on_demand_ingest_gb"]
               + STREAM_CONSUMERS * ingest_gb * prices["kinesis_on_demand_retrieval_gb"]
               + retained_gb * prices["kinesis_on_demand_extended_retention_gb_month"])
    lines.append(Line("Kinesis", kinesis, f"{ingest_gb:,.0f} GB in, read by "
                      f"{STREAM_CONSUMERS} consumers, {deployment.retention_hours} h retention"))

    # The partials stream: stage 1's partials, on demand like the events stream, one consumer.
    partials_gb = events * measured["cost_partials_kb_per_event"] / 1024**2
    partials = (730 * prices["kinesis_on_demand_stream_hour"]
                + partials_gb * prices["kinesis_on_demand_ingest_gb"]
                + PARTIALS_CONSUMERS * partials_gb * prices["kinesis_on_demand_retrieval_gb"]
                + partials_gb / 730 * extra_hours
                * prices["kinesis_on_demand_extended_retention_gb_month"])
    lines.append(Line("Kinesis partials", partials,
                      f"{partials_gb:,.0f} GB of partials, read by the audience stage"))

    # Lambda, processor: one invocation per batch; CPU measured, DynamoDB waits assumed.
    shards = max(deployment.planned_shards, math.ceil(traffic.events_per_second / 1000))
    per_shard = traffic.events_per_second / shards
    batch = max(1.0, min(deployment.batch_size,
                         per_shard * max(deployment.batching_window_s, 0.1)))
    invocations = events / batch if events else 0.0
    writes = batch * measured.write_requests_per_event  # UpdateItem requests per batch
    wait_s = (assume.dynamodb_round_trip_ms * (math.ceil(writes / BATCH_GET_KEYS)
                                               + math.ceil(writes / deployment.write_concurrency))
              + assume.s3_put_ms) / 1000
    memory_gb = deployment.processor_memory_mb / 1024
    cpu_gb_s = events * _cpu_gb_s(measured["cost_processor_gb_s_per_event"],
                                  deployment.processor_memory_mb)
    processor_gb_s = cpu_gb_s + invocations * wait_s * memory_gb
    processor = (processor_gb_s * prices["lambda_arm_gb_second"]
                 + invocations / 1e6 * prices["lambda_requests_million"])
    lines.append(Line("Lambda processor", processor,
                      f"{invocations / 1e6:,.2f} M invocations of ~{batch:,.0f} records, "
                      f"{processor_gb_s:,.0f} GB-s at {deployment.processor_memory_mb} MB"))

    # Lambda, audience stage: one invocation per partials shard and batching window (at least);
    # CPU measured; two rounds of DynamoDB calls (read, write) per invocation assumed.
    windows = SECONDS_PER_MONTH / max(deployment.audience_batching_window_s, 0.1)
    audience_invocations = min(invocations, deployment.partials_shards * windows) if events else 0
    audience_gb = deployment.audience_memory_mb / 1024
    audience_gb_s = (events * _cpu_gb_s(measured["cost_audience_gb_s_per_event"],
                                        deployment.audience_memory_mb)
                     + audience_invocations * 2 * assume.dynamodb_round_trip_ms / 1000
                     * audience_gb)
    audience = (audience_gb_s * prices["lambda_arm_gb_second"]
                + audience_invocations / 1e6 * prices["lambda_requests_million"])
    lines.append(Line("Lambda audience stage", audience,
                      f"{audience_invocations / 1e6:,.2f} M invocations, {audience_gb_s:,.0f} "
                      f"GB-s at {deployment.audience_memory_mb} MB"))

    # Lambda, reader: CPU measured, one round of DynamoDB calls per read assumed.
    reader_gb = deployment.reader_memory_mb / 1024
    per_read_gb_s = (_cpu_gb_s(measured["cost_reader_gb_s_per_read"],
                               deployment.reader_memory_mb)
                     + assume.dynamodb_round_trip_ms / 1000 * reader_gb)
    reader_gb_s = reads * per_read_gb_s
    provisioned = deployment.provisioned_concurrency
    if provisioned:
        reader = (provisioned * reader_gb * SECONDS_PER_MONTH
                  * prices["lambda_arm_provisioned_gb_second"]
                  + reader_gb_s * prices["lambda_arm_provisioned_duration_gb_second"])
        provisioned_note = f", {provisioned} provisioned all month"
    else:
        reader = reader_gb_s * prices["lambda_arm_gb_second"]
        provisioned_note = ""
    reader += reads / 1e6 * prices["lambda_requests_million"]
    lines.append(Line("Lambda reader", reader, f"{reads / 1e6:,.1f} M invocations, "
                      f"{reader_gb_s:,.0f} GB-s at {deployment.reader_memory_mb} MB"
                      f"{provisioned_note}"))

    # DynamoDB on demand.
    write_units = events * measured["cost_write_units_per_event"]
    read_units = (events * measured["cost_processor_read_units_per_event"]
                  + reads * measured["cost_read_units_per_read"])
    dynamodb = (write_units / 1e6 * prices["dynamodb_write_request_units_million"]
                + read_units / 1e6 * prices["dynamodb_read_request_units_million"]
                + assume.online_store_gb * (prices["dynamodb_storage_gb_month"]
                                            + prices["dynamodb_pitr_gb_month"]))
    lines.append(Line("DynamoDB", dynamodb, f"{write_units / 1e6:,.0f} M WRU, "
                      f"{read_units / 1e6:,.0f} M RRU, {assume.online_store_gb:g} GB with PITR"))

    # Firehose: ingestion (each record rounded up), Parquet conversion, dynamic partitioning.
    json_bytes = measured.event_json_bytes
    rounding = assume.firehose_record_rounding_kb * 1024
    billed_gb = events * math.ceil(json_bytes / rounding) * rounding / GB
    processed_gb = events * json_bytes / GB
    objects = SECONDS_PER_MONTH / deployment.firehose_buffer_seconds  # one hour partition
    firehose = (billed_gb * prices["firehose_ingest_gb"]
                + processed_gb * (prices["firehose_format_conversion_gb"]
                                  + prices["firehose_dynamic_partitioning_gb"])
                + objects / 1000 * prices["firehose_dynamic_partitioning_objects_thousand"])
    lines.append(Line("Firehose", firehose, f"{billed_gb:,.0f} GB billed "
                      f"({processed_gb:,.0f} GB of events), {objects:,.0f} objects"))

    # S3: the month's raw Parquet and feature log, held one month in Standard, and the PUTs.
    stored_gb = events * (measured["cost_parquet_bytes_per_event"]
                          + measured["cost_feature_log_bytes_per_event"]) / GB
    puts = invocations + audience_invocations + objects  # a feature-log object per invocation
    s3 = stored_gb * prices["s3_standard_gb_month"] + puts / 1000 * prices["s3_put_thousand"]
    lines.append(Line("S3", s3, f"+{stored_gb:,.0f} GB a month (raw Parquet and feature "
                      f"log), {puts / 1e6:,.2f} M PUTs"))

    # API Gateway REST.
    api = reads / 1e6 * prices["api_gateway_rest_requests_million"]
    lines.append(Line("API Gateway", api, f"{reads / 1e6:,.1f} M requests"))

    # CloudWatch: metrics, alarms, the dashboard, and the functions' logs.
    log_gb = (invocations + audience_invocations + reads) * assume.log_bytes_per_invocation / GB
    stored_log_gb = log_gb * min(deployment.log_retention_days, 3653) / 30.4
    cloudwatch = (CUSTOM_METRICS * prices["cloudwatch_custom_metric_month"]
                  + ALARM_METRICS * prices["cloudwatch_alarm_metric_month"]
                  + DASHBOARDS * prices["cloudwatch_dashboard_month"]
                  + log_gb * prices["cloudwatch_logs_ingest_gb"]
                  + stored_log_gb * prices["cloudwatch_logs_storage_gb_month"])
    lines.append(Line("CloudWatch", cloudwatch, f"{CUSTOM_METRICS} metrics, {ALARM_METRICS} "
                      f"alarm metrics, {log_gb:,.1f} GB of logs ({stored_log_gb:,.0f} GB kept)"))

    lines.append(Line("KMS", KMS_KEYS * prices["kms_key_month"], f"{KMS_KEYS} keys"))
    return lines


def _cpu_gb_s(measured_gb_s: float, memory_mb: int) -> float:
    """The measured CPU GB-seconds hold below one vCPU; above it memory costs more."""
    return measured_gb_s * max(1.0, memory_mb / LAMBDA_MB_PER_VCPU)


# ---- the command -------------------------------------------------------------------------------
def parser(prog: str = PROG) -> ArgumentParser:
    root = ArgumentParser(
        prog=prog,
        description="Monthly cost of a Fastbreak environment per component, from the ratios "
        "`make bench` measures, the environment's settings and a dated us-east-1 price table.",
    )
    root.add_argument("--events-per-second", type=non_negative_float, required=True,
                      help="events producers write, on average")
    root.add_argument("--reads-per-second", type=non_negative_float, required=True,
                      help="feature API requests, on average (one entity each)")
    root.add_argument("--env", default="dev", help="the cdk.json environment (default dev)")
    root.add_argument("--bench-results", type=Path, default=BENCH_RESULTS,
                      help="benchmark results with the cost ratios (default: the last make bench)")
    root.add_argument("--prices", type=Path, default=PRICES,
                      help="the price table (default: the repository's us-east-1 table)")
    defaults = Assumptions()
    root.add_argument("--dynamodb-ms", type=non_negative_float,
                      default=defaults.dynamodb_round_trip_ms,
                      help=f"one DynamoDB round trip (assumed {defaults.dynamodb_round_trip_ms:g})")
    root.add_argument("--online-store-gb", type=non_negative_float,
                      default=defaults.online_store_gb,
                      help=f"items stored (assumed {defaults.online_store_gb:g})")
    root.add_argument("--log-bytes", type=non_negative_float,
                      default=defaults.log_bytes_per_invocation,
                      help="log bytes per invocation "
                      f"(assumed {defaults.log_bytes_per_invocation:g})")
    root.add_argument("--json", action="store_true", help="print the estimate as JSON")
    return root


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = (parser() if prog is None else parser(prog)).parse_args(argv)
    try:
        measured = Measured.load(args.bench_results)
        prices = Prices.load(args.prices)
        deployment = Deployment.of_environment(args.env)
    except CostInputError as error:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        return 2
    assume = Assumptions(dynamodb_round_trip_ms=args.dynamodb_ms,
                         online_store_gb=args.online_store_gb,
                         log_bytes_per_invocation=args.log_bytes)
    traffic = Traffic(args.events_per_second, args.reads_per_second)
    lines = estimate(traffic, deployment, measured, prices, assume)
    total = sum(line.usd for line in lines)
    if args.json:
        print(json.dumps({
            "events_per_second": traffic.events_per_second,
            "reads_per_second": traffic.reads_per_second, "env": args.env,
            "prices_recorded": prices.recorded,
            "components": [{"component": line.component, "usd_per_month": round(line.usd, 2),
                            "basis": line.basis} for line in lines],
            "total_usd_per_month": round(total, 2),
        }, indent=2))
        return 0
    _print(lines, total, traffic, args, measured, prices)
    return 0


def _print(lines: list[Line], total: float, traffic: Traffic, args: Any, measured: Measured,
           prices: Prices) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fastbreak '{args.env}' at {traffic.events_per_second:,g} events/s "
                  f"and {traffic.reads_per_second:,g} reads/s: USD per month (us-east-1)")
    table.add_column("component")
    table.add_column("USD / month", justify="right")
    table.add_column("basis")
    for line in lines:
        table.add_row(line.component, f"{line.usd:,.2f}", line.basis)
    table.add_row("total", f"{total:,.2f}", "")
    console = Console(width=120)
    console.print(table)
    console.print(f"prices: {_shown(args.prices)} (recorded {prices.recorded}); measured "
                  f"ratios: {_shown(args.bench_results)}; assumed: DynamoDB round trip "
                  f"{args.dynamodb_ms:g} ms, "
                  f"{args.online_store_gb:g} GB stored, {args.log_bytes:g} log bytes per "
                  "invocation")


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


if __name__ == "__main__":
    raise SystemExit(main())
