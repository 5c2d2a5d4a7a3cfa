"""The architecture as tests: what import-linter cannot say (private names, the façade's
completeness and weight). The layering itself is in pyproject.toml's contracts."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "conveyor"
HEAVY = ("pydantic", "sqlalchemy", "cryptography", "httpx")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every ``from conveyor… import name`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, "") for alias in node.names)
    return [item for item in found if item[1] == "conveyor" or item[1].startswith("conveyor.")]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_no_private_name_is_imported_across_modules() -> None:
    crossing = [
        f"{path.relative_to(SRC)}:{line}: from {module} import {name}"
        for path in SOURCES
        for line, module, name in _imports(path)
        if name.startswith("_") and not name.startswith("__") and module != _module_name(path)
    ]
    assert crossing == []


def test_no_module_under_service_imports_the_facade() -> None:
    inward = [
        f"{path.relative_to(SRC)}:{line}: {module} {name}".rstrip()
        for path in sorted((PACKAGE / "service").glob("_*.py"))
        for line, module, name in _imports(path)
        if module == "conveyor.service" or (module == "conveyor" and name == "service")
    ]
    assert inward == []


def test_the_facade_is_only_a_sorted_lazy_map_and_every_name_resolves() -> None:
    from conveyor import service

    assert service.__all__ == sorted(service.__all__)
    assert set(service.__all__) == set(service._LAZY)
    for name in service.__all__:
        assert getattr(service, name) is not None, name
    with pytest.raises(AttributeError):
        _ = service.no_such_operation  # type: ignore[attr-defined]


def test_the_facade_keeps_every_name_it_had() -> None:
    # The names conveyor.service exported before it became a package (faces build on them).
    before = {
        "AttachedAttestation", "CheckResult", "CopyProgress", "CopyResult",
        "EnvironmentStatus", "GeneratedKey", "HistoryItem", "ImageInspection", "Initialised",
        "NotPromoted", "PromotionDenied", "PromotionResult", "Recorded", "RegistryOptions",
        "ResolvedImage", "Trace", "TraceEvent", "approve", "attest_scan", "attest_smoke",
        "attest_tests", "audit_checkpoint", "audit_verify", "check", "copy_image",
        "create_sample_image", "generate_keys", "history", "init_workspace", "inspect",
        "lint", "lint_settings", "list_attestations", "list_tags", "pin", "promote",
        "promoted_digests", "record_build", "resolve", "rollback", "status", "trace",
    }  # fmt: skip
    from conveyor import service

    assert before - set(service.__all__) == set()


def test_importing_the_facade_stays_light() -> None:
    code = (
        "import json, sys\n"
        "import conveyor.service\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == []


def test_an_image_operation_loads_no_config_or_ledger_machinery() -> None:
    code = (
        "import json, sys\n"
        "from conveyor import service\n"
        "service.resolve, service.copy_image, service.inspect\n"
        "print(json.dumps([m for m in ('pydantic', 'sqlalchemy', 'cryptography') "
        "if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == []


def test_the_shared_signing_keywords_are_as_strict_as_spelled_out_ones() -> None:
    from conveyor import service

    with pytest.raises(TypeError, match="'kye'"):
        service.approve("oci:x:v1", environment="prod", kye="typo")  # type: ignore[call-arg]
