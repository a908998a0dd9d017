"""The cost model: its arithmetic against hand-computed figures, its inputs from the cost
benchmark's own output, and one-line errors for bad arguments or missing inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cost_ratios
from fastbreak_ops import cost
from fastbreak_ops.cost import (
    RATIOS,
    SECONDS_PER_MONTH,
    Assumptions,
    Deployment,
    Measured,
    Prices,
    Traffic,
    estimate,
)

RATIO_VALUES = {
    "cost_processor_gb_s_per_event": (0.0002, 0.0001),
    "cost_audience_gb_s_per_event": (0.00005, 0.000025),
    "cost_partials_kb_per_event": (0.3, 1.0),
    "cost_write_units_per_event": (2.0, 1.5),
    "cost_processor_read_units_per_event": (1.0, 1.5),
    "cost_feature_log_bytes_per_event": (1000.0, 0.001),
    "cost_kinesis_kb_per_event": (1.0, 300.0),
    "cost_parquet_bytes_per_event": (20.0, 300.0),
    "cost_read_units_per_read": (1.0, 1.0),
    "cost_reader_gb_s_per_read": (0.0004, 0.0002),
}
PRICES = Prices.load(cost.PRICES)


def results_file(tmp_path: Path, values: dict[str, tuple[float, float]] = RATIO_VALUES) -> Path:
    path = tmp_path / "latest.json"
    path.write_text(json.dumps([
        {"name": name, "value": value, "unit": "", "baseline": "", "baseline_value": base,
         "ratio": 0, "target": "", "met": True}
        for name, (value, base) in values.items()
    ]))
    return path


def lines(events: float, reads: float, tmp_path: Path, env: str = "dev") -> dict[str, float]:
    measured = Measured.load(results_file(tmp_path))
    return {line.component: line.usd for line in estimate(
        Traffic(events, reads), Deployment.of_environment(env), measured, PRICES, Assumptions())}


def test_kinesis_is_stream_hours_plus_ingest_and_two_reads_per_kb(tmp_path: Path) -> None:
    gb = 1000 * SECONDS_PER_MONTH / 1024**2  # 1 KB per event
    expected = 730 * 0.04 + gb * 0.08 + 2 * gb * 0.04
    assert lines(1000, 0, tmp_path)["Kinesis"] == pytest.approx(expected)


def test_prod_pays_for_six_more_days_of_retention(tmp_path: Path) -> None:
    gb = 1000 * SECONDS_PER_MONTH / 1024**2
    extra = gb / 730 * (168 - 24) * 0.10
    assert lines(1000, 0, tmp_path, "prod")["Kinesis"] - lines(1000, 0, tmp_path)["Kinesis"] == (
        pytest.approx(extra))


def test_dynamodb_is_measured_units_times_on_demand_prices(tmp_path: Path) -> None:
    events, reads = 100 * SECONDS_PER_MONTH, 10 * SECONDS_PER_MONTH
    expected = (events * 2.0 / 1e6 * 0.625 + (events * 1.0 + reads * 1.0) / 1e6 * 0.125
                + 10 * (0.25 + 0.20))
    assert lines(100, 10, tmp_path)["DynamoDB"] == pytest.approx(expected)


def test_api_gateway_is_the_request_price(tmp_path: Path) -> None:
    assert lines(0, 100, tmp_path)["API Gateway"] == pytest.approx(
        100 * SECONDS_PER_MONTH / 1e6 * 3.50)


def test_the_partials_stream_is_a_stream_hour_plus_its_kb_written_and_read_once(
    tmp_path: Path,
) -> None:
    gb = 1000 * SECONDS_PER_MONTH * 0.3 / 1024**2  # 0.3 billed KB of partials per event
    assert lines(1000, 0, tmp_path)["Kinesis partials"] == pytest.approx(
        730 * 0.04 + gb * 0.08 + gb * 0.04)


def test_the_audience_stage_runs_at_most_once_per_partials_shard_and_window(
    tmp_path: Path,
) -> None:
    events = 1000 * SECONDS_PER_MONTH
    invocations = 4 * SECONDS_PER_MONTH  # 4 partials shards, 1 s windows: fewer than stage 1's
    gb_s = events * 0.00005 + invocations * 2 * 0.005 * 0.5
    assert lines(1000, 0, tmp_path)["Lambda audience stage"] == pytest.approx(
        gb_s * 0.0000133334 + invocations / 1e6 * 0.20)


def test_traffic_costs_scale_and_fixed_costs_do_not(tmp_path: Path) -> None:
    idle = lines(0, 0, tmp_path)
    single, double = lines(500, 50, tmp_path), lines(1000, 100, tmp_path)
    assert idle["Kinesis"] == pytest.approx(730 * 0.04)
    assert idle["Kinesis partials"] == pytest.approx(730 * 0.04)
    assert idle["KMS"] == single["KMS"] == cost.KMS_KEYS * 1.00
    for component in ("DynamoDB", "API Gateway", "Lambda reader"):
        assert double[component] - idle[component] == pytest.approx(
            2 * (single[component] - idle[component]))


def test_the_cost_benchmark_produces_every_ratio_the_model_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cost_ratios, "BATCHES", 8)
    monkeypatch.setattr(cost_ratios, "READS", 20)
    results = [result.to_json() for result in cost_ratios.run()]
    assert {result["name"] for result in results} == set(RATIOS)
    by_name = {result["name"]: result for result in results}
    assert by_name["cost_kinesis_kb_per_event"]["value"] == 1.0  # ~300-byte events
    assert by_name["cost_write_units_per_event"]["value"] >= by_name[
        "cost_write_units_per_event"]["baseline_value"]  # a unit per started KB of item
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(results))
    assert cost.main(["--events-per-second", "1000", "--reads-per-second", "100",
                      "--bench-results", str(path), "--json"]) == 0


def test_json_output_lists_every_component_and_the_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert cost.main(["--events-per-second", "2000", "--reads-per-second", "500", "--json",
                      "--bench-results", str(results_file(tmp_path))]) == 0
    document = json.loads(capsys.readouterr().out)
    components = [c["component"] for c in document["components"]]
    assert components == ["Kinesis", "Kinesis partials", "Lambda processor",
                          "Lambda audience stage", "Lambda reader", "DynamoDB", "Firehose", "S3",
                          "API Gateway", "CloudWatch", "KMS"]
    assert document["total_usd_per_month"] == pytest.approx(
        sum(c["usd_per_month"] for c in document["components"]), abs=0.05)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reads-per-second", "1"], "the following arguments are required: --events-per-second"),
        (["--events-per-second", "-5", "--reads-per-second", "1"], "'-5' must be a finite"),
        (["--events-per-second", "lots", "--reads-per-second", "1"], "'lots' is not a number"),
    ],
)
def test_cost_rejects_a_bad_argument_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cost.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_benchmark_results_say_how_to_make_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = cost.main(["--events-per-second", "1", "--reads-per-second", "1",
                      "--bench-results", str(tmp_path / "none.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `make bench`" in err


def test_an_unknown_environment_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = cost.main(["--events-per-second", "1", "--reads-per-second", "1", "--env", "qa",
                      "--bench-results", str(results_file(tmp_path))])
    assert code == 2
    assert "unknown environment 'qa'" in capsys.readouterr().err


def test_every_price_states_its_source_and_date() -> None:
    document = json.loads(cost.PRICES.read_text())
    assert document["region"] == "us-east-1" and document["recorded"]
    for name, entry in document["prices"].items():
        assert entry["source"].startswith("https://aws.amazon.com/"), name
        assert entry["as_of"] and entry["unit"], name


def test_the_command_prints_the_estimate_and_no_node_banner(tmp_path: Path) -> None:
    # as a user runs it, without the variables the Makefile and the tests' conftest export
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("JSII_SILENCE")}
    done = subprocess.run(
        [sys.executable, "-m", "fastbreak", "cost", "--events-per-second", "10",
         "--reads-per-second", "1", "--bench-results", str(results_file(tmp_path))],
        capture_output=True, text=True, env=environ, check=False,
        cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "total" in done.stdout
    assert "Node" not in done.stdout + done.stderr
