"""conveyor.server — ``conveyor serve``: the REST API face on the same operations as the CLI.

    from conveyor.server import ServerSettings, create_app
    app = create_app(ServerSettings.from_environment("conveyor.yaml"))

Modules: ``app`` (the factory, the request edge, error handlers), ``api`` (``/api/v1``),
``auth`` (what each act needs), ``tokens`` (API tokens in the ledger database),
``principal`` (who is asking, and the statement field naming it), ``problems``
(problem+json), ``strict`` (strict JSON bodies), ``observe`` (JSON logs, metrics) and
``_interim`` (the one adapter to today's operations, until the injectable workspace lands).
"""

from __future__ import annotations

from conveyor.server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
