"""GitHub Actions workflows: image sites, and the job/step model the workflow rules read.

Sites: ``jobs.<id>.container`` (a string or ``{image:}``), ``jobs.<id>.services.<n>`` (a
string or ``{image:}``), ``steps[].uses: docker://…``, references in ``run:`` scripts
(``docker run``, ``kubectl set image``, ``helm --set``, ``docker push``), and the ``tags:``
of ``docker/build-push-action`` steps that push.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conveyor.configs import shell, yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite, Location
from conveyor.configs.yamlio import Node

DOCKER_PREFIX = "docker://"
BUILD_PUSH_ACTION = "docker/build-push-action"
# Actions that build images (CV004/CV006): name prefix → tool.
BUILD_ACTIONS = {
    BUILD_PUSH_ACTION: "docker/build-push-action",
    "redhat-actions/buildah-build": "buildah",
    "ko-build/setup-ko": "",  # installs ko; the build is a ``ko`` command
    "aevea/action-kaniko": "kaniko",
    "int128/kaniko-action": "kaniko",
    "mr-smithers-excellent/docker-build-push": "docker build",
    "elgohr/publish-docker-github-action": "docker build",
}
DEPLOY_ACTIONS = (
    "azure/k8s-deploy",
    "azure/webapps-deploy",
    "azure/container-apps-deploy-action",
    "aws-actions/amazon-ecs-deploy-task-definition",
    "aws-actions/amazon-ecs-render-task-definition",
    "google-github-actions/deploy-cloudrun",
    "google-github-actions/deploy-gke",
    "deliverybot/helm",
    "wahyd4/kubectl-helm-action",
    "steebchen/kubectl",
    "actions-hub/kubectl",
    "stefanprodan/kube-tools",
)
# Deploy actions whose inputs name the image to run: action (lowercase) → input names.
DEPLOY_IMAGE_INPUTS = {
    "azure/k8s-deploy": ("images",),
    "azure/webapps-deploy": ("images",),
    "azure/container-apps-deploy-action": ("imageToDeploy",),
    "aws-actions/amazon-ecs-render-task-definition": ("image",),
    "google-github-actions/deploy-cloudrun": ("image",),
}
_SPLIT_TAGS_RE = re.compile(r"[\n,]")


@dataclass
class Step:
    index: int
    line: int
    column: int
    name: str | None
    id: str | None
    uses: str | None
    uses_line: int
    uses_column: int
    with_: dict[str, str]
    run: str | None
    script: shell.ScriptInfo | None
    run_scalar: yamlio.Scalar | None = None


@dataclass
class Job:
    key: str
    line: int
    column: int
    name: str | None
    environment: str | None
    needs: list[str]
    uses: str | None  # a reusable workflow
    uses_line: int
    uses_column: int
    with_: dict[str, str]
    outputs: dict[str, str]
    steps: list[Step] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # every scalar in the job, for expressions


@dataclass
class Workflow:
    jobs: list[Job]


def extract(builder: SiteBuilder, documents: list[Node | None]) -> tuple[list[ImageSite], Workflow]:
    sites: list[ImageSite] = []
    jobs: list[Job] = []
    for index, document in enumerate(documents):
        if not yamlio.is_mapping(document):
            continue
        jobs_node: Node = yamlio.get(document, "jobs")
        pairs = jobs_node.value if yamlio.is_mapping(jobs_node) else []
        for key_node, job_node in pairs:
            key = yamlio.text(key_node)
            if key and yamlio.is_mapping(job_node):
                job = _job(builder, job_node, key, (index, "jobs", key), sites)
                job.line, job.column = yamlio.position(key_node)
                jobs.append(job)
    return sites, Workflow(jobs)


def _scalars(node: Node) -> dict[str, str]:
    result = {}
    for key, value in yamlio.entries(node):
        found = yamlio.text(value)
        if found is not None:
            result[key] = found
    return result


def _job(
    builder: SiteBuilder, node: Node, key: str, where: Location, sites: list[ImageSite]
) -> Job:
    fields = dict(yamlio.own_entries(node))
    line, column = yamlio.position(node)
    uses_node = fields.get("uses")
    uses_line, uses_column = yamlio.position(uses_node) if uses_node is not None else (0, 0)
    environment = fields.get("environment")
    if yamlio.is_mapping(environment):
        environment = yamlio.get(environment, "name")
    needs_node = fields.get("needs")
    needs = (
        [item for item in (yamlio.text(n) for n in yamlio.items(needs_node)) if item]
        if yamlio.is_sequence(needs_node)
        else [n for n in [yamlio.text(needs_node)] if n]
    )
    job = Job(
        key=key,
        line=line,
        column=column,
        name=yamlio.text(fields.get("name")),
        environment=yamlio.text(environment),
        needs=needs,
        uses=yamlio.text(uses_node),
        uses_line=uses_line,
        uses_column=uses_column,
        with_=_scalars(fields.get("with")),
        outputs=_scalars(fields.get("outputs")),
        texts=_all_text(node),
    )
    _container_sites(builder, fields.get("container"), (*where, "container"), "deploy", sites)
    for name, service in yamlio.own_entries(fields.get("services")):
        _container_sites(builder, service, (*where, "services", name), "service", sites)
    for position, step_node in enumerate(yamlio.items(fields.get("steps"))):
        if yamlio.is_mapping(step_node):
            job.steps.append(
                _step(builder, step_node, position, (*where, "steps", position), sites)
            )
    return job


def _all_text(node: Node) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if yamlio.is_mapping(current):
            stack.extend(value for _, value in current.value)
        elif yamlio.is_sequence(current):
            stack.extend(current.value)
        else:
            value = yamlio.text(current)
            if value:
                found.append(value)
    return found


def _container_sites(
    builder: SiteBuilder, node: Node, where: Location, role: str, sites: list[ImageSite]
) -> None:
    if node is None:
        return
    if yamlio.is_mapping(node):
        image = yamlio.get(node, "image")
        site = builder.scalar(image, (*where, "image"), role=role) if image is not None else None
    else:
        site = builder.scalar(node, where, role=role)
    if site is not None:
        sites.append(site)


def _step(
    builder: SiteBuilder, node: Node, position: int, where: Location, sites: list[ImageSite]
) -> Step:
    fields = dict(yamlio.own_entries(node))
    line, column = yamlio.position(node)
    uses_node = fields.get("uses")
    uses = yamlio.text(uses_node)
    uses_line, uses_column = yamlio.position(uses_node) if uses_node is not None else (0, 0)
    run_node = fields.get("run")
    run = yamlio.text(run_node)
    script = None
    found = None
    if run is not None:
        script = shell.analyse(run)
        found = yamlio.scalar(run_node)
        if found is not None:
            sites.extend(builder.script_sites(found, script.references))
    if uses is not None and uses.startswith(DOCKER_PREFIX):
        site = builder.scalar(uses_node, (*where, "uses"), role="action")
        if site is not None:
            sites.append(site)
    with_node = fields.get("with")
    step = Step(
        index=position,
        line=line,
        column=column,
        name=yamlio.text(fields.get("name")),
        id=yamlio.text(fields.get("id")),
        uses=uses,
        uses_line=uses_line,
        uses_column=uses_column,
        with_=_scalars(with_node),
        run=run,
        script=script,
        run_scalar=found,
    )
    action = uses.split("@", 1)[0].lower() if uses else ""
    if action == BUILD_PUSH_ACTION and step.with_.get("push", "").strip().lower() == "true":
        sites.extend(
            _listed(builder, yamlio.get(with_node, "tags"), role="push", via=BUILD_PUSH_ACTION)
        )
    for name in DEPLOY_IMAGE_INPUTS.get(action, ()):
        input_node = yamlio.get(with_node, name)
        if input_node is not None and "\n" not in (yamlio.text(input_node) or "").strip():
            site = builder.scalar(input_node, (*where, "with", name), role="deploy", via=action)
            if site is not None:
                sites.append(site)
        else:
            sites.extend(_listed(builder, input_node, role="deploy", via=action))
    return step


def _listed(builder: SiteBuilder, node: Node, *, role: str, via: str) -> list[ImageSite]:
    """Sites for an input holding several references, one per line or comma-separated."""
    found = yamlio.scalar(node) if node is not None else None
    if found is None:
        return []
    sites = []
    offset = 0
    for piece in _SPLIT_TAGS_RE.split(found.text):
        item = piece.strip()
        start = found.text.find(item, offset) if item else -1
        if item and not item.startswith("#"):
            line, column = builder.locate_in_script(found, max(start, 0), item)
            sites.append(builder.line_site(line, column, item, role=role, via=via))
        offset = max(offset, start + len(item)) if start >= 0 else offset
    return sites
