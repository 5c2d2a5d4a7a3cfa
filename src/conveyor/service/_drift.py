"""Drift: what runs (``kubectl get pods -A -o json``, ``docker inspect``, ``docker compose ps
--format json`` output) against what the verified ledger says was promoted. The CLI's
``conveyor drift`` and the server's drift endpoint both ask this; the parsing and the
classification are pure (``policy.drift``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.policy.drift import (
    STATUSES,
    Classified,
    classify,
    environment_chooser,
    failing,
    load_documents,
    parse_namespace_map,
    read_running,
    summary,
)
from conveyor.service._evidence import VerifiedLedger
from conveyor.service._workspace import Workspace, workspace_for


@dataclass(frozen=True)
class DriftReport:
    environment: str  # the one asked about; containers of mapped namespaces name their own
    containers: tuple[Classified, ...]

    @property
    def summary(self) -> dict[str, dict[str, int]]:
        """environment -> status -> count; the environment asked about is always present."""
        counts = summary(self.containers)
        counts.setdefault(self.environment, dict.fromkeys(STATUSES, 0))
        return counts

    @property
    def never_promoted(self) -> int:
        """The containers that fail the drift check (policy.drift: never promoted there)."""
        return sum(failing(counts) for counts in self.summary.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "containers": [c.to_dict() for c in self.containers],
            "summary": self.summary,
            "never_promoted": self.never_promoted,
        }


def drift(
    environment: str,
    sources: Sequence[tuple[str, str]],
    *,
    namespace_map: Sequence[str] | None = None,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
) -> DriftReport:
    """Classify every container in ``sources`` (``(text, where)`` pairs) as ``current``,
    ``previous``, ``never`` (promoted) or ``unknown`` (no digest) in its environment: its
    namespace's in ``namespace_map`` (``NS=ENV[,NS=ENV]`` items), else in ``admission.namespaces``,
    else ``environment``; ``admission.exempt_namespaces`` are skipped."""
    documents: list[Any] = []
    for text, where in sources:
        documents.extend(load_documents(text, where))
    running = read_running(documents)
    with workspace_for(workspace, config_path) as ws:
        config = ws.config
        config.model.environment(environment)
        admission = config.model.admission
        if namespace_map:
            mapping = parse_namespace_map(namespace_map)
        else:
            mapping = dict(admission.namespaces) if admission else {}
        for named in set(mapping.values()):
            config.model.environment(named)
        exempt = admission.exempt_namespaces if admission else []
        # The verified reader: signatures, roles (server-signed entries count for their
        # principal) and every row proved into the signed tree.
        verified = VerifiedLedger(ws)
        classified = classify(
            running,
            environment_chooser(environment, mapping, exempt),
            lambda e: [item.digest for item in reversed(verified.promotions(e))],
        )
    return DriftReport(environment, tuple(classified))
