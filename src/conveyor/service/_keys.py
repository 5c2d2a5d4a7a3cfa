"""Signing keys (generate, rotate), and ``conveyor init``: a starter workspace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from conveyor.errors import InputError


@dataclass(frozen=True)
class GeneratedKey:
    name: str
    private_key: Path
    public_key: Path
    keyid: str
    encrypted: bool


def generate_keys(
    name: str,
    *,
    kind: str = "ed25519",
    out_dir: str | Path = ".",
    overwrite: bool = False,
    password: bytes | None = None,
) -> GeneratedKey:
    """A key pair ``NAME.key`` / ``NAME.pub`` in ``out_dir``; encrypted with ``password``."""
    from conveyor.attest import Signer, generate_key, write_keypair

    if kind not in ("ed25519", "ecdsa-p256"):
        raise InputError(f"unknown key type {kind!r}: use ed25519 or ecdsa-p256")
    key = generate_key(kind)  # type: ignore[arg-type]
    private, public = write_keypair(
        key, Path(out_dir), name, password=password or None, overwrite=overwrite
    )
    return GeneratedKey(name, private, public, Signer(key).keyid, bool(password))


STARTER_CONFIG = """\
# conveyor.yaml: who may record evidence about an artifact, and (later) where it may go.
version: 1

# Each identity is a public key (relative to this file) and the roles it holds:
#   builder   records builds (SLSA provenance)      tester    records tests and smoke tests
#   scanner   records vulnerability scans           approver  approves a digest for an environment
#   deployer  promotes a digest into an environment
# A key that is not listed here cannot record anything.
identities:
  {name}: {{key: keys/{name}.pub, roles: [builder, tester, scanner]}}
  # deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  # alice:    {{key: keys/alice.pub,    roles: [approver]}}

# The ledger: SQLite beside this file by default; CONVEYOR_DB=postgresql+psycopg://… for a team.
ledger:
  # url: sqlite:///.conveyor/conveyor.db
  key: keys/ledger.key          # signs checkpoints (conveyor audit checkpoint)
  public_key: keys/ledger.pub
