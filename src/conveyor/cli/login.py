"""``conveyor login``: sign in to a conveyor server as a person, from a terminal.

The session token is stored 0600 in the user's config directory and sent to that server
as ``CONVEYOR_TOKEN`` would be (``CONVEYOR_TOKEN`` itself, when set, still wins).
"""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli import remote
from conveyor.cli.app import app


@app.command()
def login(
    server: Annotated[
        str | None,
        typer.Option("--server", metavar="URL", help="The server (default: CONVEYOR_SERVER)."),
    ] = None,
    insecure_server: Annotated[
        bool, typer.Option("--insecure-server", help="Allow plain http:// to a test server.")
    ] = False,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL; do not open a browser.")
    ] = False,
    browser: Annotated[
        bool,
        typer.Option("--browser", help="The browser flow even where the device flow is offered."),
    ] = False,
) -> None:
    """Sign in with the team's OpenID Connect provider: the device flow where the provider
    offers it, else the browser with a loopback redirect."""
    from conveyor.ci_token import store_session
    from conveyor.client import SERVER_ENV, check_server_url
    from conveyor.errors import InputError
    from conveyor.terminal_login import browser_login, device_login, offers_device_flow

    url = server or remote.server_url()  # also `conveyor --server URL login`
    if not url:
        raise InputError(f"no server: pass --server URL or set {SERVER_ENV}")
    url = check_server_url(url, insecure=insecure_server or remote.insecure())

    def show(link: str) -> None:
        typer.echo(f"Open this page to sign in: {link}", err=True)

    if not browser and offers_device_flow(url):
        result = device_login(url, show=show)
    else:
        result = browser_login(url, show=show, open_browser=not no_browser)
    path = store_session(url, result.token, result.identity)
    hours = result.expires_in // 3600
    typer.echo(f"signed in to {url} as {result.identity} for {hours} h (session in {path})")
