"""``make demo``: the live-games workload through the whole local platform, with a summary.

Progress shows events sent and processed per second, freshness and alarm states (a live view
on a terminal, a line every few seconds otherwise); pages are printed as they arrive. The
summary (also written as JSON with ``--summary-json``, see docs/local-platform.md) counts what
went in and where it went, and reads sample feature vectors back through the local API.
``serve`` starts the platform alone and keeps it up.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table

from fastbreak_producer import Producer, ProducerConfig
from fastbreak_producer.driver import drive
from fastbreak_producer.simulator import Emission, Kind, LiveGameSimulator, SimulationConfig
from localplatform import offline_figures
from localplatform.fault_drill import FaultDrill
from localplatform.freshness import FreshnessTracker
from localplatform.mapping_emulator import MappingHooks
from localplatform.metrics import MetricKey, percentile
from localplatform.offline_export import EXPORTED_PREFIXES, export_offline_store
from localplatform.platform import LocalPlatform, PlatformOptions

# Local pacing (docs/local-platform.md): 60 s alarm periods last 10 s, Firehose buffers 10 s,
# and a failed batch is retried after 0.5 s doubling up to 5 s.
ALARM_TIME_SCALE = 6.0
FIREHOSE_BUFFER_S = 10.0
RETRY_BACKOFF_S, RETRY_BACKOFF_CAP_S = 0.5, 5.0
DRILL_TIME_LIMIT_S = 300.0
REFRESH_S = 0.5
PLAIN_PROGRESS_EVERY_S = 5.0  # when the output is not a terminal: a log line, not a live view


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 60.0
    rate: float = 20.0
    games: int = 4
    seed: int = 7
    aggregate: bool = False
    serve: bool = False
    fault_drill: bool = False
    summary_json: Path | None = None
    workdir: Path | None = None
    # Where the offline store's files are copied after the run (moto's S3 vanishes with it).
    offline_output: Path | None = None
    env_file: Path | None = None


class _Progress:
    """What the progress view and the summary count while the run goes on."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.pages: list[dict[str, Any]] = []
        self.samples: list[tuple[float, int, int]] = []  # (elapsed, sent, processed)

    def rates(self, sent: int, processed: int) -> tuple[float, float]:
        elapsed = time.monotonic() - self.started
        self.samples.append((elapsed, sent, processed))
        past = [s for s in self.samples if s[0] <= elapsed - 2.0] or self.samples[:1]
        then, sent_then, processed_then = past[-1]
        span = max(elapsed - then, 1e-9)
        return (sent - sent_then) / span, (processed - processed_then) / span


def run_demo(options: DemoOptions, console: Console) -> dict[str, Any]:
    tracker = FreshnessTracker()
    platform_options = PlatformOptions(
        workdir=options.workdir, alarm_time_scale=ALARM_TIME_SCALE,
        firehose_buffer_seconds=FIREHOSE_BUFFER_S, retry_backoff_s=RETRY_BACKOFF_S,
        retry_backoff_cap_s=RETRY_BACKOFF_CAP_S,
        mapping_hooks=MappingHooks(on_success=tracker.on_visible), env_file=options.env_file,
    )
    platform = LocalPlatform(platform_options)
    try:
        _start(platform, console, options.env_file)
        started_ms = time.time_ns() // 1_000_000
        summary = _run(platform, options, tracker, console)
        if options.offline_output is not None:
            summary["offline_files"] = _keep_offline_files(platform, options.offline_output)
            summary.update(_offline_figures(platform, options.offline_output, started_ms,
                                            console))
        if options.summary_json is not None:
            options.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
        console.print(_summary_table(summary))
        if "offline_files" in summary:
            console.print(_offline_files_line(summary["offline_files"]))
            console.print(_training_set_line(summary["training_set"]), soft_wrap=True)
            console.print(_consistency_line(summary["consistency"]), soft_wrap=True)
        if options.serve:
            _wait_for_ctrl_c(platform, console)
        return summary
    finally:
        platform.stop()


def serve(console: Console, env_file: Path | None, workdir: Path | None = None) -> None:
    """The platform alone, until Ctrl-C."""
    platform = LocalPlatform(PlatformOptions(workdir=workdir, env_file=env_file))
    try:
        try:
            _start(platform, console, env_file)
        except KeyboardInterrupt:
            if platform.alarms is None:  # still starting: an interrupted start
                raise
            # Up (its env file written) and showing its names: the usual Ctrl-C, a bit early.
            console.print("stopping")
            return
        _wait_for_ctrl_c(platform, console)
    finally:
        platform.stop()