"""


@dataclass(frozen=True)
class Initialised:
    config: Path
    keys: tuple[GeneratedKey, ...]


def init_workspace(
    directory: str | Path = ".", *, name: str = "ci", password: bytes | None = None
) -> Initialised:
    """A starter conveyor.yaml and the keys it names, in ``directory`` (never overwritten)."""
    base = Path(directory)
    config = base / "conveyor.yaml"
    if config.exists():
        raise InputError(f"{config} already exists; conveyor init never overwrites it")
    base.mkdir(parents=True, exist_ok=True)
    keys = (
        generate_keys(name, out_dir=base / "keys", password=password),
        generate_keys("ledger", out_dir=base / "keys", password=password),
    )
    config.write_text(STARTER_CONFIG.format(name=name))
    return Initialised(config, keys)


# --- rotation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRotation:
    identity: str
    config: Path
    new_key: GeneratedKey
    retired: tuple[Path, ...]  # the public keys now marked retired
    retired_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "config": str(self.config),
            "private_key": str(self.new_key.private_key),
            "public_key": str(self.new_key.public_key),
            "keyid": self.new_key.keyid,
            "retired": [str(path) for path in self.retired],
            "retired_at": _stamp(self.retired_at),
        }


def rotate_key(
    name: str,
    *,
    config_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    kind: str = "ed25519",
    password: bytes | None = None,
    now: datetime | None = None,
) -> KeyRotation:
    """Give identity NAME a new key and retire its current one(s) now.

    Writes ``NAME-<time>.key``/``.pub`` (never overwriting; ``out_dir`` default: beside the
    current public key), then rewrites NAME in conveyor.yaml to the ``keys:`` form — the new
    key first, each key that was current gets ``retired: <now>`` — as a surgical text edit
    (comments and everything else untouched), checked by parsing both versions, written
    atomically. If the edit cannot be made, the new key files are removed again."""
    from conveyor.policy.config import load_config
    from conveyor.service._workspace import Settings

    path = Settings.from_environment().config_file(config_path)
    config = load_config(path)  # a config that does not load is not edited
    identity = config.identities.get(name)
    if identity is None:
        known = ", ".join(sorted(config.identities)) or "none"
        raise InputError(f"{path}: no identity {name!r} to rotate (identities: {known})")
    moment = _ceil_ms((now or datetime.now(UTC)).astimezone(UTC))
    current = [key.path for key in identity.all_keys if key.retired is None]
    if not current:
        raise InputError(f"{path}: every key of {name!r} is retired already; nothing to rotate")
    directory = Path(out_dir) if out_dir is not None else current[0].parent
    stem = f"{name}-{moment.strftime('%Y%m%dT%H%M%S')}{moment.microsecond // 1000:03d}Z"
    new_key = generate_keys(stem, kind=kind, out_dir=directory, password=password)
    try:
        text = path.read_text(encoding="utf-8")
        edited = _retire_in_text(
            text, path, name, _config_relative(path, new_key.public_key), _stamp(moment)
        )
        _write_atomically(path, edited)
    except BaseException:
        new_key.private_key.unlink(missing_ok=True)
        new_key.public_key.unlink(missing_ok=True)
        raise
    return KeyRotation(name, path, new_key, tuple(current), moment)


def _ceil_ms(moment: datetime) -> datetime:
    """Up to the next millisecond: what was recorded before the rotation stays before it."""
    from datetime import timedelta

    rest = moment.microsecond % 1000
    return moment + timedelta(microseconds=1000 - rest) if rest else moment


def _stamp(moment: datetime) -> str:
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def _config_relative(config: Path, key: Path) -> str:
    """How conveyor.yaml names ``key``: relative to the file where it lies beneath it."""
    import os

    base = config.resolve().parent
    target = key.resolve()
    try:
        return target.relative_to(base).as_posix()
    except ValueError:
        return os.fspath(target)


def _flow_scalar(value: str) -> str:
    """``value`` as a YAML flow scalar: plain when it reads back as itself, else quoted."""
    import json
    import re

    if re.fullmatch(r"[A-Za-z0-9_./~][A-Za-z0-9_./~+-]*", value) and value not in (
        "null", "Null", "NULL", "true", "false", "True", "False", "yes", "no", "on", "off", "~",
    ):  # fmt: skip
        return value
    return json.dumps(value)


def _retire_in_text(text: str, path: Path, name: str, new_key: str, retired: str) -> str:
    """The edited conveyor.yaml text (see ``rotate_key``); verified before it is returned."""
    from conveyor.configs.rewrite import (
        KeyInsert,
        TextEditor,
        compose,
        find_mapping,
        set_mapping_value,
    )

    what = str(path)
    documents = compose(text, what=what)
    editor = TextEditor(text, what=what)
    identity = find_mapping(documents, (0, "identities", name), what=what)
    pairs = {k.value: (k, v) for k, v in identity.value if type(k).__name__ == "ScalarNode"}
    new_item = f"{{key: {_flow_scalar(new_key)}}}"
    if "keys" not in pairs:
        key_node, value = pairs["key"]
        if type(value).__name__ != "ScalarNode" or value.start_mark.line != value.end_mark.line:
            raise InputError(f"{what}:{key_node.start_mark.line + 1}: key is not a one-line "
                             "value; rewrite it as 'keys:' by hand")  # fmt: skip
        old = text[value.start_mark.index : value.end_mark.index]  # as written, quotes kept
        line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
        editor.replace_span(line, column, len("key"), "keys")
        editor.replace_span(
            value.start_mark.line + 1,
            value.start_mark.column + 1,
            len(old),
            f"[{new_item}, {{key: {old}, retired: {retired}}}]",
        )
    else:
        key_node, sequence = pairs["keys"]
        if type(sequence).__name__ != "SequenceNode" or not sequence.value:
            raise InputError(f"{what}:{key_node.start_mark.line + 1}: keys is not a list")
        for index, item in enumerate(sequence.value):
            if type(item).__name__ != "MappingNode":
                continue
            if any(k.value == "retired" for k, _ in item.value):
                continue
            set_mapping_value(
                editor,
                documents,
                KeyInsert((0, "identities", name, "keys", index), "retired", retired, ("key",)),
                what=what,
            )
        first = sequence.start_mark
        if sequence.flow_style:
            editor.insert_at(first.line + 1, first.column + 2, f"{new_item}, ")
        else:
            # A new first item, on its own line, indented as the first one is.
            from conveyor.configs.rewrite import dominant_line_break

            editor.insert_at(
                first.line + 1,
                1,
                " " * first.column + f"- {new_item}" + dominant_line_break(text),
            )
    edited = editor.result()
    _check_rotation(text, edited, path, name, new_key, retired)
    return edited


def _check_rotation(
    before: str, after: str, path: Path, name: str, new_key: str, retired: str
) -> None:
    """Both versions parsed: only identity NAME differs, and it lists exactly the new key
    first and every key it had, the current ones now retired."""
    from conveyor.yamlsource import parse_yaml

    old = parse_yaml(before.encode(), path=path).data
    new = parse_yaml(after.encode(), path=path).data
    old_spec = dict(old["identities"][name])
    listed = old_spec.pop("keys", None) or [{"key": old_spec.pop("key")}]
    moment = datetime.fromisoformat(retired.replace("Z", "+00:00"))
    expected_keys = [{"key": new_key}] + [
        item if "retired" in item else {**item, "retired": moment} for item in listed
    ]
    expected = {**old, "identities": {**old["identities"], name: {**old_spec, "keys": None}}}
    got = dict(new["identities"].get(name) or {})
    got_keys = got.get("keys")
    got["keys"] = None
    expected["identities"][name].pop("key", None)

    def normal(items: object) -> object:
        return [
            {k: (v.astimezone(UTC) if isinstance(v, datetime) else v) for k, v in i.items()}
            for i in items
        ] if isinstance(items, list) else items  # fmt: skip

    same_rest = {**new, "identities": {**new["identities"], name: got}} == expected
    if not same_rest or normal(got_keys) != normal(expected_keys):
        raise InputError(
            f"{path}: cannot rewrite identity {name!r} in place safely; list its keys by hand "
            f"(keys: [{{key: {new_key}}}, {{key: OLD, retired: {retired}}}])"
        )


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (same directory, same mode)."""
    import os
    import tempfile

    mode = path.stat().st_mode & 0o777
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
