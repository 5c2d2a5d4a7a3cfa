"""``conveyor lint``: rules over image references and CI workflows, returning findings.

Rules (ids are stable; severities are the defaults, ``conveyor.yaml``'s ``lint.rules`` may
change them or turn a rule ``off``):

    CV001 error    a deployed image reference without a digest
    CV002 error    ``:latest`` or no tag (implicit latest) where an image is deployed, or
                   pushed as its only tag
    CV003 warning  a Dockerfile ``FROM`` (or ``COPY --from``, ``RUN --mount=from=``, an
                   ``ARG`` default used by ``FROM``) image without a digest
    CV004 error    a workflow that builds inside a deploy job, or builds per environment
    CV005 warning  a deploy job that does not take the digest from the build job's outputs
    CV006 warning  an image build without ``git.commit`` + ``ci.run`` labels (or the
                   ``org.opencontainers.image.revision`` label/annotation)
    CV007 warning  a GitHub Action ``uses:`` pinned to a tag or branch, not a commit SHA
    CV008 error    (with an environment) a digest the ledger does not show promoted there
    CV009 error    a Dockerfile image (as CV003) that is ``:latest`` or names no tag
    CV000 warning  a suppression comment without a reason (it suppresses nothing)

A value that cannot be decided statically (``${{ … }}``, ``{{ .Values… }}``, ``$IMAGE``) is an
``info`` finding of the rule that could not decide, never a guess. A finding is suppressed by
``# conveyor: ignore[CV003] reason`` on its line or alone on the line above.

Pure code: files are read here, but nothing touches the network or the ledger; the set of
digests promoted to an environment comes in as a function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.configs import github_actions, kustomize
from conveyor.configs.builder import locate_in_script
from conveyor.configs.extract import ParsedFile, analyse
from conveyor.configs.files import discover, read_source
from conveyor.configs.sites import ConfigFileError, ImageSite, is_dynamic
from conveyor.errors import InputError

SEVERITIES = ("error", "warning", "info")
DOCS_URL = "https://conveyor.dev/docs/lint"

PromotedDigests = Callable[[str], set[str]]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: str
    summary: str
    help: str
    security_severity: float

    @property
    def help_uri(self) -> str:
        return f"{DOCS_URL}#{self.id.lower()}-{self.name}"


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "CV000",
            "suppression-without-reason",
            "warning",
            "A suppression comment gives no reason",
            "Write why the finding is accepted: '# conveyor: ignore[CV001] <reason>'. "
            "Without a reason the comment suppresses nothing.",
            2.0,
        ),
        Rule(
            "CV001",
            "deploy-without-digest",
            "error",
            "Deployed image reference without a digest",
            "A tag can be moved: what runs changes without this file changing, and staging "
            "and production can run different bytes. Pin the reference to its digest "
            "(name:tag@sha256:...) with 'conveyor pin'.",
            7.5,
        ),
        Rule(
            "CV002",
            "mutable-latest",
            "error",
            "Image deployed or pushed as :latest or without a tag",
            "':latest' (or no tag, which means latest) names whatever was pushed last. Use a "
            "version tag and a digest; push a unique tag (commit or version) with latest.",
            8.0,
        ),
        Rule(
            "CV003",
            "base-without-digest",
            "warning",
            "Dockerfile FROM without a digest",
            "Base layers change under a rebuild. Pin FROM to name:tag@sha256:... and update "
            "it on purpose (Dependabot/Renovate keep digests current).",
            5.0,
        ),
        Rule(
            "CV004",
            "rebuild-per-environment",
            "error",
            "Image built inside a deploy job or per environment",
            "Build once, in a build job; deploy that digest everywhere. A rebuild per "
            "environment ships bytes that were never tested and breaks attestations.",
            7.0,
        ),
        Rule(
            "CV005",
            "deploy-not-from-build-digest",
            "warning",
            "Deploy job does not take the digest from the build job",
            "Expose the digest as a build job output (steps.<id>.outputs.digest) and deploy "
            "needs.<build>.outputs.digest instead of re-deriving a tag.",
            5.0,
        ),
        Rule(
            "CV006",
            "build-without-provenance-labels",
            "warning",
            "Image build without git.commit and ci.run labels",
            "Label the image with the commit and CI run "
            "(--label git.commit=$GITHUB_SHA --label ci.run=$GITHUB_RUN_ID, or "
            "org.opencontainers.image.revision) so a digest can be traced to its source.",
            3.0,
        ),
        Rule(
            "CV007",
            "action-not-pinned",
            "warning",
            "GitHub Action not pinned to a commit SHA",
            "Tags and branches of an action can be moved. Pin 'uses:' to the full 40-hex "
            "commit SHA and keep the version in a comment: uses: owner/action@<sha> # v4.1.0",
            5.5,
        ),
        Rule(
            "CV009",
            "base-latest",
            "error",
            "Dockerfile image pulled as :latest or without a tag",
            "':latest' (or no tag, which means latest) is whatever was pushed last: two "
            "builds of one commit can get different layers, and nothing says which. Name a "
            "version tag and pin its digest: FROM name:1.2@sha256:...",
            6.5,
        ),
        Rule(
            "CV008",
            "digest-not-promoted",
            "error",
            "Digest not promoted to the environment",
            "The ledger does not show this digest promoted to the environment; deploy what "
            "was promoted ('conveyor pin --env ENV') or promote it first.",
            8.5,
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    column: int
    reference: str
    message: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "reference": self.reference,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class FileError:
    """A file lint could not read (too big, not UTF-8, hostile or invalid YAML)."""

    file: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "message": self.message}


@dataclass(frozen=True)
class LintSettings:
    """The ``lint:`` section of conveyor.yaml: severity per rule (``off`` drops it) and
    glob patterns of paths not to lint."""

    severities: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files: int = 0
    suppressed: int = 0

    @property
    def exit_code(self) -> int:
        """1 when an ``error`` finding remains or a file could not be read, else 0."""
        failed = self.errors or any(f.severity == "error" for f in self.findings)
        return 1 if failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [finding.to_dict() for finding in self.findings],
            "errors": [error.to_dict() for error in self.errors],
        }


# --- the operation ---------------------------------------------------------------------------


def lint(
    paths: Sequence[Path],
    *,
    settings: LintSettings | None = None,
    environment: str | None = None,
    promoted_digests: PromotedDigests | None = None,
) -> LintReport:
    """Lint every config file under ``paths``. ``promoted_digests(environment)`` gives the
    digests the ledger shows promoted to ``environment`` (CV008 runs only with both)."""
    settings = settings or LintSettings()
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    promoted: set[str] | None = None
    if environment is not None and promoted_digests is not None:
        promoted = {digest.lower() for digest in promoted_digests(environment)}
    report = LintReport()
    found = list(discover(paths, exclude=settings.exclude))
    kustomized = kustomize.placeholders(path for path, _ in found)
    for path, display in found:
        report.files += 1
        try:
            text = read_source(path, display=display)
            parsed = analyse(path, text, display_path=display)
        except ConfigFileError as exc:
            report.errors.append(FileError(display, str(exc)))
            continue
        findings = lint_parsed(
            parsed,
            environment=environment,
            promoted=promoted,
            placeholders=kustomized.get(Path(os.path.abspath(path))),
        )
        kept, suppressed = _apply_suppressions(parsed, findings)
        report.suppressed += suppressed
        report.findings.extend(_configure(kept, settings))
    return report


def lint_text(
    name: str,
    text: str,
    *,
    kind: str | None = None,
    environment: str | None = None,
    promoted: set[str] | None = None,
    settings: LintSettings | None = None,
) -> list[Finding]:
    """Findings for one file's ``text`` (tests and editors); suppressions apply."""
    parsed = analyse(Path(name), text, display_path=name, kind=kind)
    kept, _ = _apply_suppressions(
        parsed, lint_parsed(parsed, environment=environment, promoted=promoted)
    )
    return list(_configure(kept, settings or LintSettings()))