def _start(platform: LocalPlatform, console: Console, env_file: Path | None) -> None:
    with _status(console, "synthesizing the CDK app and deploying it into the embedded AWS"):
        started = time.monotonic()
        platform.start()
    console.print(f"[green]platform up[/] in {time.monotonic() - started:.1f}s: "
                  f"{_deployment_line(platform)}", soft_wrap=True)
    # Names and commands are never wrapped or cut: they are there to be copied.
    for line in _names_lines(platform):
        console.print(line, soft_wrap=True, highlight=False)
    if env_file is not None:
        console.print(f"exported in {env_file} while the platform runs: "
                      f"[bold]source {env_file}[/]", soft_wrap=True, highlight=False)


def _run(platform: LocalPlatform, options: DemoOptions, tracker: FreshnessTracker,
         console: Console) -> dict[str, Any]:
    producer = Producer(platform.client("kinesis"), platform.stream_name,
                        ProducerConfig(aggregate=options.aggregate))
    simulator = LiveGameSimulator(
        SimulationConfig(rate=options.rate, games=options.games, seed=options.seed)
    )
    drill = FaultDrill(platform) if options.fault_drill else None
    progress = _Progress()
    stop = threading.Event()

    def on_emission(emission: Emission) -> None:
        if emission.event is None:
            return
        if emission.kind is Kind.EVENT:
            tracker.track(emission.event["event_id"])
        elif emission.kind is Kind.DUPLICATE:
            tracker.forget(emission.event["event_id"])

    limit = DRILL_TIME_LIMIT_S if drill else options.duration_s
    sender = threading.Thread(
        target=drive, args=(simulator, producer, limit),
        kwargs={"on_emission": on_emission, "should_stop": stop.is_set}, daemon=True,
    )
    sender.start()
    mapping = platform.events_mapping
    last_line = 0.0
    with _live(console) as live:
        while sender.is_alive():
            elapsed = time.monotonic() - progress.started
            pages = platform.drain_pages()
            for page in pages:
                progress.pages.append(page)
                if _worth_showing(page):
                    console.print(_page_line(page, elapsed))
            if drill is not None:
                drill.step(pages)
            if elapsed >= options.duration_s and (drill is None or drill.done):
                stop.set()
            moment = _moment(platform, producer, mapping.stats.records_succeeded, tracker,
                             progress, drill)
            if live is not None:
                live.update(_progress_view(moment))
            elif elapsed - last_line >= PLAIN_PROGRESS_EVERY_S:
                last_line = elapsed
                console.print(_progress_line(moment), soft_wrap=True)
            time.sleep(REFRESH_S)
    sender.join()
    with _status(console, "waiting for the pipeline to catch up"):
        caught_up = platform.wait_until_processed(timeout=120)
        platform.drain_deliveries(timeout=60)
        time.sleep(1.5)  # one more alarm evaluation over the final metrics
        for page in platform.drain_pages():
            progress.pages.append(page)
            if _worth_showing(page):
                console.print(_page_line(page, time.monotonic() - progress.started))
    return _summary(platform, producer, simulator, tracker, progress, drill, caught_up)


# ---- views ---------------------------------------------------------------------------------
# Rich's live displays replace sys.stdout by default, and the handlers' EMF lines printed while
# one runs would then land on the terminal instead of the function's log (output_capture).
@contextmanager
def _live(console: Console) -> Iterator[Live | None]:
    """A live view on a terminal; None (print lines instead) when the output is a file or pipe."""
    if not console.is_terminal:
        yield None
        return
    with Live(console=console, refresh_per_second=4, transient=True, redirect_stdout=False,
              redirect_stderr=False) as live:
        yield live


@contextmanager
def _status(console: Console, text: str) -> Iterator[None]:
    with _live(console) as live:
        if live is None:
            console.print(f"{text}...")
        else:
            live.update(Spinner("dots", text))
        yield


def _names_lines(platform: LocalPlatform) -> list[str]:
    labels = {
        "AWS_ENDPOINT_URL": "endpoint (every AWS service)", "AWS_REGION": "region",
        "FASTBREAK_STREAM": "events stream", "FASTBREAK_ONLINE_TABLE": "online store table",
        "FASTBREAK_OFFLINE_BUCKET": "offline store bucket", "FASTBREAK_API_URL": "feature API",
    }
    names = platform.environment()
    return [f"  {label:30} {names[name]}" for name, label in labels.items() if name in names]


