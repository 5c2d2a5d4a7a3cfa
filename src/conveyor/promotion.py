"""Deprecated alias, kept for one release: check, promote, rollback and the views are in
``conveyor.service`` (``_promote``, ``_views``; the verified reader: ``_evidence``)."""

from __future__ import annotations

from typing import Any

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    from conveyor import service

    return getattr(service, name)
