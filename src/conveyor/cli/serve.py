"""``conveyor serve`` and ``conveyor token``: run the team server, and manage its API tokens.

``token`` works against the ledger database directly (an admin's bootstrap: the first admin
token is made this way) or, with ``--server`` / ``CONVEYOR_SERVER``, through the API with an
``admin`` token. ``token create`` prints the token and nothing else on stdout, so
``T=$(conveyor token create ci --identity ci)`` works; it is shown once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli import render
from conveyor.cli.app import app

token_app = typer.Typer(help="API tokens of conveyor serve.", no_args_is_help=True)
app.add_typer(token_app, name="token")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="conveyor.yaml to use (default: CONVEYOR_CONFIG, then ./conveyor.yaml).",
    ),
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        help="Go through this conveyor server (default: CONVEYOR_SERVER) with CONVEYOR_TOKEN.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Processes.")] = 1,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="TLS certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="FILE", help="TLS private key (PEM).")
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the team server: the REST API (/api/v1), /healthz, /readyz and /metrics."""
    import uvicorn

    from conveyor.errors import InputError
    from conveyor.server.app import ServerSettings, ServerState
    from conveyor.server.observe import configure_logging

    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level: {log_level!r} is not debug, info, warning or error")
    settings = ServerSettings.from_environment(config)
    state = ServerState(settings)
    state.config()  # a broken conveyor.yaml stops here, with every problem listed
    if state.can_sign():
        state.signer()  # so does a signing key that is not the server's identity
    # Every worker process builds its app from the same environment.
    os.environ["CONVEYOR_CONFIG"] = str(settings.config_path)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics sums every worker's counts (prometheus-client's multiprocess mode).
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="conveyor-metrics-")
        atexit.register(shutil.rmtree, folder, True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from conveyor.cli.main import serving_for_long

    serving_for_long()
    render.info(
        f"conveyor serve: {settings.config_path} on "
        f"{'https' if tls_cert else 'http'}://{host}:{port} ({workers} worker(s))"
    )
    uvicorn.run(
        "conveyor.server.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_config=configure_logging(log_level),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


# --- tokens -----------------------------------------------------------------------------------


def _remote(server: str | None) -> Any:
    from conveyor.cli import remote

    if server is not None:
        remote.choose(server, insecure=remote.insecure())
    return remote.client()


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="The token's name (shown in logs and records).")],
    identity: Annotated[
        str, typer.Option("--identity", metavar="IDENTITY", help="The identity it acts as.")
    ],
    expires: Annotated[
        str | None,
        typer.Option("--expires", metavar="DURATION", help="Lifetime: 30d (default), 12h …"),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Create an API token bound to IDENTITY; prints only the token (shown once)."""
    client = _remote(server)
    if client is not None:
        with client:
            created = client.create_token(name, identity=identity, expires=expires)
        render.line(created["token"])
        render.info(f"token {name} for {identity}, expires {created['expires_at']}")
        return
    from conveyor.server.tokens import create_direct

    made = create_direct(config, name, identity=identity, expires=expires)
    render.line(made.token)
    render.info(f"token {name} for {identity}, expires {made.info.to_dict()['expires_at']}")


@token_app.command("list")
def token_list(
    config: ConfigOption = None, server: ServerOption = None, as_json: JsonOption = False
) -> None:
    """Tokens: name, identity, state, expiry (never the tokens themselves)."""
    client = _remote(server)
    if client is not None:
        with client:
            rows = client.list_tokens()
    else:
        from conveyor.server.tokens import list_direct

        rows = list_direct(config)
    if as_json:
        render.as_json({"tokens": rows})
        return
    for row in rows:
        render.line(
            f"{row['name']}  {row['identity']}  {row['state']}  expires {row['expires_at']}"
        )


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Revoke a token at once; its name stays taken."""
    client = _remote(server)
    if client is not None:
        with client:
            client.revoke_token(name)
    else:
        from conveyor.server.tokens import revoke_direct

        revoke_direct(config, name)
    render.line(f"revoked {name}")
