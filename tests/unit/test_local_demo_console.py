"""The demo's arguments and console output, without a platform."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from localplatform import __main__ as cli
from localplatform import demo


@pytest.mark.parametrize("arguments", [
    ["--duration", "-5"], ["--duration", "0"], ["--duration", "soon"], ["--games", "0"],
    ["--games", "2.5"], ["--rate", "-1"],
])
def test_a_duration_rate_or_number_of_games_not_above_zero_is_a_one_line_error(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(["demo", *arguments])

    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m localplatform demo: error: argument")


def test_a_summary_path_in_a_missing_folder_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(["demo", "--summary-json", str(tmp_path / "no" / "s.json")])

    assert exit_.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_ctrl_c_during_a_run_ends_with_a_line_and_exit_code_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    monkeypatch.setattr(sys, "__stdout__", sys.stdout)  # the console writes there

    assert cli.main(["demo"]) == 130
    assert "interrupted" in capsys.readouterr().out


def test_floats_print_to_six_significant_digits() -> None:
    vector = {"features": {
        "game_live.watch_seconds_5m": {"value": 3108.899999999999},
        "user_affinity.top_sports_7d": {"value": [["golf", 0.30000000000000004]]},
        "game_live.viewers_5m": {"value": 27},
    }}

    assert demo._vector_line(vector) == (
        "watch_seconds_5m=3108.9, top_sports_7d=[[golf, 0.3]], viewers_5m=27"
    )


def test_a_page_line_keeps_the_whole_reason() -> None:
    reason = ("Threshold Crossed: 3 out of the last 3 datapoints [4.0 (28/11/26 10:40:00), "
              "3.0 (28/11/26 10:39:00), 5.0 (28/11/26 10:38:00)] were greater than the threshold "
              "(0.0) (minimum 3 datapoints for OK -> ALARM transition).")
    page = {"NewStateValue": "ALARM", "OldStateValue": "OK", "AlarmName": "Fastbreak-dev-Errors",
            "NewStateReason": reason}

    assert demo._page_line(page, 12.0).endswith(reason)


def test_the_live_view_leaves_stdout_to_the_handlers_log_router() -> None:
    # Rich's live displays replace sys.stdout by default: the handlers' EMF lines printed while
    # one runs would then reach the terminal instead of their function's log.
    console = Console(file=io.StringIO(), force_terminal=True)
    before = sys.stdout
    with demo._live(console) as live:
        assert live is not None
        assert sys.stdout is before
    with demo._status(console, "waiting"):
        assert sys.stdout is before


def test_without_a_terminal_there_is_no_live_view() -> None:
    with demo._live(Console(file=io.StringIO(), force_terminal=False)) as live:
        assert live is None
