"""The public surface of conveyor.evidence: every exported name exists and nothing leaks."""

from __future__ import annotations

import conveyor.evidence as evidence
from conveyor.errors import InputError, VerificationError


def test_all_names_are_exported() -> None:
    for name in evidence.__all__:
        assert hasattr(evidence, name), name
    assert sorted(evidence.__all__) == sorted(set(evidence.__all__))


def test_error_kinds_and_exit_codes() -> None:
    bad = evidence.EvidenceError("r.xml", "broken")
    assert isinstance(bad, InputError)
    assert (bad.exit_code, str(bad), bad.path) == (2, "r.xml: broken", "r.xml")
    other = evidence.ScanSubjectMismatch("s.json", "another image")
    assert isinstance(other, VerificationError)
    assert other.exit_code == 1


def test_messages_stay_on_one_line() -> None:
    assert "\n" not in str(evidence.EvidenceError("a\nb.xml", "x\ny"))
