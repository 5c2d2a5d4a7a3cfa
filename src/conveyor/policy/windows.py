"""Freeze windows: ISO-8601 intervals and weekly windows in a time zone.

An interval is ``START/END``, ``START/DURATION`` or ``DURATION/END`` (ISO 8601-1 §5.5.4),
half-open: frozen from START up to, not including, END. Times must carry ``Z`` or an offset;
a bare date means 00:00 UTC that day.

A weekly window is frozen on each listed weekday from ``from`` through the whole minute ``to``
(``23:59`` reaches midnight), in wall-clock time of ``timezone`` — so it follows daylight
saving time. When ``to`` is earlier than ``from`` the window runs past midnight into the next
day, which still counts as part of the listed day's window.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from conveyor.policy.duration import parse_duration

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime

    def open_until(self, now: datetime) -> datetime | None:
        """The end of the window if ``now`` is inside it, else None."""
        return self.end if self.start <= now < self.end else None

    def __str__(self) -> str:
        return f"{_iso(self.start)}/{_iso(self.end)}"


@dataclass(frozen=True, slots=True)
class Weekly:
    days: frozenset[int]  # 0 = Monday, as date.weekday()
    start: time
    last_minute: time
    zone: tzinfo
    zone_name: str

    def open_until(self, now: datetime) -> datetime | None:
        local = now.astimezone(self.zone).replace(tzinfo=None)
        # Yesterday's window may still be open past midnight.
        for back in (0, 1):
            day = local.date() - timedelta(days=back)
            if day.weekday() not in self.days:
                continue
            begin = datetime.combine(day, self.start)
            end_day = day if self.last_minute >= self.start else day + timedelta(days=1)
            end = datetime.combine(end_day, self.last_minute) + _ONE_MINUTE
            if begin <= local < end:
                return end.replace(tzinfo=self.zone).astimezone(UTC)
        return None

    def __str__(self) -> str:
        days = ",".join(WEEKDAYS[day] for day in sorted(self.days))
        return f"weekly {days} {self.start:%H:%M}-{self.last_minute:%H:%M} {self.zone_name}"


Window = Interval | Weekly


def parse_instant(text: str) -> datetime:
    """A UTC ``datetime`` from ISO-8601 text with a zone (``Z``/offset), or a bare date."""
    value = text.strip()
    if len(value) > 64:
        raise ValueError("date-time text is too long")
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        day = date.fromisoformat(value)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO-8601 date-time") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone; add Z or an offset such as +01:00")
    return parsed.astimezone(UTC)


@functools.lru_cache(maxsize=256)
def parse_interval(text: str) -> Interval:
    """``START/END``, ``START/DURATION`` or ``DURATION/END``; ``ValueError`` otherwise."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(
            "an interval is START/END in ISO 8601, e.g. 2026-12-20T00:00:00Z/2027-01-02T00:00:00Z"
        )
    first, second = (part.strip() for part in text.split("/"))
    if first.upper().startswith("P") and second.upper().startswith("P"):
        raise ValueError("an interval needs at least one date-time, not two durations")
    if second.upper().startswith("P"):
        start = parse_instant(first)
        end = start + parse_duration(second)
    elif first.upper().startswith("P"):
        end = parse_instant(second)
        start = end - parse_duration(first)
    else:
        start, end = parse_instant(first), parse_instant(second)
    if end <= start:
        raise ValueError(f"interval {text!r} ends before it starts")
    return Interval(start, end)


def parse_clock(text: str) -> time:
    if not isinstance(text, str) or not _CLOCK_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00 to 23:59; quote it)")
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name; ``ValueError`` naming the fix otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        if not available_timezones():
            raise ValueError(
                f"no time zone database to look up {name!r}: install the system tzdata "
                "package or 'pip install tzdata'"
            ) from exc
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC"
        ) from exc


def weekly(days: list[str], start: str, last_minute: str, timezone: str) -> Weekly:
    first, last = parse_clock(start), parse_clock(last_minute)
    if first == last:
        raise ValueError("'from' and 'to' are the same minute; widen the window")
    return Weekly(
        days=frozenset(WEEKDAYS.index(day) for day in days),
        start=first,
        last_minute=last,
        zone=zone(timezone),
        zone_name=timezone,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