def lint_parsed(
    parsed: ParsedFile,
    *,
    environment: str | None = None,
    promoted: set[str] | None = None,
    placeholders: Mapping[str, Path] | None = None,
) -> list[Finding]:
    """``placeholders``: image names a kustomization that builds this file sets (its
    ``images:`` entry is judged instead; see ``kustomize.placeholders``)."""
    findings: list[Finding] = []
    pushes = [site for site in parsed.sites if site.role == "push"]
    for site in parsed.sites:
        if placeholders and kustomize.is_placeholder(site, placeholders):
            continue
        resolved = _step_output(parsed, site)
        if resolved is None and site.dynamic:
            resolved = site.default  # a Dockerfile reference with its ARG defaults
        findings.extend(_site_findings(site, pushes, resolved))
        if promoted is not None and environment is not None:
            findings.extend(_promotion_findings(site, environment, promoted))
    if parsed.workflow is not None:
        findings.extend(_workflow_findings(parsed, parsed.workflow))
    findings.sort(key=lambda f: (f.line, f.column, f.rule))
    return findings


# --- reference shapes -----------------------------------------------------------------------

_EXPRESSION_RE = re.compile(
    r"\$\{\{.*?\}\}|\{\{.*?\}\}|\$\{[^}]*\}|\$\([^)]*\)|\$[A-Za-z_][A-Za-z0-9_]*|<%.*?%>"
)
_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_SHA_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Shape:
    """What can be said of a reference without rendering it."""

    decided: bool  # False: a variable could hold a tag or digest we cannot see
    digest: bool  # a digest is written (possibly as an expression after '@')
    tag: str | None  # the tag text as written (may hold an expression)
    latest: bool  # tag is 'latest', or no tag at all (implicit latest)
    problem: str | None = None  # unparseable


