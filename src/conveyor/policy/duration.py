"""Durations as people write them in ``conveyor.yaml``: ``24h``, ``30m``, ``7d``, ``1h30m`` or
ISO-8601 (``PT24H``, ``P7D``, ``P1W``, ``P1DT12H``).

Years and months are refused: their length depends on the calendar, and a gate's limit must
not. Plain numbers are refused too: ``max_age: 24`` says nothing about its unit.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT_RE = re.compile(r"(?:[0-9]{1,9}[smhdw])+")
_SHORT_PART_RE = re.compile(r"([0-9]{1,9})([smhdw])")
_ISO_RE = re.compile(
    r"P(?:(?P<weeks>[0-9]{1,9})W)?(?:(?P<days>[0-9]{1,9})D)?"
    r"(?:T(?:(?P<hours>[0-9]{1,9})H)?(?:(?P<minutes>[0-9]{1,9})M)?(?:(?P<seconds>[0-9]{1,9})S)?)?"
)
_ISO_UNITS = {"weeks": 7 * 86400, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
# Larger than any sensible gate and still far inside timedelta's range.
MAX_DURATION = timedelta(days=100 * 366)
SHORT_FORM_HELP = "write a number and a unit (30s, 30m, 24h, 7d, 2w, 1h30m) or ISO-8601 (PT24H)"


def parse_duration(text: str) -> timedelta:
    """``timedelta`` of ``text``; ``ValueError`` with a one-line message otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a duration must be text; {SHORT_FORM_HELP}")
    value = text.strip()
    if len(value) > 64:
        raise ValueError(f"duration is too long; {SHORT_FORM_HELP}")
    if _SHORT_RE.fullmatch(value):
        units = [unit for _, unit in _SHORT_PART_RE.findall(value)]
        if len(set(units)) != len(units):
            raise ValueError(f"duration {value!r} repeats a unit; {SHORT_FORM_HELP}")
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _SHORT_PART_RE.findall(value))
        return _bounded(seconds, value)
    upper = value.upper()
    match = _ISO_RE.fullmatch(upper)
    if match and upper not in ("P", "PT") and not upper.endswith("T"):
        parts = {name: int(found) for name, found in match.groupdict().items() if found}
        if parts:
            return _bounded(sum(n * _ISO_UNITS[name] for name, n in parts.items()), value)
    if re.match(r"P[0-9]+[YM]", upper):
        raise ValueError(
            f"duration {value!r} uses years or months, whose length varies; use days or weeks"
        )
    raise ValueError(f"invalid duration {value!r}; {SHORT_FORM_HELP}")


def _bounded(seconds: int, text: str) -> timedelta:
    # Checked as an int first: a huge count would overflow timedelta.
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """A short human form: ``26h``, ``3d4h``, ``45m``, ``12s`` (rounded down to the second)."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds}s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days >= 2:
        return f"{sign}{days}d{hours}h" if hours else f"{sign}{days}d"
    hours += days * 24
    if hours:
        return f"{sign}{hours}h{minutes}m" if minutes else f"{sign}{hours}h"
    return f"{sign}{minutes}m"
