"""``conveyor lint``: deployment config and CI workflows (no network); with an environment,
digests are checked against what the verified reader says was promoted there (CV008)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.service._evidence import VerifiedLedger
from conveyor.service._workspace import Settings, Workspace, workspace_for

if TYPE_CHECKING:
    from conveyor.configs.lint import LintReport, LintSettings


def lint_settings(
    config_path: str | Path | None = None, *, settings: Settings | None = None
) -> LintSettings:
    """The ``lint:`` section of conveyor.yaml (``--config``, ``CONVEYOR_CONFIG`` or
    ./conveyor.yaml); defaults when there is no config file. Only that section is read and
    checked, so lint works in a workspace whose keys or ledger are not set up."""
    from pydantic import ValidationError

    from conveyor.configs.lint import LintSettings
    from conveyor.errors import ConfigError
    from conveyor.policy.config import CONFIG_FILE_NAME, LintSpec
    from conveyor.yamlsource import load_yaml

    settings = settings if settings is not None else Settings.from_environment()
    if (
        config_path is None
        and settings.config_path is None
        and not (settings.cwd is not None and (settings.cwd / CONFIG_FILE_NAME).is_file())
    ):
        return LintSettings()
    path = settings.config_file(config_path)
    document = load_yaml(path)
    section = document.data.get("lint") if isinstance(document.data, dict) else None
    if section is None:
        return LintSettings()
    try:
        spec = LintSpec.model_validate(section)
    except ValidationError as exc:
        problems = [
            f"{document.where(('lint', *map(str, error['loc'])))}: "
            f"lint.{'.'.join(map(str, error['loc']))}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError(f"{path}: invalid 'lint' section: {problems[0]}", problems) from exc
    return LintSettings(severities=dict(spec.rules), exclude=tuple(spec.exclude))


def promoted_digests(
    environment: str,
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
) -> set[str]:
    """Digests the ledger shows promoted (or rolled back) to ``environment``: only entries
    the verified reader believes, whose signed statement names that environment."""
    with workspace_for(workspace, config_path) as ws:
        ws.config.require_environment(environment)
        return {item.digest.lower() for item in VerifiedLedger(ws).promotions(environment)}


def lint(
    paths: Sequence[str | Path],
    *,
    environment: str | None = None,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    promoted: Collection[str] | None = None,
) -> LintReport:
    """Lint deployment config and CI workflows under ``paths`` (no network). With
    ``environment``, digests are checked against the ledger's promotions (CV008);
    ``promoted``: those digests as a server answered them (the ledger is not opened)."""
    from conveyor.configs.lint import lint as lint_files

    settings = lint_settings(config_path)
    lookup = None
    if environment is not None:
        if promoted is None:
            promoted = promoted_digests(environment, workspace=workspace, config_path=config_path)
        promoted = {digest.lower() for digest in promoted}

        def lookup(name: str) -> set[str]:
            return promoted if name == environment else set()

    return lint_files(
        [Path(path) for path in paths],
        settings=settings,
        environment=environment,
        promoted_digests=lookup,
    )


def lint_sarif(report: LintReport) -> dict[str, object]:
    """The report as a SARIF 2.1.0 log (for code-scanning upload)."""
    from conveyor.configs.sarif import to_sarif

    return to_sarif(report)