def shape(reference: str) -> Shape:
    """Split ``reference`` into name/tag/digest as written, masking ``${{ }}``/``$VAR`` so a
    ':' or '@' inside them is not read as a separator."""
    text = reference.removeprefix("docker://").strip()
    masked = _EXPRESSION_RE.sub(lambda m: "\0" * len(m.group(0)), text)
    if not masked.strip("\0"):
        return Shape(decided=False, digest=False, tag=None, latest=False)
    at = masked.rfind("@")
    if at >= 0:
        return Shape(decided=True, digest=True, tag=None, latest=False)
    slash = masked.rfind("/")
    colon = masked.find(":", slash + 1)
    if colon >= 0:
        tag = text[colon + 1 :]
        return Shape(decided=True, digest=False, tag=tag, latest=tag == "latest")
    last = masked[slash + 1 :]
    if "\0" in last:
        # ``registry/$NAME`` or ``${IMAGE}``: the variable may carry ':tag' or '@digest'.
        return Shape(decided=False, digest=False, tag=None, latest=False)
    return Shape(decided=True, digest=False, tag=None, latest=True)


def _static_problem(reference: str) -> str | None:
    from conveyor.errors import InvalidReferenceError
    from conveyor.oci.name import Reference

    try:
        Reference.parse(reference.removeprefix("docker://"))
    except InvalidReferenceError as exc:
        return str(exc)
    return None


# --- image rules -----------------------------------------------------------------------------


def _finding(
    site: ImageSite, rule: str, message: str, fix: str | None, severity: str = ""
) -> Finding:
    return Finding(
        rule=rule,
        severity=severity or RULES[rule].severity,
        file=site.display_path,
        line=site.line,
        column=site.column,
        reference=site.reference,
        message=message,
        fix=fix,
    )


