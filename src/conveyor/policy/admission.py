"""The admission decision, without I/O: which containers an ``admission.k8s.io/v1``
AdmissionReview asks to run, and whether each runs a digest promoted to the namespace's
environment.

``read_review(document)`` parses the request (``AdmissionRefused`` names what is wrong);
``decide(review, governance, promoted)`` returns a ``Verdict``; ``review_response(uid,
verdict)`` is the AdmissionReview the API server reads. Anything this module cannot read is a
refusal, never an allow: the webhook fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.errors import InputError, InvalidReferenceError
from conveyor.oci.name import Reference

API_VERSION = "admission.k8s.io/v1"
BREAK_GLASS_ANNOTATION = "conveyor.dev/break-glass"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
MAX_CONTAINERS = 1000  # a pod allows far fewer; more is an attack on the webhook
# Digests one break-glass may admit: each costs a full gate decision (and a record), and the
# webhook is unauthenticated.
MAX_BREAK_GLASS_DIGESTS = 16

# group/kind -> the path from ``object`` to the pod spec (PodSpec).
POD_SPEC_PATHS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}


class AdmissionRefused(InputError):
    """An AdmissionReview this webhook cannot read; the answer is a denial with this reason."""


@dataclass(frozen=True)
class Container:
    list_name: str  # containers, initContainers or ephemeralContainers
    name: str
    image: str

    def describe(self) -> str:
        kind = {"containers": "container", "initContainers": "init container"}.get(
            self.list_name, "ephemeral container"
        )
        return f"{kind} {self.name!r}"


@dataclass(frozen=True)
class UserInfo:
    """``request.userInfo``: the Kubernetes user the API server says made the request (a
    Kubernetes name, not an identity of conveyor.yaml)."""

    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        return out

    def describe(self) -> str:
        return f"kubernetes user {self.username or '(unnamed)'} via admission webhook"


@dataclass(frozen=True)
class Review:
    uid: str
    group: str
    kind: str
    namespace: str
    name: str
    operation: str
    dry_run: bool
    containers: tuple[Container, ...]
    break_glass: str | None
    user: UserInfo = UserInfo()

    @property
    def workload(self) -> dict[str, str]:
        """What the request creates or changes, for a record: kind, name, operation."""
        kind = f"{self.group}/{self.kind}" if self.group else self.kind
        return {"kind": kind, "name": self.name or "(unnamed)", "operation": self.operation}


@dataclass(frozen=True)
class Promoted:
    """What the verified ledger says of one environment's promotions."""

    environment: str
    history: tuple[str, ...]  # every promoted digest, newest first (duplicates removed)
    window: frozenset[str]  # current + the previous N: the digests admitted
    tags: Mapping[str, str] = field(default_factory=dict)  # tag the environment moves -> digest

    @property
    def current(self) -> str | None:
        return self.history[0] if self.history else None

    @classmethod
    def from_history(
        cls, environment: str, digests: Sequence[str], *, previous: int, tags: Sequence[str] = ()
    ) -> Promoted:
        """``digests``: each promotion's digest, newest first. The window is the current
        digest and those of the ``previous`` promotions before it (a rollback stays possible)."""
        window = frozenset(digests[: previous + 1])
        unique = tuple(dict.fromkeys(digests))
        current = digests[0] if digests else None
        return cls(environment, unique, window, dict.fromkeys(tags, current) if current else {})


@dataclass(frozen=True)
class Governance:
    """The ``admission:`` section, as the decision needs it."""

    namespaces: Mapping[str, str]
    exempt: frozenset[str] = frozenset()
    default: Literal["allow", "deny"] = "allow"
    previous: int = 1

    def environment_of(self, namespace: str) -> str | None:
        return self.namespaces.get(namespace)


@dataclass(frozen=True)
class BreakGlassNeed:
    """What a break-glass must lift: digests pinned but not promoted, and who runs them."""

    reason: str
    rule: str  # the environment's freeze break-glass, in words
    digests: tuple[tuple[str, tuple[Container, ...]], ...]  # digest -> containers running it


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str
    warnings: tuple[str, ...] = ()
    code: int = 200
    # A denial that a break-glass may lift, once the freeze's rule allows each digest and
    # the admission is recorded (server/admission.py); the verdict itself never allows.
    break_glass: BreakGlassNeed | None = None


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AdmissionRefused(f"{where} is not a JSON object")
    return value


