"""The one error root of conveyor.

Every error a user can meet is a ``ConveyorError`` whose message says what went wrong and,
where it can, what to do. Faces map ``exit_code`` to the process exit status:

    ConveyorError
    ├── InputError (2)            bad input or usage
    │   ├── InvalidReferenceError   a reference string that does not parse
    │   ├── DigestError             an unknown algorithm or malformed digest
    │   └── ConfigError             conveyor.yaml or another config file
    ├── ExternalError (3)         the registry, network, disk or database failed us
    │   ├── RegistryError           an HTTP answer we cannot use (status, code, redacted URL)
    │   │   ├── AuthenticationError
    │   │   └── NotFoundError
    │   ├── ManifestError           a manifest or index we refuse to believe
    │   ├── StorageError            an OCI image layout on disk
    │   └── LedgerError             the database behind the ledger
    ├── VerificationError (1)     a check of evidence failed
    │   └── DigestMismatch (3)      bytes received do not hash to the digest asked for
    └── PolicyDenied (1)          a gate said no
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error conveyor raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # One line, always: faces print this verbatim.
        return " ".join(self.message.split())


class InputError(ConveyorError):
    exit_code = 2


class InvalidReferenceError(InputError):
    """A reference (``registry/repo[:tag][@digest]`` or ``oci:PATH[:tag]``) that does not parse."""


class DigestError(InputError):
    """A digest with an unknown algorithm or a malformed encoded part."""


class ConfigError(InputError):
    """A configuration file with problems; ``problems`` lists each with file and line."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ExternalError(ConveyorError):
    exit_code = 3


class RegistryError(ExternalError):
    """An answer from a registry we cannot use. Carries no secrets: URLs are redacted."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        url: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.url = url
        self.retryable = retryable


class AuthenticationError(RegistryError):
    pass


class NotFoundError(RegistryError):
    pass


class ManifestError(ExternalError):
    """A manifest or index that is malformed, ambiguous, oversized or hostile."""


class StorageError(ExternalError):
    """An OCI image layout (or other local store) that cannot be read or written."""


class LedgerError(ExternalError):
    """The database behind the ledger failed."""


class VerificationError(ConveyorError):
    exit_code = 1


class DigestMismatch(VerificationError):
    """Bytes received do not hash to the digest that was asked for; nothing was written."""

    exit_code = 3

    def __init__(self, expected: str, actual: str, *, where: str = "") -> None:
        at = f" from {where}" if where else ""
        super().__init__(
            f"digest mismatch{at}: expected {expected}, received bytes hash to {actual}; "
            "refusing the content"
        )
        self.expected = expected
        self.actual = actual


class PolicyDenied(ConveyorError):
    exit_code = 1