def _pin_fix(site: ImageSite) -> str:
    if site.form == "helm-split":
        return (
            f"add 'digest: sha256:<digest>' beside 'repository' (conveyor pin {site.display_path})"
        )
    if site.form == "kustomize":
        return (
            f"add 'digest: sha256:<digest>' to this images entry (conveyor pin {site.display_path})"
        )
    if site.role == "base":
        written = {"ARG": "ARG …=", "COPY --from": "COPY --from=", "RUN --mount": "from="}
        prefix = written.get(site.via or "", "FROM ")
        return f"{prefix}{site.reference}@sha256:<digest> (conveyor pin {site.display_path})"
    name = site.reference.removeprefix("docker://")
    return f"{name}@sha256:<digest> (conveyor pin {site.display_path})"


_STEP_OUTPUT_RE = re.compile(r"\$\{\{\s*steps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)\s*\}\}")


def _step_output(parsed: ParsedFile, site: ImageSite) -> str | None:
    """What ``${{ steps.X.outputs.Y }}`` holds when step X of the same job writes
    ``Y=<value>`` to $GITHUB_OUTPUT exactly once (followed in the file, not guessed)."""
    if parsed.workflow is None or site.location is None or len(site.location) < 3:
        return None
    match = _STEP_OUTPUT_RE.fullmatch(site.reference.strip())
    if match is None:
        return None
    step_id, output = match.groups()
    job = next((j for j in parsed.workflow.jobs if j.key == site.location[2]), None)
    step = next((s for s in job.steps if s.id == step_id), None) if job else None
    if step is None or not step.run:
        return None
    written = re.findall(
        rf"""(?m)\b{re.escape(output)}=["']?([^"'\s>]+)["']?\s*>>\s*"?\$\{{?GITHUB_OUTPUT""",
        step.run,
    )
    return written[0] if len(written) == 1 else None


def _site_findings(
    site: ImageSite, pushes: list[ImageSite], resolved: str | None = None
) -> list[Finding]:
    if site.via == "helm --set":
        return _helm_set_findings(site)
    form = shape(resolved if resolved is not None else site.reference)
    if site.role == "base":
        return _base_findings(site, form, resolved)
    if site.role == "push":
        return _push_findings(site, form, pushes)
    what = {
        "service": "service container",
        "action": "Docker action",
    }.get(site.role, "deployed image")
    if not form.decided:
        return [
            _finding(
                site,
                "CV001",
                f"{what} reference {site.reference!r} cannot be decided statically (a "
                "variable or template may or may not carry a digest); check the rendered "
                "value, or pin where the variable is set",
                None,
                severity="info",
            )
        ]
    if form.digest:
        return []
    if not site.dynamic and resolved is None:
        problem = _static_problem(site.reference)
        if problem is not None:
            return [
                _finding(
                    site,
                    "CV001",
                    f"{what} reference does not parse ({problem}); it cannot be checked",
                    None,
                    severity="info",
                )
            ]
    findings = []
    helm_default = site.form == "helm-split" and form.tag is None
    if form.latest and not helm_default:
        tag_text = "names no tag (implicit :latest)" if form.tag is None else "uses :latest"
        findings.append(
            _finding(
                site,
                "CV002",
                f"{what} {site.reference!r} {tag_text}: it runs whatever was pushed last; "
                "deploy a version tag pinned to its digest",
                "name a version tag and pin its digest: " + _pin_fix(site),
            )
        )
    if helm_default:
        message = (
            f"{what} {site.reference!r} has no digest (the tag defaults to the chart's "
            "appVersion); add the digest so the same bytes run everywhere"
        )
    elif form.tag is None:
        message = (
            f"{what} {site.reference!r} names neither a tag nor a digest: it pulls whatever "
            "'latest' is at deploy time; pin it to name:tag@sha256:…"
        )
    else:
        message = (
            f"{what} {site.reference!r} is referenced by tag, not digest: the tag can move "
            "under you; pin it to name:tag@sha256:…"
        )
    if resolved is not None:
        message += f" (the step output resolves to {resolved!r})"
    findings.append(_finding(site, "CV001", message, _pin_fix(site)))
    return findings


