"""Remote mode: with ``--server URL`` (or ``CONVEYOR_SERVER``), every command that reads or
writes the ledger is one call to ``conveyor serve``. The token is found by
``conveyor.ci_token.discover``: ``CONVEYOR_TOKEN``, GitHub Actions' OIDC token,
``CONVEYOR_ID_TOKEN`` (GitLab), else the session ``conveyor login`` stored.

The server answers each command's ``--json`` document, and the direct mode renders from the
same document (``to_dict()``), so both modes print the same thing through one renderer. In
remote mode no conveyor.yaml is read and neither SQLAlchemy nor the policy models are
imported: ``conveyor.client`` needs only httpx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import InputError

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient

SERVER_ENV = "CONVEYOR_SERVER"


@dataclass
class _Chosen:
    server: str | None = None
    insecure: bool = False


_chosen = _Chosen()


def choose(server: str | None, *, insecure: bool) -> None:
    """The root options of this run (``conveyor --server URL --insecure-server …``)."""
    _chosen.server = server
    _chosen.insecure = insecure


def insecure() -> bool:
    return _chosen.insecure


def server_url() -> str | None:
    return _chosen.server or os.environ.get(SERVER_ENV) or None


def client(*, key: str | None = None) -> ConveyorClient | None:
    """The client of the chosen server, or None (direct mode). ``key``: a ``--key`` given to
    a recording command, which remote mode refuses (the server signs for the token)."""
    url = server_url()
    if url is None:
        return None
    if key:
        raise InputError(
            "--key signs on this machine; through a conveyor server the server signs for "
            "your token's identity (unset CONVEYOR_SERVER to use the key)"
        )
    from conveyor.client import ConveyorClient

    return ConveyorClient.from_environment(server=url, insecure=_chosen.insecure)
