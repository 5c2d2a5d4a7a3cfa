"""Drift, without I/O: what runs (read from ``kubectl get pods -A -o json``, ``docker
inspect`` or ``docker compose ps --format json`` output) against what was promoted.

``read_running(documents)`` returns every running container with the digest it runs (or
None when the output does not say); ``classify(running, promoted_of)`` gives each one a
status: **current** (the environment's promoted digest), **previous** (promoted there
earlier), **never** (never promoted there) or **unknown** (no digest to judge). Only
**never** fails a drift check (``FAILS``, ``failing``): ``conveyor drift`` and the pages
judge by that one rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.errors import InputError

Status = Literal["current", "previous", "never", "unknown"]
STATUSES: tuple[Status, ...] = ("current", "previous", "never", "unknown")
# What fails a drift check: a digest never promoted to the environment it runs in. A previous
# one (mid-rollout, rolled back) and one without a digest are reported, not failed.
FAILS: frozenset[Status] = frozenset({"never"})
MAX_CONTAINERS = 100_000
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


class DriftInputError(InputError):
    """Output that is none of the formats drift reads."""


@dataclass(frozen=True)
class Running:
    source: str  # kubernetes, docker or compose
    namespace: str | None  # Kubernetes namespace, or the Compose project
    owner: str  # the pod or the container's name
    container: str
    image: str
    digest: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "namespace": self.namespace,
            "owner": self.owner,
            "container": self.container,
            "image": self.image,
            "digest": self.digest,
        }


@dataclass(frozen=True)
class Classified:
    running: Running
    environment: str
    status: Status

    def to_dict(self) -> dict[str, Any]:
        return {**self.running.to_dict(), "environment": self.environment, "status": self.status}


def _digest_in(text: object) -> str | None:
    """The digest at the end of ``repo@sha256:…``, ``docker-pullable://repo@sha256:…``."""
    if not isinstance(text, str) or "@" not in text:
        return None
    match = _DIGEST.search(text.rsplit("@", 1)[1])
    return match.group(1) if match and text.rsplit("@", 1)[1] == match.group(1) else None


def load_documents(text: str, where: str) -> list[Any]:
    """One JSON document, or JSON lines (``docker compose ps --format json`` since v2.21)."""
    try:
        return [json.loads(text)]
    except RecursionError:
        raise DriftInputError(f"{where}: JSON nested too deeply") from None
    except json.JSONDecodeError as first:
        documents = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                raise DriftInputError(
                    f"{where}: not JSON ({first.msg} at line {first.lineno}); give kubectl get "
                    "pods -o json, docker inspect or docker compose ps --format json output"
                ) from None
            if number > MAX_CONTAINERS:
                raise DriftInputError(f"{where}: more than {MAX_CONTAINERS} lines") from None
        if not documents:
            raise DriftInputError(f"{where}: empty") from None
        return documents