def _helm_set_findings(site: ImageSite) -> list[Finding]:
    values = dict(part.split("=", 1) for part in site.reference.split(",") if "=" in part)
    if any(key.endswith(".digest") and value for key, value in values.items()):
        return []
    whole = [value for key, value in values.items() if not key.rpartition(".")[0]]
    if len(values) == 1 and whole:
        # --set image=<full reference>
        form = shape(whole[0])
        if not form.decided:
            return [
                _finding(
                    site,
                    "CV001",
                    f"helm --set {site.reference!r} cannot be decided statically",
                    None,
                    severity="info",
                )
            ]
        if form.digest:
            return []
    tags = [value for key, value in values.items() if key.endswith(".tag")]
    findings = []
    if any(tag == "latest" for tag in tags):
        findings.append(
            _finding(
                site,
                "CV002",
                f"helm deploys {site.reference!r}: ':latest' runs whatever was pushed last",
                "set image.digest to the build's digest",
            )
        )
    findings.append(
        _finding(
            site,
            "CV001",
            f"helm deploys by tag ({site.reference!r}) without image.digest: the tag can "
            "move; pass --set image.digest=<digest from the build job>",
            "--set image.digest=${{ needs.build.outputs.digest }}",
        )
    )
    return findings


_BASE_WHAT = {
    "FROM": "base image",
    "ARG": "base image (the default of an ARG that FROM uses)",
    "COPY --from": "image copied from (COPY --from)",
    "RUN --mount": "image mounted (RUN --mount from=)",
}


def _base_findings(site: ImageSite, form: Shape, resolved: str | None = None) -> list[Finding]:
    what = _BASE_WHAT.get(site.via or "", "base image")
    if not form.decided:
        return [
            _finding(
                site,
                "CV003",
                f"{what} {site.reference!r} is chosen by a build argument; it cannot be "
                "decided statically — pin the ARG default and the value CI passes",
                None,
                severity="info",
            )
        ]
    if form.digest:
        return []
    shown = site.reference if resolved is None else f"{site.reference} (= {resolved})"
    # With ARG defaults the fix is in the ARG lines, which CI may override.
    fix = _pin_fix(site) if resolved is None else "pin the ARG defaults (and what CI passes)"
    findings = []
    if form.latest:
        tag_text = "names no tag (implicit :latest)" if form.tag is None else "uses :latest"
        findings.append(
            _finding(
                site,
                "CV009",
                f"{what} {shown!r} {tag_text}: it is whatever was pushed last, so two builds "
                "of one commit can differ; name a version tag and pin its digest",
                fix,
            )
        )
    findings.append(
        _finding(
            site,
            "CV003",
            f"{what} {shown!r} has no digest: a rebuild can pull different layers",
            fix,
        )
    )
    return findings


def _repository(reference: str) -> str:
    masked = _EXPRESSION_RE.sub(lambda m: "\0" * len(m.group(0)), reference)
    slash = masked.rfind("/")
    colon = masked.find(":", slash + 1)
    return reference[:colon] if colon >= 0 else reference


def _push_findings(site: ImageSite, form: Shape, pushes: list[ImageSite]) -> list[Finding]:
    if not form.decided or not form.latest:
        return []
    name = _repository(site.reference)
    for other in pushes:
        if other is site or _repository(other.reference) != name:
            continue
        other_form = shape(other.reference)
        if not other_form.decided or not other_form.latest:
            return []  # another, unique tag of the same image is pushed too
    tag_text = "with no tag (implicit :latest)" if form.tag is None else "as :latest"
    return [
        _finding(
            site,
            "CV002",
            f"{site.reference!r} is pushed {tag_text} only: nothing identifies this build "
            "later; push a unique tag (commit SHA or version) and deploy by digest",
            f"also push {name}:${{{{ github.sha }}}} and record the digest",
        )
    ]