def _text(value: object, where: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise AdmissionRefused(f"{where} is not a string")
    return value


def review_uid(document: object) -> str:
    """``request.uid`` when the document has one (to echo even in a refusal), else ''."""
    if isinstance(document, dict):
        request = document.get("request")
        if isinstance(request, dict) and isinstance(request.get("uid"), str):
            return str(request["uid"])[:256]
    return ""


def read_review(document: object) -> Review:
    root = _object(document, "the body")
    if root.get("apiVersion") != API_VERSION or root.get("kind") != "AdmissionReview":
        raise AdmissionRefused(
            f"not an AdmissionReview {API_VERSION} (apiVersion {root.get('apiVersion')!r}, "
            f"kind {root.get('kind')!r}); set admissionReviewVersions: [v1]"
        )
    request = _object(root.get("request"), "request")
    uid = _text(request.get("uid"), "request.uid")
    if not uid:
        raise AdmissionRefused("request.uid is empty")
    kind = _object(request.get("kind"), "request.kind")
    group = _text(kind.get("group"), "request.kind.group", optional=True)
    kind_name = _text(kind.get("kind"), "request.kind.kind")
    operation = _text(request.get("operation"), "request.operation")
    namespace = _text(request.get("namespace"), "request.namespace", optional=True)
    name = _text(request.get("name"), "request.name", optional=True)
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise AdmissionRefused("request.dryRun is not a boolean")
    user = _user(request.get("userInfo"))
    if operation in ("DELETE", "CONNECT"):  # nothing new runs
        return Review(uid, group, kind_name, namespace, name, operation, dry_run, (), None, user)
    path = POD_SPEC_PATHS.get((group, kind_name))
    if path is None:
        raise AdmissionRefused(
            f"{group + '/' if group else ''}{kind_name} is not a kind this webhook reads"
        )
    obj = _object(request.get("object"), "request.object")
    metadata = obj.get("metadata")
    if not namespace:
        namespace = (
            _text(metadata.get("namespace"), "metadata.namespace", optional=True)
            if isinstance(metadata, dict)
            else ""
        )
    if not name and isinstance(metadata, dict):  # a pod of a ReplicaSet: often generateName only
        named, generated = metadata.get("name"), metadata.get("generateName")
        if isinstance(named, str) and named:
            name = named
        elif isinstance(generated, str) and generated:
            name = f"{generated[:253]}*"
    if not namespace:
        raise AdmissionRefused("the request names no namespace")
    spec: object = obj
    where = "request.object"
    for step in path:
        where += f".{step}"
        spec = _object(spec, where.rsplit(".", 1)[0]).get(step)
    pod = _object(spec, where)
    containers = tuple(_containers(pod, where))
    if operation == "UPDATE":
        # Only what would newly run: a container an UPDATE leaves as it was (a label, a
        # finalizer removed) is not judged again, or an old pod could never be let go.
        before = _old_containers(request.get("oldObject"), path)
        containers = tuple(c for c in containers if c not in before)
    return Review(
        uid, group, kind_name, namespace, name[:253], operation, dry_run, containers,
        _break_glass(obj, path), user,
    )  # fmt: skip


def _user(value: object) -> UserInfo:
    """``request.userInfo``, read leniently (it only describes a record), capped in size."""
    if not isinstance(value, dict):
        return UserInfo()
    username, uid, groups = value.get("username"), value.get("uid"), value.get("groups")
    return UserInfo(
        username[:256] if isinstance(username, str) else "",
        uid[:256] if isinstance(uid, str) else "",
        tuple(g[:256] for g in groups[:64] if isinstance(g, str))
        if isinstance(groups, list)
        else (),
    )


def _containers(pod: dict[str, Any], where: str) -> list[Container]:
    found: list[Container] = []
    for list_name in CONTAINER_LISTS:
        items = pod.get(list_name)
        if items is None:
            continue
        if not isinstance(items, list):
            raise AdmissionRefused(f"{where}.{list_name} is not a list")
        for index, item in enumerate(items):
            at = f"{where}.{list_name}[{index}]"
            entry = _object(item, at)
            found.append(
                Container(
                    list_name,
                    _text(entry.get("name"), f"{at}.name"),
                    _text(entry.get("image"), f"{at}.image", optional=True),
                )
            )
            if len(found) > MAX_CONTAINERS:
                raise AdmissionRefused(f"more than {MAX_CONTAINERS} containers")
    return found


def _old_containers(old: object, path: tuple[str, ...]) -> frozenset[Container]:
    spec: object = old
    for step in path:
        spec = spec.get(step) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return frozenset()
    try:
        return frozenset(_containers(spec, "request.oldObject"))
    except AdmissionRefused:
        return frozenset()  # an unreadable old object excuses nothing


def _break_glass(obj: dict[str, Any], path: tuple[str, ...]) -> str | None:
    """The annotation on the object, else on its pod template."""
    holders: list[object] = [obj.get("metadata")]
    template: object = obj
    for step in path[:-1]:
        template = template.get(step) if isinstance(template, dict) else None
    if template is not obj and isinstance(template, dict):
        holders.append(template.get("metadata"))
    for metadata in holders:
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict):
            reason = annotations.get(BREAK_GLASS_ANNOTATION)
            if isinstance(reason, str) and reason.strip():
                return reason.strip()[:500]
    return None


