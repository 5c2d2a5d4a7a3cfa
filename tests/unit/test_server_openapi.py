"""The published OpenAPI document (docs/openapi.json) is the one the server serves."""

from __future__ import annotations

import json
from pathlib import Path

from conveyor.server import ServerSettings, create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = (
    '.venv/bin/python -c "from tests.unit.test_server_openapi import render; '
    "open('docs/openapi.json', 'w').write(render())\""
)


def render() -> str:
    app = create_app(ServerSettings(config_path=Path("conveyor.yaml")))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_docs_openapi_json_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), f"docs/openapi.json is stale: {REGENERATE}"


def test_every_operation_documents_its_problems_and_needs_a_token() -> None:
    document = json.loads(render())
    assert document["openapi"].startswith("3.")
    operations = [
        (path, method, spec)
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
    ]
    assert len(operations) >= 20
    for path, method, spec in operations:
        assert path.startswith("/api/v1/"), path
        for code in ("400", "401", "403", "409", "503"):
            assert code in spec["responses"], (path, method, code)
            assert "application/problem+json" in spec["responses"][code]["content"]
        assert spec.get("security") == [{"token": []}], (path, method)
    assert document["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API token from conveyor token create",
    }