def _promotion_findings(site: ImageSite, environment: str, promoted: set[str]) -> list[Finding]:
    if site.role not in ("deploy", "service", "action"):
        return []
    found = _DIGEST_RE.search(site.reference.lower())
    if found is None or is_dynamic(found.group(0)):
        return []
    digest = found.group(1)
    if digest in promoted:
        return []
    return [
        _finding(
            site,
            "CV008",
            f"{digest[:19]}… is not promoted to {environment!r} in the ledger: this file "
            "would deploy an artifact that has not passed that environment's gates",
            f"conveyor pin --env {environment} {site.display_path}",
        )
    ]


# --- workflow rules --------------------------------------------------------------------------

_DEPLOY_WORDS = frozenset({"deploy", "deployment", "deploys", "staging", "production", "prod"})
_ENVIRONMENT_WORDS = {
    "staging": "staging",
    "stage": "staging",
    "stg": "staging",
    "production": "production",
    "prod": "production",
    "prd": "production",
}
_TEST_CLUSTER_ACTIONS = ("helm/kind-action", "engineerd/setup-kind", "medyagh/setup-minikube")
_TEST_CLUSTER_RE = re.compile(r"\b(?:kind create cluster|kind load|k3d cluster|minikube start)\b")
_PROVENANCE_LABEL_RE = re.compile(r"org\.opencontainers\.image\.revision", re.IGNORECASE)
_NEEDS_OUTPUT_RE = re.compile(r"needs\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)")
_METADATA_ACTION = "docker/metadata-action"


def _words(text: str | None) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", text.lower())) if text else set()


@dataclass
class _Build:
    job: github_actions.Job
    step: github_actions.Step
    line: int
    column: int
    tool: str
    metadata: str  # labels/annotations text
    pushes: bool


def _builds(parsed: ParsedFile, job: github_actions.Job) -> list[_Build]:
    builds = []
    metadata_steps = {
        step.id
        for step in job.steps
        if step.id and step.uses and step.uses.split("@", 1)[0] == _METADATA_ACTION
    }
    for step in job.steps:
        action = step.uses.split("@", 1)[0] if step.uses else None
        if action and github_actions.BUILD_ACTIONS.get(action):
            metadata = " ".join(
                step.with_.get(key, "") for key in ("labels", "annotations", "build-args")
            )
            for step_id in metadata_steps:
                if f"steps.{step_id}.outputs.labels" in metadata:
                    metadata += " org.opencontainers.image.revision"  # metadata-action sets it
            pushes = step.with_.get("push", "").strip().lower() == "true"
            builds.append(_Build(job, step, step.line, step.column, action, metadata, pushes))
        if step.script is not None and step.run_scalar is not None:
            for command in step.script.builds:
                needle = (step.run or "")[command.offset :].split("\n", 1)[0][:40].rstrip("\\ ")
                line, column = locate_in_script(
                    parsed.lines, step.run_scalar, command.offset, needle
                )
                builds.append(
                    _Build(
                        job,
                        step,
                        line,
                        column,
                        command.tool,
                        " ".join(command.labels),
                        command.pushes,
                    )
                )
    return builds


def _is_deploy_job(job: github_actions.Job) -> bool:
    if _words(job.key) & _DEPLOY_WORDS or _words(job.name) & _DEPLOY_WORDS:
        return True
    if job.environment:
        return True
    test_cluster = any(
        step.uses and step.uses.split("@", 1)[0] in _TEST_CLUSTER_ACTIONS for step in job.steps
    ) or any(step.run and _TEST_CLUSTER_RE.search(step.run) for step in job.steps)
    if test_cluster:
        return False
    for step in job.steps:
        if step.script is not None and step.script.deploys:
            return True
        action = step.uses.split("@", 1)[0].lower() if step.uses else ""
        if action in github_actions.DEPLOY_ACTIONS:
            return True
    return False


