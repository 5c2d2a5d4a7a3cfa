"""Deprecated alias, kept for one release: the chain-of-custody operations are in
``conveyor.service`` (recording: ``_record``/``_signing``; the referrer manifest:
``conveyor.oci.referrers``; label agreement: ``conveyor.policy.labels``)."""

from __future__ import annotations

from typing import Any

from conveyor.oci.referrers import attach_attestation
from conveyor.policy.labels import check_labels_agree

__all__ = ["attach_attestation", "check_labels_agree"]


def __getattr__(name: str) -> Any:
    from conveyor import service

    return getattr(service, name)
