"""Evaluate every gate of an environment for one digest into a ``Decision``.

Pure: no I/O. The caller (the service) loads the config, verifies the ledger entries, turns
them into an ``EvidenceSet`` and hands over a ``PromotionRequest``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from conveyor.policy.config import Config, ConfigModel
from conveyor.policy.gates import EvidenceView, gates_for
from conveyor.policy.model import Decision, EvidenceSet, GateResult, PromotionRequest


def evaluate(
    config: Config | ConfigModel, request: PromotionRequest, evidence: EvidenceSet
) -> Decision:
    """Check ``request`` against the gates of its environment.

    Raises ``UnknownEnvironmentError`` (exit 2) for an environment the config does not define
    and ``ValueError`` when ``evidence`` is about another digest (a caller's bug); otherwise
    never raises. ``allowed`` is true only when every gate passed.
    """
    model = config.model if isinstance(config, Config) else config
    gates = gates_for(model, request.environment)
    if evidence.digest != request.digest:
        raise ValueError(f"evidence is about {evidence.digest}, the request about {request.digest}")
    view = EvidenceView.of(evidence)
    results: list[GateResult] = [gate.check(view, request) for gate in gates]
    frozen = any(result.frozen for result in results)
    glass_used = any(result.break_glass_used for result in results)
    allowed = all(result.passed for result in results)
    return Decision(
        allowed=allowed,
        environment=request.environment,
        digest=request.digest,
        gates=tuple(results),
        policy_sha256=policy_sha256(model, request.environment),
        break_glass=((request.break_glass or "").strip() or None) if glass_used else None,
        frozen=frozen,
    )


def policy_document(config: Config | ConfigModel, environment: str) -> dict[str, Any]:
    """What ``policy_sha256`` hashes: the environment's policy, the freezes that apply to it,
    and every identity's key path (as written) and roles."""
    model = config.model if isinstance(config, Config) else config
    spec = model.environment(environment)
    return {
        "environment": environment,
        "policy": spec.model_dump(mode="json", by_alias=True),
        "freezes": [
            freeze.model_dump(mode="json", by_alias=True, exclude={"environments"})
            for freeze in model.freezes_for(environment)
        ],
        "identities": {
            name: {"key": identity.key, "roles": sorted(str(role) for role in identity.roles)}
            for name, identity in model.identities.items()
        },
    }


def policy_sha256(config: Config | ConfigModel, environment: str) -> str:
    """Hex sha256 of the canonical JSON of ``policy_document``; key order does not matter."""
    canonical = json.dumps(
        policy_document(config, environment),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def environment_order(config: Config | ConfigModel) -> list[str]:
    """Environment names, each after the one its ``after`` names; otherwise in file order."""
    model = config.model if isinstance(config, Config) else config
    names = list(model.environments)
    followers: dict[str, list[str]] = {name: [] for name in names}
    waiting: dict[str, int] = dict.fromkeys(names, 0)
    for name, spec in model.environments.items():
        after = spec.requires.after
        if after is not None and after.environment in followers:
            followers[after.environment].append(name)
            waiting[name] += 1
    order: list[str] = []
    ready = [name for name in names if waiting[name] == 0]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for follower in followers[name]:
            waiting[follower] -= 1
            if waiting[follower] == 0:
                ready.append(follower)
        ready.sort(key=names.index)
    # A loaded config has no cycles; anything left is still shown, in file order.
    order.extend(name for name in names if name not in order)
    return order