def _deployment_line(platform: LocalPlatform) -> str:
    assert platform.deployment is not None
    stacks = ", ".join(stack.name for stack in platform.deployment.stacks)
    emulated = sum(platform.deployment.skipped_types.values())
    return f"{stacks}; {emulated} resources moto skips handled locally; API at {_api_url(platform)}"


def _api_url(platform: LocalPlatform) -> str:
    return platform.api.url if platform.api is not None else "(no API in the templates)"


@dataclass(frozen=True)
class _Moment:
    elapsed_s: float
    sent: int
    sent_rate: float
    processed: int
    processed_rate: float
    partials_merged: int
    quarantined: float
    freshness: tuple[float | None, float | None]
    alarms: str


def _moment(platform: LocalPlatform, producer: Producer, processed: int,
            tracker: FreshnessTracker, progress: _Progress, drill: FaultDrill | None) -> _Moment:
    sent = producer.report.events_accepted
    sent_rate, processed_rate = progress.rates(sent, processed)
    assert platform.alarms is not None
    states = platform.alarms.states()
    firing = [name for name, state in states.items() if state == "ALARM"]
    alarms = (f"alarms: {len(states) - len(firing)} OK, "
              + (f"[red]{len(firing)} ALARM: {', '.join(_short(n) for n in firing)}[/]"
                 if firing else "0 ALARM")
              + f"   pages received: {len(progress.pages)}"
              + (f"   drill: [bold]{drill.phase.value}[/]" if drill else ""))
    return _Moment(
        time.monotonic() - progress.started, sent, sent_rate, processed, processed_rate,
        platform.audience_mapping.stats.records_succeeded,
        platform.metrics.total("Fastbreak", "RecordsInvalid", _service()),
        tracker.percentiles(since=max(0, len(tracker.lags_ms) - 2000)), alarms,
    )


def _progress_view(moment: _Moment) -> RenderableType:
    table = Table(show_header=True, header_style="bold", box=None)
    for column in ("elapsed", "sent", "sent/s", "processed", "processed/s", "partials merged",
                   "quarantined", "freshness p50 / p99"):
        table.add_column(column, justify="right")
    p50, p99 = moment.freshness
    table.add_row(
        f"{moment.elapsed_s:5.0f}s", f"{moment.sent:,}", f"{moment.sent_rate:,.0f}",
        f"{moment.processed:,}", f"{moment.processed_rate:,.0f}", f"{moment.partials_merged:,}",
        f"{moment.quarantined:,.0f}",
        f"{_ms(p50)} / {_ms(p99)}",
    )
    return Group(table, moment.alarms)


def _progress_line(moment: _Moment) -> str:
    p50, p99 = moment.freshness
    return (f"{moment.elapsed_s:5.0f}s  sent {moment.sent:,} ({moment.sent_rate:,.0f}/s)  "
            f"processed {moment.processed:,} ({moment.processed_rate:,.0f}/s)  "
            f"partials merged {moment.partials_merged:,}  "
            f"quarantined {moment.quarantined:,.0f}  freshness p50 {_ms(p50)} / p99 {_ms(p99)}"
            f"  {moment.alarms}")


def _worth_showing(page: dict[str, Any]) -> bool:
    """ALARM pages and the all-clear after them; CloudWatch also notifies each alarm's first
    INSUFFICIENT_DATA -> OK at start, which the summary counts but the terminal skips."""
    return page.get("NewStateValue") == "ALARM" or page.get("OldStateValue") == "ALARM"


def _page_line(page: dict[str, Any], elapsed: float) -> str:
    colour = "red" if page.get("NewStateValue") == "ALARM" else "green"
    return (f"[{colour}]{elapsed:5.0f}s PAGE {page.get('NewStateValue')}: "
            f"{page.get('AlarmName')}[/] ({page.get('OldStateValue')} -> "
            f"{page.get('NewStateValue')}) {page.get('NewStateReason', '')}")


