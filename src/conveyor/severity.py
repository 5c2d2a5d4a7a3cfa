"""The one vocabulary of vulnerability severities, most severe first.

``conveyor.evidence`` is its public home (scan reports are read into it); it lives in this
base module because ``policy`` (scan gates) and ``attest`` (the vulns predicate) use the
same words and must not import ``evidence`` (the domain packages are independent).
``attest`` maps these words to its upper-case wire words when it serialises, and back.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "SEVERITIES",
    "Severity",
    "is_severity_word",
    "normalise_severity",
    "severity_from_score",
    "severity_rank",
]


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NEGLIGIBLE = "negligible"
    UNKNOWN = "unknown"


SEVERITIES: tuple[Severity, ...] = tuple(Severity)
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
# Words scanners write for these levels; matched after strip() and ASCII lower-casing only,
# so a look-alike such as "CRİTICAL" (dotted capital I) is not a severity word.
_ALIASES: dict[str, Severity] = {
    **{severity.value: severity for severity in Severity},
    "moderate": Severity.MEDIUM,  # Snyk, GitHub advisories
}


def _ascii_lower(text: str) -> str | None:
    word = text.strip()
    return word.lower() if word.isascii() else None


def normalise_severity(value: object) -> Severity:
    """``"Critical"``, ``"CRITICAL"``, ``" critical "`` → ``critical``; a number, ``None``,
    an unknown word or a look-alike → ``unknown`` (never dropped: gates limit it)."""
    if not isinstance(value, str):
        return Severity.UNKNOWN
    word = _ascii_lower(value)
    return _ALIASES.get(word, Severity.UNKNOWN) if word is not None else Severity.UNKNOWN


def is_severity_word(value: object) -> bool:
    """Whether ``value`` names a severity (``"unknown"`` included)."""
    return isinstance(value, str) and _ascii_lower(value) in _ALIASES


def severity_from_score(score: float) -> Severity:
    """CVSS bands as GitHub code scanning reads ``security-severity``."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0.0:
        return Severity.LOW
    return Severity.UNKNOWN


def severity_rank(severity: Severity) -> int:
    """0 for critical, growing as severity falls; ``unknown`` ranks last."""
    return _RANK[severity]
