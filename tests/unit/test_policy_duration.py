"""Durations and freeze windows: the grammar, hostile text, time zones and DST edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from conveyor.policy import windows
from conveyor.policy.duration import format_duration, parse_duration
from conveyor.policy.windows import parse_instant, parse_interval, weekly, zone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("30m", timedelta(minutes=30)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 24h ", timedelta(hours=24)),
        ("PT24H", timedelta(hours=24)),
        ("pt5m", timedelta(minutes=5)),
        ("P7D", timedelta(days=7)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT1H30M15S", timedelta(hours=1, minutes=30, seconds=15)),
    ],
)
def test_durations_people_write(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "invalid duration"),
        ("24", "invalid duration"),
        ("h", "invalid duration"),
        ("24x", "invalid duration"),
        ("24 h", "invalid duration"),
        ("1.5h", "invalid duration"),
        ("-1h", "invalid duration"),
        ("0h", "longer than zero"),
        ("PT0S", "longer than zero"),
        ("1h1h", "repeats a unit"),
        ("P", "invalid duration"),
        ("PT", "invalid duration"),
        ("P1DT", "invalid duration"),
        ("P1Y", "years or months"),
        ("P2M", "years or months"),
        ("P1Y2M3D", "years or months"),
        ("999999999w", "longer than 100 years"),
        ("1" * 100 + "h", "too long"),
        ("24h\x00", "invalid duration"),
        ("２４h", "invalid duration"),
    ],
)
def test_bad_durations_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration(text)


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        delta = parse_duration(text)
    except ValueError:
        return
    assert delta > timedelta(0)


@given(st.integers(min_value=1, max_value=10**8))
def test_seconds_round_trip(seconds: int) -> None:
    assert parse_duration(f"{seconds}s") == timedelta(seconds=seconds)
    assert parse_duration(f"PT{seconds}S") == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=12), "12s"),
        (timedelta(minutes=45, seconds=59), "45m"),
        (timedelta(hours=26), "26h"),
        (timedelta(hours=1, minutes=5), "1h5m"),
        (timedelta(days=3, hours=4), "3d4h"),
        (timedelta(days=7), "7d"),
        (timedelta(seconds=-30), "-30s"),
    ],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_intervals_in_three_forms() -> None:
    start, end = _utc(2026, 12, 20), _utc(2027, 1, 2)
    assert parse_interval("2026-12-20T00:00:00Z/2027-01-02T00:00:00Z").start == start
    assert parse_interval("2026-12-20T00:00:00Z/2027-01-02T00:00:00Z").end == end
    assert parse_interval("2026-12-20T01:00:00+01:00/P13D").end == end
    assert parse_interval("P13D/2027-01-02T00:00:00Z").start == start
    assert parse_interval("2026-12-20/2027-01-02").end == end


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2026-12-20T00:00:00/2027-01-02T00:00:00Z", "no time zone"),
        ("2027-01-02T00:00:00Z/2026-12-20T00:00:00Z", "ends before it starts"),
        ("2026-12-20T00:00:00Z/2026-12-20T00:00:00Z", "ends before it starts"),
        ("P1D/P2D", "two durations"),
        ("2026-12-20T00:00:00Z", "START/END"),
        ("a/b/c", "START/END"),
        ("2026-13-20T00:00:00Z/2027-01-02T00:00:00Z", "not an ISO-8601"),
        ("yesterday/tomorrow", "not an ISO-8601"),
        ("2026-12-20T00:00:00Z/P1Y", "years or months"),
    ],
)
def test_bad_intervals(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_interval(text)


def test_interval_is_half_open() -> None:
    window = parse_interval("2026-12-20T00:00:00Z/2027-01-02T00:00:00Z")
    assert window.open_until(_utc(2026, 12, 19, 23, 59, 59)) is None
    assert window.open_until(_utc(2026, 12, 20)) == _utc(2027, 1, 2)
    assert window.open_until(_utc(2027, 1, 1, 23, 59, 59)) == _utc(2027, 1, 2)
    assert window.open_until(_utc(2027, 1, 2)) is None


def test_parse_instant_needs_a_zone() -> None:
    assert parse_instant("2026-12-20T01:00:00+01:00") == _utc(2026, 12, 20)
    with pytest.raises(ValueError, match="no time zone"):
        parse_instant("2026-12-20T01:00:00")


BERLIN_WEEKEND = weekly(["fri", "sat", "sun"], "16:00", "23:59", "Europe/Berlin")


@pytest.mark.parametrize(
    ("moment", "frozen"),
    [
        # Winter (CET, UTC+1): Friday 2026-11-27.
        (_utc(2026, 11, 27, 14, 59), False),  # 15:59 local
        (_utc(2026, 11, 27, 15, 0), True),  # 16:00 local
        (_utc(2026, 11, 27, 22, 59, 59), True),  # 23:59:59 local: 'to' is the last minute
        (_utc(2026, 11, 27, 23, 0), False),  # Saturday 00:00 local
        (_utc(2026, 11, 26, 15, 30), False),  # a Thursday
        # Summer (CEST, UTC+2): Friday 2026-07-03 — same wall clock, other UTC hour.
        (_utc(2026, 7, 3, 13, 59), False),  # 15:59 local
        (_utc(2026, 7, 3, 14, 0), True),  # 16:00 local
        (_utc(2026, 7, 3, 15, 0), True),
    ],
)
def test_weekly_window_follows_local_time(moment: datetime, frozen: bool) -> None:
    assert (BERLIN_WEEKEND.open_until(moment) is not None) is frozen


def test_weekly_window_reports_its_end_in_utc() -> None:
    assert BERLIN_WEEKEND.open_until(_utc(2026, 11, 27, 16)) == _utc(2026, 11, 27, 23)
    assert BERLIN_WEEKEND.open_until(_utc(2026, 7, 3, 16)) == _utc(2026, 7, 3, 22)


def test_spring_forward_gap() -> None:
    # 2026-03-29 (a Sunday): Berlin clocks jump from 02:00 CET to 03:00 CEST at 01:00 UTC.
    window = weekly(["sun"], "02:30", "03:30", "Europe/Berlin")
    assert window.open_until(_utc(2026, 3, 29, 0, 59)) is None  # 01:59 CET
    assert window.open_until(_utc(2026, 3, 29, 1, 0)) == _utc(2026, 3, 29, 1, 31)  # 03:00 CEST
    assert window.open_until(_utc(2026, 3, 29, 1, 31)) is None  # 03:31 CEST


def test_fall_back_repeated_hour_is_frozen_both_times() -> None:
    # 2026-10-25 (a Sunday): 03:00 CEST falls back to 02:00 CET at 01:00 UTC.
    window = weekly(["sun"], "02:00", "02:29", "Europe/Berlin")
    assert window.open_until(_utc(2026, 10, 25, 0, 10)) is not None  # 02:10 CEST
    assert window.open_until(_utc(2026, 10, 25, 0, 45)) is None  # 02:45 CEST
    assert window.open_until(_utc(2026, 10, 25, 1, 10)) is not None  # 02:10 CET
    assert window.open_until(_utc(2026, 10, 25, 1, 30)) is None  # 02:30 CET


def test_overnight_window_belongs_to_its_start_day() -> None:
    window = weekly(["fri"], "22:00", "05:59", "UTC")
    assert window.open_until(_utc(2026, 11, 27, 21, 59)) is None  # Friday
    assert window.open_until(_utc(2026, 11, 27, 23, 0)) == _utc(2026, 11, 28, 6)
    assert window.open_until(_utc(2026, 11, 28, 5, 59)) is not None  # Saturday morning
    assert window.open_until(_utc(2026, 11, 28, 6, 0)) is None
    assert window.open_until(_utc(2026, 11, 27, 3, 0)) is None  # Friday morning: Thursday's


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((["fri"], "16:00", "16:00", "UTC"), "same minute"),
        ((["fri"], "24:00", "23:59", "UTC"), "time of day"),
        ((["fri"], "9:00", "23:59", "UTC"), "time of day"),
        ((["fri"], "16:00", "23:59", "Mars/Olympus"), "unknown time zone"),
        ((["fri"], "16:00", "23:59", "../../etc/passwd"), "unknown time zone"),
        ((["fri"], "16:00", "23:59", ""), "unknown time zone"),
    ],
)
def test_bad_weekly_windows(args: tuple[list[str], str, str, str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        weekly(*args)


def test_missing_time_zone_database_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "available_timezones", set)
    with pytest.raises(ValueError, match="install the system tzdata"):
        zone("Europe/Nowhere")