def _environments_named(job: github_actions.Job) -> set[str]:
    words = _words(job.key) | _words(job.name) | _words(job.environment)
    return {_ENVIRONMENT_WORDS[word] for word in words if word in _ENVIRONMENT_WORDS}


def _workflow_findings(parsed: ParsedFile, workflow: github_actions.Workflow) -> list[Finding]:
    findings: list[Finding] = []
    file = parsed.display_path
    builds_by_job = {job.key: _builds(parsed, job) for job in workflow.jobs}
    build_jobs = {key for key, builds in builds_by_job.items() if builds}
    # A reusable-workflow job that says it builds, or any job exporting a digest.
    build_jobs |= {
        job.key
        for job in workflow.jobs
        if (job.uses and "build" in _words(job.key) | _words(job.name))
        or any("digest" in name.lower() for name in job.outputs)
    }
    # CV004: a build inside a deploy job; builds in jobs named for different environments.
    per_environment: dict[str, _Build] = {}
    for job in workflow.jobs:
        builds = builds_by_job[job.key]
        if builds and _is_deploy_job(job):
            first = builds[0]
            findings.append(
                Finding(
                    "CV004",
                    RULES["CV004"].severity,
                    file,
                    first.line,
                    first.column,
                    first.tool,
                    f"job {job.key!r} builds an image ({first.tool}) and deploys it: every "
                    "run of this deploy job ships freshly built, untested bytes; build in a "
                    "build job and deploy its digest",
                    "move the build to a separate job; pass needs.<build>.outputs.digest",
                )
            )
        for environment in _environments_named(job) if builds else ():
            per_environment.setdefault(environment, builds[0])
    if len(per_environment) > 1:
        ordered = sorted(per_environment.values(), key=lambda b: (b.line, b.column))
        flagged = {(f.line, f.column) for f in findings if f.rule == "CV004"}
        for build in ordered[1:]:
            if (build.line, build.column) in flagged:
                continue
            findings.append(
                Finding(
                    "CV004",
                    RULES["CV004"].severity,
                    file,
                    build.line,
                    build.column,
                    build.tool,
                    f"the image is built again for another environment (job "
                    f"{build.job.key!r}); promote the digest built once instead",
                    "build once; promote the digest (conveyor promote) to each environment",
                )
            )
    # CV005: a deploy job after a build job that does not use the build's digest output.
    for job in workflow.jobs:
        if job.key in build_jobs or not _is_deploy_job(job):
            continue
        upstream = [name for name in job.needs if name in build_jobs]
        if not upstream:
            continue
        if _uses_digest_output(job, workflow, upstream):
            continue
        findings.append(
            Finding(
                "CV005",
                RULES["CV005"].severity,
                file,
                job.line,
                job.column,
                job.key,
                f"deploy job {job.key!r} needs build job {upstream[0]!r} but does not take "
                "the image digest from its outputs (a tag re-derived from github.sha can be "
                "moved or rebuilt)",
                f"deploy ${{{{ needs.{upstream[0]}.outputs.digest }}}}",
            )
        )
    # CV006: builds without commit and CI-run labels.
    for builds in builds_by_job.values():
        for build in builds:
            if _has_provenance_labels(build.metadata):
                continue
            findings.append(
                Finding(
                    "CV006",
                    RULES["CV006"].severity,
                    file,
                    build.line,
                    build.column,
                    build.tool,
                    f"image build ({build.tool}) without git.commit and ci.run labels: the "
                    "digest cannot be traced to its commit and CI run",
                    "--label git.commit=${{ github.sha }} --label ci.run=${{ github.run_id }}",
                )
            )
    # CV007: actions not pinned to a commit.
    for job in workflow.jobs:
        candidates = [(job.uses, job.uses_line, job.uses_column)] + [
            (step.uses, step.uses_line, step.uses_column) for step in job.steps
        ]
        for uses, line, column in candidates:
            if not uses or uses.startswith(("./", "docker://")):
                continue
            _, at, version = uses.partition("@")
            if at and _SHA_RE.fullmatch(version):
                continue
            pinned = f"'{version}'" if at else "nothing"
            findings.append(
                Finding(
                    "CV007",
                    RULES["CV007"].severity,
                    file,
                    line,
                    column,
                    uses,
                    f"action {uses!r} is pinned to {pinned}, not a commit SHA: the code it "
                    "runs can change",
                    f"{uses.partition('@')[0]}@<40-hex commit sha> # {version or 'version'}",
                )
            )
    return findings


