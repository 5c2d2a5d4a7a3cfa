"""Errors of evidence ingestion, beside their domain::

InputError (2)
└── EvidenceError           a test or scan report we refuse to read (names the file)
VerificationError (1)
└── ScanSubjectMismatch     a scan report that says it scanned another image
"""

from __future__ import annotations

from conveyor.errors import InputError, VerificationError


class EvidenceError(InputError):
    """A report file that is too big, malformed, hostile or of an unknown kind.

    The message always starts with the file's path, so one line tells the user which file.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ScanSubjectMismatch(VerificationError):
    """The scan report names image digests and none of them is the image being attested."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
