"""conveyor.server — ``conveyor serve``: the REST API face on the same operations as the CLI.

    from conveyor.server import ServerSettings, create_app
    app = create_app(ServerSettings.from_environment("conveyor.yaml"))

Modules: ``app`` (the factory, the request edge, error handlers), ``api`` (``/api/v1``),
``auth`` (what each act needs), ``tokens`` (API tokens in the ledger database),
``principal`` (who is asking), ``problems`` (problem+json), ``strict`` (strict JSON
bodies) and ``observe`` (JSON logs, metrics). The server keeps one ``service.Workspace`` per
process and passes each request's signer (its own key) and principal to the operations.
"""

from __future__ import annotations

from conveyor.server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