def _pinned(image: str) -> tuple[str | None, str | None, str | None]:
    """(digest, tag, why-not) of an image reference."""
    if not image:
        return None, None, "names no image"
    try:
        ref = Reference.parse(image)
    except InvalidReferenceError as error:
        return None, None, f"image {image[:200]!r} is not a valid reference ({error})"
    if ref.digest is None:
        return None, ref.tag, f"image {ref.familiar} is not pinned by digest"
    return str(ref.digest), ref.tag, None


def decide(
    review: Review,
    governance: Governance,
    promoted: Promoted | None,
    *,
    break_glass_rule: str | None = None,
) -> Verdict:
    """Allow only digests in ``promoted.window``. ``promoted`` is None for a namespace that
    no environment governs. ``break_glass_rule`` names the environment's freeze break-glass,
    None when it has none; a denial a break-glass may lift carries a ``BreakGlassNeed``."""
    if review.operation in ("DELETE", "CONNECT"):
        return Verdict(True, f"{review.operation}: nothing new runs")
    if review.namespace in governance.exempt:
        return Verdict(True, f"namespace {review.namespace} is exempt")
    environment = governance.environment_of(review.namespace)
    if environment is None:
        if governance.default == "deny":
            return Verdict(
                False,
                f"namespace {review.namespace} is not governed by conveyor "
                "(admission.default: deny)",
                code=403,
            )
        return Verdict(
            True,
            "not governed",
            (f"conveyor: namespace {review.namespace} is not governed; images are not checked",),
        )
    if promoted is None or promoted.environment != environment:
        raise ValueError("promoted digests of the namespace's environment are required")
    denials: list[str] = []
    warnings: list[str] = []
    unpinned = False  # a break-glass lifts only denials of pinned digests
    needs: dict[str, list[Container]] = {}
    for container in review.containers:
        digest, tag, why = _pinned(container.image)
        if digest is None:
            denials.append(f"{container.describe()}: {why}")
            unpinned = True
            continue
        if digest not in promoted.window:
            if digest in promoted.history:
                reason = (
                    f"digest {digest} was promoted to {environment} before, but not within "
                    f"the last {governance.previous + 1} promotion(s)"
                )
            else:
                reason = f"digest {digest} was never promoted to {environment}"
            denials.append(f"{container.describe()}: {reason}")
            needs.setdefault(digest, []).append(container)
            continue
        named = promoted.tags.get(tag) if tag else None
        if named is not None and named != digest:
            warnings.append(
                f"conveyor: {container.describe()}: tag {tag} now names {named[:19]}… in "
                f"{environment}; this runs the earlier {digest[:19]}…"
            )
    if denials:
        need = None
        if review.break_glass is not None:
            if break_glass_rule is None:
                denials.append(f"break-glass refused: {environment} has no freeze break-glass rule")
            elif unpinned:
                denials.append("break-glass refused: it admits only images pinned by digest")
            elif len(needs) > MAX_BREAK_GLASS_DIGESTS:
                denials.append(
                    f"break-glass refused: it admits at most {MAX_BREAK_GLASS_DIGESTS} digests "
                    f"in one request, not {len(needs)}"
                )
            else:
                need = BreakGlassNeed(
                    review.break_glass,
                    break_glass_rule,
                    tuple((digest, tuple(running)) for digest, running in needs.items()),
                )
        return Verdict(False, "; ".join(denials), tuple(warnings), code=403, break_glass=need)
    return Verdict(True, f"every image is promoted to {environment}", tuple(warnings))


def refusal(reason: str) -> Verdict:
    """A denial for a request the webhook could not decide (fail closed)."""
    return Verdict(False, f"conveyor could not decide, so it denies: {reason}", code=403)


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "code": verdict.code if verdict.code >= 400 else 403,
            "reason": "Forbidden",
            "message": verdict.message,
        }
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


__all__ = [
    "API_VERSION",
    "BREAK_GLASS_ANNOTATION",
    "AdmissionRefused",
    "BreakGlassNeed",
    "Container",
    "Governance",
    "Promoted",
    "Review",
    "UserInfo",
    "Verdict",
    "decide",
    "read_review",
    "refusal",
    "review_response",
    "review_uid",
]