def _uses_digest_output(
    job: github_actions.Job, workflow: github_actions.Workflow, upstream: list[str]
) -> bool:
    jobs = {other.key: other for other in workflow.jobs}
    for text in job.texts + list(job.with_.values()):
        for match in _NEEDS_OUTPUT_RE.finditer(text):
            name, output = match.groups()
            if name not in upstream:
                continue
            source = jobs[name].outputs.get(output, "") if name in jobs else ""
            if "digest" in output.lower() or "digest" in source.lower():
                return True
    return False


def _has_provenance_labels(metadata: str) -> bool:
    if _PROVENANCE_LABEL_RE.search(metadata):
        return True
    return "git.commit" in metadata and "ci.run" in metadata


# --- suppressions and configuration ----------------------------------------------------------

_SUPPRESSION_RE = re.compile(r"#\s*conveyor:\s*ignore\[([^\]]*)\](.*)$")


def _apply_suppressions(parsed: ParsedFile, findings: list[Finding]) -> tuple[list[Finding], int]:
    """Drop findings suppressed with a reason; report suppressions without one (CV000)."""
    lines = parsed.lines
    marks: dict[int, tuple[set[str], bool, int]] = {}
    extra: list[Finding] = []
    for number, line in enumerate(lines, start=1):
        if "conveyor:" not in line:
            continue
        match = _SUPPRESSION_RE.search(line)
        if match is None:
            continue
        rules = {part.strip().upper() for part in match.group(1).split(",") if part.strip()}
        reason = match.group(2).strip()
        column = match.start() + 1
        if not reason:
            extra.append(
                Finding(
                    "CV000",
                    RULES["CV000"].severity,
                    parsed.display_path,
                    number,
                    column,
                    match.group(0),
                    f"suppression of {', '.join(sorted(rules)) or 'nothing'} gives no reason; "
                    "it suppresses nothing",
                    f"# conveyor: ignore[{','.join(sorted(rules))}] <why this is acceptable>",
                )
            )
            continue
        alone = not line[: match.start()].strip()
        marks[number] = (rules, alone, column)
    kept: list[Finding] = []
    suppressed = 0
    for finding in findings:
        same = marks.get(finding.line)
        above = marks.get(finding.line - 1)
        if (same and finding.rule in same[0]) or (above and above[1] and finding.rule in above[0]):
            suppressed += 1
            continue
        kept.append(finding)
    kept.extend(extra)
    kept.sort(key=lambda f: (f.line, f.column, f.rule))
    return kept, suppressed


def _configure(findings: Iterable[Finding], settings: LintSettings) -> Iterable[Finding]:
    for finding in findings:
        if finding.severity == "info":
            if settings.severities.get(finding.rule) != "off":
                yield finding
            continue
        severity = settings.severities.get(finding.rule, finding.severity)
        if severity == "off":
            continue
        if severity != finding.severity:
            finding = Finding(
                finding.rule,
                severity,
                finding.file,
                finding.line,
                finding.column,
                finding.reference,
                finding.message,
                finding.fix,
            )
        yield finding
