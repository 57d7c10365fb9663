from __future__ import annotations

import pytest

from signray.fields import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2h", 7200), ("30m", 1800), ("90s", 90), ("3600", 3600), ("1.5h", 5400), (" 2M ", 120),
     ("1d", 86400), (45, 45), (2.5, 2.5)],
)  # fmt: skip
def test_durations_in_hours_minutes_seconds_or_plain_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-3", "-3s", "abc", "2 hours", "h", "", True, None, -1])
def test_anything_else_is_not_a_duration(text):
    assert parse_duration(text) is None
