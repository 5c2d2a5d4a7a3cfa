"""Image references in shell scripts: CI ``run:``/``script:`` blocks and ``*.sh`` files.

A small tokenizer (quotes, ``${{ … }}``, ``$(…)``, line continuations, comments, ``;``,
``&&``, ``|``) splits the script into commands; no shell is run. Recognised:

- deploys: ``docker run``, ``podman run``, ``kubectl|oc set image``, ``helm upgrade|install``
  with ``--set …image…=``;
- pushes: ``docker push``, ``docker buildx build --push -t``;
- builds (for the workflow rules): ``docker build``, ``docker buildx build``, ``podman build``,
  ``buildah bud|build``, ``ko build|publish|resolve|apply``, the kaniko executor, ``pack build``;
- deploy commands (for the workflow rules): ``helm upgrade|install``, ``kubectl
  apply|set|rollout|create|replace|patch``, ``az webapp|containerapp``, ``gcloud run deploy``,
  ``aws ecs``, ``kustomize``, ``argocd app``, ``flux``, ``skaffold run|deploy``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PIECE_RE = re.compile(
    r"""
      (?P<comment>\#[^\n]*)
    | (?P<continuation>\\\n)
    | (?P<sep>&&|\|\||[;&|\n()`])
    | (?P<space>[ \t\r]+)
    | (?P<expr>\$\{\{.*?\}\})
    | (?P<dq>"(?:[^"\\]|\\.)*"?)
    | (?P<sq>'[^']*'?)
    | (?P<sub>\$\([^()\n]*\))
    | (?P<var>\$\{[^}\n]*\}?)
    | (?P<word>[^\s;&|()`"'$\\\#]+|[$\\\#])
    """,
    re.VERBOSE | re.DOTALL,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# docker/podman run options that take a value (the next word when not written with '=').
_RUN_VALUE_OPTIONS = _words(
    """
    -a -c -e -h -l -m -p -u -v -w --add-host --annotation --attach --blkio-weight --cap-add
    --cap-drop --cgroup-parent --cgroupns --cidfile --cpu-period --cpu-quota --cpu-shares
    --cpus --cpuset-cpus --cpuset-mems --device --device-cgroup-rule --dns --dns-option
    --dns-search --domainname --entrypoint --env --env-file --expose --gpus --group-add
    --health-cmd --health-interval --health-retries --health-start-period --health-timeout
    --hostname --ip --ip6 --ipc --isolation --kernel-memory --label --label-file --link
    --log-driver --log-opt --mac-address --memory --memory-reservation --memory-swap
    --memory-swappiness --mount --name --network --net --network-alias --oom-score-adj --pid
    --pids-limit --platform --publish --pull --restart --runtime --security-opt --shm-size
    --stop-signal --stop-timeout --storage-opt --sysctl --tmpfs --ulimit --user --userns --uts
    --volume --volume-driver --volumes-from --workdir --arch --os --secret --userns-mode
    """
)
_KUBECTL_VALUE_OPTIONS = _words(
    """
    -n --namespace -l --selector -f --filename -o --output --context --cluster --kubeconfig
    --field-manager --template -c --container --dry-run
    """
)
_WRAPPERS = frozenset({"sudo", "time", "exec", "command", "nohup", "env", "xargs", "eval"})
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Word:
    text: str  # quotes removed
    raw: str  # as written
    offset: int  # in the script


@dataclass(frozen=True)
class ScriptReference:
    """An image named by a command: ``reference`` is what lint judges, ``locate`` the text
    (as written) to find in the source for line and column, ``offset`` where it starts in
    the script."""

    reference: str
    locate: str
    offset: int
    role: str  # "deploy" | "push"
    via: str


@dataclass(frozen=True)
class BuildCommand:
    tool: str  # "docker build", "buildah", "ko", "kaniko", "pack"
    offset: int
    labels: tuple[str, ...]  # --label/--annotation values and other build metadata text
    tags: tuple[str, ...]
    pushes: bool


@dataclass
class ScriptInfo:
    references: list[ScriptReference] = field(default_factory=list)
    builds: list[BuildCommand] = field(default_factory=list)
    deploys: list[str] = field(default_factory=list)  # the deploy commands seen ("helm", …)


def _unquote(raw: str) -> str:
    out: list[str] = []
    for match in _PIECE_RE.finditer(raw):
        piece = match.group(0)
        if match.lastgroup == "dq":
            out.append(piece[1:-1] if piece.endswith('"') and len(piece) > 1 else piece[1:])
        elif match.lastgroup == "sq":
            out.append(piece[1:-1] if piece.endswith("'") and len(piece) > 1 else piece[1:])
        else:
            out.append(piece)
    return "".join(out)


def commands(script: str) -> list[list[Word]]:
    """The simple commands of ``script`` as lists of words (quotes removed)."""
    result: list[list[Word]] = []
    current: list[Word] = []
    start = -1
    end = 0
    for match in _PIECE_RE.finditer(script):
        kind = match.lastgroup
        if kind in ("expr", "dq", "sq", "sub", "var", "word"):
            if start < 0:
                start = match.start()
            end = match.end()
            continue
        if start >= 0:
            raw = script[start:end]
            current.append(Word(_unquote(raw), raw, start))
            start = -1
        if kind == "sep" and current:
            result.append(current)
            current = []
    if start >= 0:
        raw = script[start:end]
        current.append(Word(_unquote(raw), raw, start))
    if current:
        result.append(current)
    return result


_SUBSTITUTION_RE = re.compile(r"\$\(([^()\n]*)\)")


def analyse(script: str) -> ScriptInfo:
    """References, builds and deploy commands in ``script`` (and in its ``$(…)``)."""
    info = ScriptInfo()
    for words in commands(script):
        words = _strip_prefix(words)
        if words:
            _command(words, info)
    if "$(" in script:
        for match in _SUBSTITUTION_RE.finditer(script):
            inner = analyse(match.group(1))
            shift = match.start(1)
            info.references.extend(
                ScriptReference(r.reference, r.locate, r.offset + shift, r.role, r.via)
                for r in inner.references
            )
            info.builds.extend(
                BuildCommand(b.tool, b.offset + shift, b.labels, b.tags, b.pushes)
                for b in inner.builds
            )
            info.deploys.extend(inner.deploys)
    return info


def _strip_prefix(words: list[Word]) -> list[Word]:
    index = 0
    while index < len(words) and (
        words[index].text in _WRAPPERS or _ASSIGNMENT_RE.match(words[index].text)
    ):
        index += 1
    return words[index:]


def _program(word: Word) -> str:
    return word.text.rsplit("/", 1)[-1]


def _command(words: list[Word], info: ScriptInfo) -> None:
    program = _program(words[0])
    args = words[1:]
    names = [word.text for word in args]
    if program in ("docker", "podman", "nerdctl"):
        _container_tool(program, words[0].offset, args, names, info)
    elif program in ("kubectl", "oc"):
        if names[:2] == ["set", "image"]:
            _set_image(program, args[2:], info)
        elif names[:2] == ["create", "deployment"] or names[:1] == ["run"]:
            _image_option(
                args, info, f"{program} {' '.join(names[: 2 if names[0] == 'create' else 1])}"
            )
        if names and names[0] in ("apply", "set", "rollout", "create", "replace", "patch"):
            info.deploys.append(f"{program} {names[0]}")
    elif program in ("helm", "helmfile"):
        if names and names[0] in ("upgrade", "install", "sync", "apply"):
            info.deploys.append(f"{program} {names[0]}")
            if program == "helm":
                _helm_set(args, info)
    elif program == "buildah" and names and names[0] in ("bud", "build", "build-using-dockerfile"):
        _build("buildah", words[0].offset, args[1:], info)
    elif program == "ko" and names and names[0] in ("build", "publish", "resolve", "apply"):
        _build("ko", words[0].offset, args[1:], info)
        if names[0] == "apply":
            info.deploys.append("ko apply")
    elif program in ("executor", "kaniko") or "kaniko" in words[0].text:
        _build("kaniko", words[0].offset, args, info)
    elif program == "pack" and names[:1] == ["build"]:
        _build("pack", words[0].offset, args[1:], info)
    elif program == "az" and names[:2] == ["acr", "build"]:
        _build("az acr build", words[0].offset, args[2:], info, pushes=True)
    elif program == "az" and names and names[0] in ("webapp", "containerapp", "aks"):
        info.deploys.append(f"az {names[0]}")
    elif program == "gcloud" and "deploy" in names:
        info.deploys.append("gcloud deploy")
    elif program == "aws" and names and names[0] in ("ecs", "eks", "lambda", "apprunner"):
        if any(name.startswith(("update", "deploy", "register", "create")) for name in names):
            info.deploys.append(f"aws {names[0]}")
    elif program == "kustomize" and names[:3] == ["edit", "set", "image"]:
        _set_image(program, args[3:], info, via="kustomize edit set image")
        info.deploys.append("kustomize edit set image")
    elif (
        (program == "argocd" and names[:1] == ["app"])
        or (program == "flux" and names[:1] in (["reconcile"], ["create"]))
        or (program == "skaffold" and names[:1] in (["run"], ["deploy"]))
    ):
        info.deploys.append(program)


def _container_tool(
    program: str, start: int, args: list[Word], names: list[str], info: ScriptInfo
) -> None:
    """``start``: where the program word begins (findings point at ``docker build``)."""
    if names[:1] == ["container"] or names[:1] == ["image"]:
        args, names = args[1:], names[1:]
    if not names:
        return
    verb = names[0]
    rest = args[1:]
    if verb == "run" or verb == "create":
        image = _first_operand(rest, _RUN_VALUE_OPTIONS)
        if image is not None:
            _reference(info, image, "deploy", f"{program} run")
            # The container's own command (``docker run … kustomize edit set image …``).
            inner = _strip_prefix(rest[rest.index(image) + 1 :])
            if inner:
                _command(inner, info)
    elif verb == "push":
        if any(word.text in ("-a", "--all-tags") for word in rest):
            return
        image = _first_operand(rest, frozenset({"--platform"}))
        if image is not None:
            _reference(info, image, "push", f"{program} push")
    elif verb == "build":
        _build(f"{program} build", start, rest, info)
    elif verb == "buildx" and names[1:2] in (["build"], ["b"]):
        _build(f"{program} build", start, args[2:], info)


def _first_operand(args: list[Word], value_options: frozenset[str]) -> Word | None:
    skip = False
    for word in args:
        if skip:
            skip = False
            continue
        text = word.text
        if text.startswith("-") and len(text) > 1:
            if "=" not in text and text in value_options:
                skip = True
            continue
        return word
    return None


def _reference(info: ScriptInfo, word: Word, role: str, via: str) -> None:
    if not word.text:
        return
    info.references.append(ScriptReference(word.text, _locate(word), word.offset, role, via))


def _locate(word: Word) -> str:
    raw = word.raw
    return raw[1:] if raw[:1] in ("'", '"') else raw


def _image_option(args: list[Word], info: ScriptInfo, via: str) -> None:
    for index, word in enumerate(args):
        if word.text == "--image" and index + 1 < len(args):
            _reference(info, args[index + 1], "deploy", via)
        elif word.text.startswith("--image="):
            located = word.raw.split("=", 1)[1]
            offset = word.offset + len(word.raw) - len(located)
            info.references.append(
                ScriptReference(
                    word.text.split("=", 1)[1], located.strip("'\""), offset, "deploy", via
                )
            )


def _set_image(program: str, args: list[Word], info: ScriptInfo, *, via: str | None = None) -> None:
    skip = False
    for word in args:
        if skip:
            skip = False
            continue
        text = word.text
        if text.startswith("-"):
            skip = "=" not in text and text in _KUBECTL_VALUE_OPTIONS
            continue
        name, equals, image = text.partition("=")
        if equals and name and image:
            located = word.raw.split("=", 1)[1]
            offset = word.offset + len(word.raw) - len(located)
            info.references.append(
                ScriptReference(
                    image, located.strip("'\""), offset, "deploy", via or f"{program} set image"
                )
            )


def _helm_set(args: list[Word], info: ScriptInfo) -> None:
    values: list[tuple[str, str, Word]] = []
    index = 0
    while index < len(args):
        text = args[index].text
        if text in ("--set", "--set-string"):
            if index + 1 < len(args):
                values.extend(_set_pairs(args[index + 1]))
            index += 2
            continue
        if text.startswith(("--set=", "--set-string=")):
            values.extend(_set_pairs(args[index], prefix=len(text.split("=", 1)[0]) + 1))
        index += 1
    groups: dict[str, dict[str, tuple[str, Word]]] = {}
    for key, value, word in values:
        lower = key.lower()
        if lower.endswith("image") or lower == "image":
            _reference(info, Word(value, value, word.offset), "deploy", "helm --set")
            continue
        prefix, _, leaf = key.rpartition(".")
        if "image" not in prefix.lower().rsplit(".", 1)[-1]:
            continue
        if leaf in ("tag", "repository", "digest", "registry"):
            groups.setdefault(prefix, {})[leaf] = (value, word)
    for prefix, parts in groups.items():
        if "tag" not in parts and "digest" not in parts:
            continue
        anchor_value, anchor_word = parts.get("tag") or parts["digest"]
        shown = ",".join(f"{prefix}.{leaf}={parts[leaf][0]}" for leaf in sorted(parts))
        info.references.append(
            ScriptReference(shown, anchor_value, anchor_word.offset, "deploy", "helm --set")
        )


def _set_pairs(word: Word, *, prefix: int = 0) -> list[tuple[str, str, Word]]:
    text = word.text[prefix:]
    pairs = []
    for part in re.split(r"(?<!\\),", text):
        key, equals, value = part.partition("=")
        if equals:
            pairs.append((key.strip(), value.replace("\\,", ","), word))
    return pairs


def _build(
    tool: str, offset: int, args: list[Word], info: ScriptInfo, *, pushes: bool = False
) -> None:
    labels: list[str] = []
    tags: list[Word] = []
    index = 0
    while index < len(args):
        word = args[index]
        option, equals, inline = word.text.partition("=")
        if option in _BUILD_METADATA_OPTIONS:
            if equals:
                value = Word(inline, word.raw.split("=", 1)[1], word.offset + len(option) + 1)
            elif index + 1 < len(args):
                value = args[index + 1]
            else:
                value = Word("", "", word.offset)
            if option in ("--tag", "-t", "--destination", "--image"):
                tags.append(value)
                pushes = pushes or option == "--destination"
            else:
                labels.append(value.text)
            index += 1 if equals else 2
            continue
        if word.text in ("--push", "--publish") or word.text.startswith("--output=type=registry"):
            pushes = True
        index += 1
    info.builds.append(
        BuildCommand(tool, offset, tuple(labels), tuple(tag.text for tag in tags), pushes)
    )
    if pushes:
        for tag in tags:
            _reference(info, tag, "push", f"{tool} --push")


_BUILD_METADATA_OPTIONS = frozenset(
    {
        "--label",
        "--annotation",
        "--build-arg",
        "--tag",
        "-t",
        "--destination",
        "-l",
        "--image",
        "--image-label",
        "--image-annotation",
    }
)
