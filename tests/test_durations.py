"""The one duration grammar: ``vigil drift schedule --every`` and ``vigil logs prune --older-than``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("45", 45),
        ("90M", 5400),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_zero_is_a_duration_only_where_allowed() -> None:
    assert parse_duration("0s", allow_zero=True).total_seconds() == 0


@pytest.mark.parametrize("text", ["", "m", "15x", "-5m", "0s", "1h 30m", "1.5.2h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "args",
    [
        ["logs", "prune", "--older-than", "30x"],
        ["logs", "prune", "--older-than", "-1d"],
        ["drift", "schedule", "--every", "0s"],
        ["drift", "schedule", "--every", "soon"],
    ],
)
def test_commands_refuse_bad_durations_naming_the_option(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "duration" in result.output
    assert ("--older-than" if "prune" in args else "--every") in result.output