def _pages_line(pages: list[dict[str, Any]]) -> str:
    alarms = sum(page["state"] == "ALARM" for page in pages)
    first_ok = sum(page["state"] == "OK" and page["from"] == "INSUFFICIENT_DATA" for page in pages)
    line = f"{len(pages)}: {alarms} ALARM, {len(pages) - alarms - first_ok} back to OK"
    return line + (f", {first_ok} first OK at start" if first_ok else "")


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Fastbreak local demo: summary", show_header=False)
    freshness = summary["freshness_ms"]
    offline = summary["offline"]
    rows = [
        ("events emitted", ", ".join(f"{k} {v}" for k, v in summary["emitted"].items())),
        ("events in (accepted by Kinesis)", f"{summary['events_in']:,}"),
        ("records processed", f"{summary['records_processed']:,}"),
        ("quarantined (invalid)", f"{summary['quarantined']:,}"),
        ("late / duplicates dropped", f"{summary['late_events']:,} / "
                                      f"{summary['duplicate_events']:,}"),
        ("stage 1: user items written, partials emitted",
         f"{summary['features_written']:,}, {summary['partials_emitted']:,}"),
        ("stage 2: partials merged, audience items written",
         f"{summary['audience']['partials_merged']:,}, "
         f"{summary['audience']['items_written']:,} (stage-2 lag p99 "
         f"{_ms(summary['audience']['lag_p99_ms'])})"),
        ("freshness p50 / p99", f"{_ms(freshness['p50'])} / {_ms(freshness['p99'])} "
                                f"({freshness['measured']:,} events)"),
        ("offline files", f"{offline['raw_parquet_files']} Parquet ({offline['raw_records']:,} "
                          f"events), {offline['feature_log_objects']} feature log, "
                          f"{offline['quarantine_objects']} quarantine"),
        ("on-failure queues", f"{summary['on_failure_messages']} messages (stage 1), "
                              f"{summary['audience']['on_failure_messages']} (stage 2)"),
        ("alarms fired", ", ".join(_short(a) for a in summary["alarms_fired"]) or "none"),
        ("pages received", _pages_line(summary["pages"])),
    ]
    for name, vector in summary["sample_features"].items():
        rows.append((f"features of {name}", _vector_line(vector)))
    for row in rows:
        table.add_row(*row)
    return table


def _vector_line(vector: Any) -> str:
    if not isinstance(vector, dict):
        return str(vector)
    features = vector.get("features", {})
    shown = [f"{name.split('.', 1)[-1]}={_value_text(value['value'])}"
             for name, value in features.items() if isinstance(value, dict)]
    return ", ".join(shown[:6]) or "(no features yet)"