def _objects(documents: Iterable[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for document in documents:
        items = document if isinstance(document, list) else [document]
        for item in items:
            if isinstance(item, dict):
                found.append(item)
    return found


def read_running(documents: Sequence[Any]) -> list[Running]:
    """Every running container the documents describe (all formats may be mixed)."""
    objects = _objects(documents)
    if not objects:
        raise DriftInputError("no containers or pods in the input")
    pods: list[dict[str, Any]] = []
    containers: list[dict[str, Any]] = []
    images: dict[str, list[str]] = {}  # docker image id -> its RepoDigests
    compose: list[dict[str, Any]] = []
    for item in objects:
        kind = item.get("kind")
        if kind in ("List", "PodList") and isinstance(item.get("items"), list):
            pods.extend(p for p in item["items"] if isinstance(p, dict) and p.get("kind") == "Pod")
        elif kind == "Pod":
            pods.append(item)
        elif isinstance(item.get("RepoDigests"), list) and isinstance(item.get("Id"), str):
            images[item["Id"]] = [d for d in item["RepoDigests"] if isinstance(d, str)]
        elif isinstance(item.get("Config"), dict) and isinstance(item.get("State"), dict):
            containers.append(item)
        elif "Service" in item and ("Image" in item or "Name" in item):
            compose.append(item)
        else:
            raise DriftInputError(
                "an object that is no Pod, docker inspect or docker compose ps entry "
                f"(keys: {', '.join(sorted(str(k) for k in item)[:8])})"
            )
    found = [*_from_pods(pods), *_from_docker(containers, images, compose)]
    if len(found) > MAX_CONTAINERS:
        raise DriftInputError(f"more than {MAX_CONTAINERS} containers")
    return found


def _obj(holder: dict[str, Any], key: str) -> dict[str, Any]:
    value = holder.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _from_pods(pods: Iterable[dict[str, Any]]) -> Iterable[Running]:
    for pod in pods:
        metadata, status, spec = _obj(pod, "metadata"), _obj(pod, "status"), _obj(pod, "spec")
        images = {}
        for list_name in ("initContainers", "containers", "ephemeralContainers"):
            for c in spec.get(list_name) or []:
                if isinstance(c, dict):
                    images[_text(c.get("name"))] = _text(c.get("image"))
        seen = set()
        for list_name in (
            "initContainerStatuses",
            "containerStatuses",
            "ephemeralContainerStatuses",
        ):
            for item in status.get(list_name) or []:
                if not isinstance(item, dict):
                    continue
                name = _text(item.get("name"))
                seen.add(name)
                image = _text(item.get("image")) or images.get(name, "")
                # imageID is what was pulled; the spec's image@digest is what was asked.
                digest = _digest_in(item.get("imageID")) or _digest_in(images.get(name))
                yield Running(
                    "kubernetes",
                    _text(metadata.get("namespace")) or "default",
                    _text(metadata.get("name")),
                    name,
                    image,
                    digest,
                )
        for name, image in images.items():  # not started yet: judge what the spec asks for
            if name not in seen:
                yield Running(
                    "kubernetes",
                    _text(metadata.get("namespace")) or "default",
                    _text(metadata.get("name")),
                    name,
                    image,
                    _digest_in(image),
                )


def _repo_of(reference: str) -> str:
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _image_digest(reference: str, repo_digests: Sequence[str]) -> str | None:
    pinned = _digest_in(reference)
    if pinned:
        return pinned
    digests = [d for d in (_digest_in(r) for r in repo_digests) if d]
    wanted = _repo_of(reference)
    for repo_digest in repo_digests:  # the RepoDigest of the repository the reference names
        if _repo_of(repo_digest) == wanted or _repo_of(repo_digest).endswith("/" + wanted):
            return _digest_in(repo_digest)
    return digests[0] if len(set(digests)) == 1 else None


def _from_docker(
    containers: Iterable[dict[str, Any]],
    images: Mapping[str, Sequence[str]],
    compose: Iterable[dict[str, Any]],
) -> Iterable[Running]:
    by_name: dict[str, dict[str, Any]] = {}
    for c in containers:
        by_name[_text(c.get("Name")).lstrip("/")] = c
        by_name[_text(c.get("Id"))] = c
    listed: set[int] = set()
    for entry in compose:
        inspected = by_name.get(_text(entry.get("Name"))) or by_name.get(_text(entry.get("ID")))
        if inspected is None:
            for key, c in by_name.items():
                if key and _text(entry.get("ID")) and key.startswith(_text(entry.get("ID"))):
                    inspected = c
        image = _text(entry.get("Image"))
        digest = _digest_in(image)
        if inspected is not None:
            listed.add(id(inspected))
            digest = digest or _image_digest(
                _text(inspected["Config"].get("Image")) or image,
                images.get(_text(inspected.get("Image")), ()),
            )
        yield Running(
            "compose",
            _text(entry.get("Project")) or None,
            _text(entry.get("Name")),
            _text(entry.get("Service")),
            image,
            digest,
        )
    for c in containers:
        if id(c) in listed:
            continue
        labels = _obj(c["Config"], "Labels")
        reference = _text(c["Config"].get("Image"))
        yield Running(
            "docker",
            _text(labels.get("com.docker.compose.project")) or None,
            _text(c.get("Name")).lstrip("/"),
            _text(labels.get("com.docker.compose.service")) or _text(c.get("Name")).lstrip("/"),
            reference,
            _image_digest(reference, images.get(_text(c.get("Image")), ())),
        )


def status_of(digest: str | None, history: Sequence[str]) -> Status:
    """``history``: the environment's promoted digests, newest first."""
    if digest is None:
        return "unknown"
    if history and history[0] == digest:
        return "current"
    return "previous" if digest in history else "never"


def classify(
    running: Iterable[Running],
    environment_of: Callable[[Running], str | None],
    history_of: Callable[[str], Sequence[str]],
) -> list[Classified]:
    """Each container against its environment's history; ``environment_of`` None skips it."""
    found = []
    histories: dict[str, Sequence[str]] = {}
    for item in running:
        environment = environment_of(item)
        if environment is None:
            continue
        if environment not in histories:
            histories[environment] = history_of(environment)
        found.append(Classified(item, environment, status_of(item.digest, histories[environment])))
    return found


def summary(classified: Iterable[Classified]) -> dict[str, dict[str, int]]:
    """environment -> status -> count (every status present)."""
    counts: dict[str, dict[str, int]] = {}
    for item in classified:
        per = counts.setdefault(item.environment, dict.fromkeys(STATUSES, 0))
        per[item.status] += 1
    return counts


def failing(counts: Mapping[str, int]) -> int:
    """How many containers of a summary (status -> count) fail the drift check."""
    return sum(n for status, n in counts.items() if status in FAILS)


def environment_chooser(
    default: str, mapping: Mapping[str, str], exempt: Iterable[str] = ()
) -> Callable[[Running], str | None]:
    """A container's environment: its namespace's (or Compose project's) in ``mapping``,
    else ``default``; None (skipped) for an exempt namespace."""
    skipped = frozenset(exempt)

    def choose(item: Running) -> str | None:
        if item.namespace is not None and item.namespace in skipped:
            return None
        if item.namespace is not None and item.namespace in mapping:
            return mapping[item.namespace]
        return default

    return choose


def parse_namespace_map(pairs: Iterable[str]) -> dict[str, str]:
    """``NAMESPACE=ENVIRONMENT`` items (each may hold several, comma-separated)."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split(","):
            namespace, sep, environment = item.strip().partition("=")
            if not sep or not namespace.strip() or not environment.strip():
                raise InputError(f"--namespace-map: {item!r} is not NAMESPACE=ENVIRONMENT")
            mapping[namespace.strip()] = environment.strip()
    return mapping


__all__ = [
    "STATUSES",
    "Classified",
    "DriftInputError",
    "Running",
    "Status",
    "classify",
    "environment_chooser",
    "load_documents",
    "parse_namespace_map",
    "read_running",
    "status_of",
    "summary",
]
