"""The operations commands answer a bad argument with one line and exit code 2."""

from __future__ import annotations

import pytest

from fastbreak_ops import redrive


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --queue-url"),
        (["--queue-url", "q", "--max-messages", "0"], "argument --max-messages: '0' must be 1"),
        (["--queue-url", "q", "--attempts", "many"], "'many' is not a whole number"),
        (["--queue-url", "q", "--retry-pause", "-1"], "'-1' must be a finite number"),
        (["--queue-url", "q", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_redrive_rejects_a_bad_argument_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        redrive.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("python -m fastbreak_ops.redrive: error: ")
    assert message in err


def test_redrive_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        redrive.main(["--help"])
    assert exit_info.value.code == 0
    assert "--dry-run" in capsys.readouterr().out