def _value_text(value: Any) -> str:
    """Floats to 6 significant digits (the JSON summary keeps them whole)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(item) for item in value) + "]"
    return str(value)


# ---- summary -------------------------------------------------------------------------------
def _summary(platform: LocalPlatform, producer: Producer, simulator: LiveGameSimulator,
             tracker: FreshnessTracker, progress: _Progress, drill: FaultDrill | None,
             caught_up: bool) -> dict[str, Any]:
    mapping = platform.events_mapping
    p50, p99 = tracker.percentiles()
    total = platform.metrics.total
    elapsed = time.monotonic() - progress.started
    summary: dict[str, Any] = {
        "duration_s": round(elapsed, 1),
        "emitted": dict(simulator.stats.emitted),
        "scoring_plays": simulator.stats.scoring_plays,
        "events_in": producer.report.events_accepted,
        "producer_failed": len(producer.report.failed),
        "records_processed": mapping.stats.records_succeeded,
        "records_discarded": mapping.stats.records_discarded,
        "caught_up": caught_up,
        "quarantined": int(total("Fastbreak", "RecordsInvalid", _service())),
        "late_events": int(total("Fastbreak", "LateEvents", _service())),
        "duplicate_events": int(total("Fastbreak", "DuplicateEvents", _service())),
        "features_written": int(total("Fastbreak", "ItemWrites", _service())),
        "partials_emitted": int(total("Fastbreak", "PartialsEmitted", _service())),
        "audience": {
            "partials_merged": platform.audience_mapping.stats.records_succeeded,
            "items_written": int(total("Fastbreak", "ItemWrites", _audience())),
            "lag_p99_ms": _p99(platform, "FreshnessLagMs", _audience()),
            "on_failure_messages": _queue_depth(platform,
                                                platform.audience_on_failure_queue_url),
        },
        "freshness_ms": {"p50": p50, "p99": p99, "measured": len(tracker.lags_ms)},
        "offline": _offline(platform),
        "on_failure_messages": _queue_depth(platform, platform.on_failure_queue_url),
        "alarms_fired": sorted({p["AlarmName"] for p in progress.pages
                                if p.get("NewStateValue") == "ALARM"}),
        "pages": [{"alarm": p.get("AlarmName"), "state": p.get("NewStateValue"),
                   "from": p.get("OldStateValue"), "at": p.get("StateChangeTime")}
                  for p in progress.pages],
        "sample_features": _samples(platform),
        "api_url": _api_url(platform),
    }
    if drill is not None:
        summary["fault_drill"] = {"timeline": drill.timeline, "completed": drill.done}
    return summary


def _offline(platform: LocalPlatform) -> dict[str, int]:
    s3 = platform.client("s3")
    counts: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=platform.offline_bucket()):
        for item in page.get("Contents", []):
            counts[item["Key"].split("/", 1)[0]] += 1
    return {
        "raw_parquet_files": counts["raw"],
        "raw_records": sum(d.stats.records_delivered for d in platform.deliveries),
        "raw_errors": counts["raw-errors"],
        "feature_log_objects": counts["features"],
        "quarantine_objects": counts["quarantine"],
    }


def _keep_offline_files(platform: LocalPlatform, destination: Path) -> dict[str, Any]:
    written = export_offline_store(platform.client("s3"), platform.offline_bucket(), destination)
    shown = destination.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    return {"path": str(shown), "files": {prefix.rstrip("/"): written[prefix]
                                          for prefix in EXPORTED_PREFIXES}}


def _offline_figures(platform: LocalPlatform, offline: Path, started_ms: int,
                     console: Console) -> dict[str, Any]:
    """The offline half on the files just kept: a training set, and the consistency figure of
    what the online store served during the run."""
    ended_ms = time.time_ns() // 1_000_000
    with _status(console, "building a training set from the offline store"):
        training = offline_figures.training_set(offline, started_ms, ended_ms)
    with _status(console, "recomputing what the online store served (consistency)"):
        checked = offline_figures.consistency(platform, offline, started_ms, ended_ms)
    return {"training_set": training, "consistency": checked}


def _training_set_line(training: dict[str, Any]) -> str:
    shown = Path(training["path"])
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    return (f"training set: [bold]{shown}[/] ({training['rows']:,} labels x "
            f"{training['features']} features of user_engagement, {training['values_not_null']:,}"
            f" values not null, built from the raw table in {training['seconds']} s)")


def _consistency_line(checked: dict[str, Any]) -> str:
    if not checked["values"]:
        return "consistency: nothing written during the run to check"
    return (f"consistency: [bold]{checked['rate']:.2%}[/] of {checked['values']:,} values the "
            f"online store served match their recomputation from the raw events "
            f"({checked['entities']:,} entities, {checked['features']} features; lowest feature "
            f"{checked['lowest_rate']:.2%})")


def _offline_files_line(kept: dict[str, Any]) -> str:
    counts = ", ".join(f"{prefix}/ {count}" for prefix, count in kept["files"].items() if count)
    return (f"offline store kept on disk in [bold]{kept['path']}/[/] ({counts or 'no files'}); "
            "docs/local-platform.md shows how to open it with DuckDB or pandas")


def _queue_depth(platform: LocalPlatform, url: str) -> int:
    attributes = platform.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _samples(platform: LocalPlatform) -> dict[str, Any]:
    """The busiest fan (Zipf rank 1), a game and a piece of content, read through the API."""
    if platform.api is None:
        return {}
    samples = {}
    for entity_type, entity_id in (("user", "user-000000"), ("game", "game-000"),
                                   ("content", "content-00000")):
        url = f"{platform.api.url}/v1/features/{entity_type}/{entity_id}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                samples[f"{entity_type} {entity_id}"] = json.loads(response.read())
        except OSError as error:
            samples[f"{entity_type} {entity_id}"] = f"unreadable: {error}"
    return samples


def _wait_for_ctrl_c(platform: LocalPlatform, console: Console) -> None:
    url = _api_url(platform)
    console.print(f"[bold]the platform is up[/] (Ctrl-C stops it); try:\n"
                  f"  curl {url}/v1/features/user/user-000000\n"
                  f"  curl -X POST {url}/v1/features/batch-get -d "
                  "'{\"entities\": [{\"entity_type\": \"game\", \"entity_id\": \"game-000\"}]}'",
                  soft_wrap=True, highlight=False)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping")


def _service() -> dict[str, str]:
    return {"service": "stream-processor"}


def _audience() -> dict[str, str]:
    return {"service": "audience-stage"}


def _p99(platform: LocalPlatform, name: str, dimensions: dict[str, str]) -> float | None:
    """The p99 of a handler metric over the whole run (stage 2's lag: from the emission of a
    partial to its merge)."""
    values = platform.metrics.values(MetricKey.of("Fastbreak", name, dimensions), 0, math.inf)
    return percentile(values, 99) if values else None


def _short(alarm_name: str) -> str:
    return alarm_name.rsplit("-", 1)[-1]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"
