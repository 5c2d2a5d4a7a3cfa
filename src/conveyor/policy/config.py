"""``conveyor.yaml``: the schema, and loading it with every problem reported at once.

Found in the current directory, or named by ``--config`` / ``CONVEYOR_CONFIG``. Paths inside
it (key files, the ledger) are relative to the file itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from conveyor.errors import ConfigError
from conveyor.yamlsource import YamlDocument, load_yaml

CONFIG_FILE_NAME = "conveyor.yaml"
DEFAULT_LEDGER_PATH = Path(".conveyor") / "conveyor.db"
IdentityName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class Role(StrEnum):
    BUILDER = "builder"
    TESTER = "tester"
    SCANNER = "scanner"
    APPROVER = "approver"
    DEPLOYER = "deployer"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentitySpec(_Strict):
    key: str = Field(min_length=1, description="public key file (PEM), relative to conveyor.yaml")
    roles: list[Role] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _distinct(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles are listed more than once")
        return roles


class LedgerSpec(_Strict):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite at .conveyor/conveyor.db beside conveyor.yaml",
    )
    key: str | None = Field(
        default=None, description="private key that signs ledger checkpoints (PEM)"
    )
    public_key: str | None = Field(default=None, description="its public key, to verify them")


class ConfigModel(_Strict):
    version: Literal[1]
    identities: dict[IdentityName, IdentitySpec] = Field(min_length=1)
    ledger: LedgerSpec = LedgerSpec()


@dataclass(frozen=True)
class Identity:
    name: str
    key_path: Path
    roles: frozenset[Role]


@dataclass(frozen=True)
class Config:
    path: Path
    model: ConfigModel
    identities: dict[str, Identity]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def ledger_url(self) -> str:
        env = os.environ.get("CONVEYOR_DB")
        if env:
            return env
        if self.model.ledger.url:
            return self.model.ledger.url
        return f"sqlite:///{self.base_dir / DEFAULT_LEDGER_PATH}"

    def resolve_path(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def find_config(explicit: str | Path | None = None, *, cwd: Path | None = None) -> Path:
    """The config file to use: ``explicit``, then ``CONVEYOR_CONFIG``, then ./conveyor.yaml."""
    chosen = explicit or os.environ.get("CONVEYOR_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path.resolve()
    here = (cwd or Path.cwd()) / CONFIG_FILE_NAME
    if here.is_file():
        return here.resolve()
    raise ConfigError(
        f"no {CONFIG_FILE_NAME} in {cwd or Path.cwd()}; run 'conveyor init' or pass --config"
    )


def load_config(path: Path) -> Config:
    document = load_yaml(path)
    if not isinstance(document.data, dict):
        raise ConfigError(f"{path}:1:1: the config must be a mapping with 'version: 1'")
    problems: list[str] = []
    model: ConfigModel | None = None
    try:
        model = ConfigModel.model_validate(document.data)
    except ValidationError as exc:
        problems.extend(_describe(document, error) for error in exc.errors())
    # Files are checked even when the schema failed, so one run reports everything.
    problems.extend(_missing_key_files(document, path.parent))
    if problems or model is None:
        problems.sort(key=_line_of)
        raise ConfigError(_summary(path, problems), problems)
    config = Config(path=path, model=model, identities={})
    for name, spec in model.identities.items():
        config.identities[name] = Identity(
            name, config.resolve_path(spec.key), frozenset(spec.roles)
        )
    return config


def _missing_key_files(document: YamlDocument, base_dir: Path) -> list[str]:
    identities = document.data.get("identities")
    if not isinstance(identities, dict):
        return []
    problems = []
    for name, spec in identities.items():
        key = spec.get("key") if isinstance(spec, dict) else None
        if not isinstance(key, str) or not key:
            continue
        key_path = Path(key).expanduser()
        key_path = key_path if key_path.is_absolute() else base_dir / key_path
        if not key_path.is_file():
            problems.append(
                f"{document.where(('identities', name, 'key'))}: "
                f"identities.{name}.key: key file {key_path} does not exist"
            )
    return problems


def _describe(document: YamlDocument, error: Any) -> str:
    loc = tuple(part for part in error.get("loc", ()) if part != "[key]")
    dotted = ".".join(str(part) for part in loc) or "(top level)"
    message = str(error.get("msg", "invalid value"))
    if "[key]" in error.get("loc", ()):
        message = "names must be lowercase letters, digits, '.', '_' or '-' (at most 63)"
    elif error.get("type") == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif error.get("type") == "missing":
        message = "required key is missing"
    return f"{document.where(loc)}: {dotted}: {message}"


def _line_of(problem: str) -> tuple[int, int]:
    match = re.search(r":(\d+):(\d+): ", problem)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _summary(path: Path, problems: list[str]) -> str:
    count = len(problems)
    first = problems[0] if problems else ""
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{path}: {count} problem{'s' if count != 1 else ''}: {first}{more}"
