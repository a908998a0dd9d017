"""``fastbreak``: one entry point whose subcommands are the modules of ``fastbreak.cli``."""

from __future__ import annotations

import pytest

from fastbreak import cli

EVERY_COMMAND = {"backfill", "cost", "demo", "produce", "read", "redrive", "serve",
                 "training-set"}


def test_every_command_a_user_needs_is_a_subcommand() -> None:
    assert set(cli.commands()) >= EVERY_COMMAND
    assert "training-set" in cli.parser().format_help()


@pytest.mark.parametrize("command", ["cost", "demo", "produce", "redrive", "serve"])
def test_a_handed_over_command_answers_help_under_its_fastbreak_name(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fastbreak {command}")


def test_reading_an_unknown_entity_type_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["read", "martian", "m-1", "--table", "online"]) == cli.USAGE_ERROR
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: entity_type: unknown entity type 'martian'")
    assert "\n" not in error


def test_reading_with_no_table_named_says_how_to_name_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FASTBREAK_ONLINE_TABLE", raising=False)
    assert cli.main(["read", "user", "u-1"]) == cli.USAGE_ERROR
    assert "FASTBREAK_ONLINE_TABLE" in capsys.readouterr().err


def test_an_unknown_command_is_an_argparse_error_with_exit_2() -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["train"])
    assert done.value.code == 2
