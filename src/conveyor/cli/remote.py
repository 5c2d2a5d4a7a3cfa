"""Remote mode: with ``--server URL`` (or ``CONVEYOR_SERVER``), every command that reads or
writes the ledger is one call to ``conveyor serve``. The token is found by
``conveyor.ci_token.discover``: ``CONVEYOR_TOKEN``, GitHub Actions' OIDC token,
``CONVEYOR_ID_TOKEN`` (GitLab), else the session ``conveyor login`` stored.

The server answers each command's ``--json`` document, and the direct mode renders from the
same document (``to_dict()``), so both modes print the same thing through one renderer. In
remote mode no conveyor.yaml is read and neither SQLAlchemy nor the policy models are
imported: ``conveyor.client`` needs only httpx. ``--key`` on an evidence command signs here
(``presigned``): that loads the statement and signing code (cryptography) as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    ``check``, ``promote`` or ``rollback``, which remote mode refuses (the server that places
    the image signs the promotion; evidence commands sign with ``--key`` through ``presign``)."""
    url = server_url()
    if url is None:
        return None
    if key:
        raise InputError(
            "--key signs on this machine; through a conveyor server the server that places "
            "the image signs for your token's identity (drop --key, or unset CONVEYOR_SERVER)"
        )
    from conveyor.client import ConveyorClient

    return ConveyorClient.from_environment(server=url, insecure=_chosen.insecure)


def presigned(
    server: ConveyorClient, kind: str, reference: str, key: str, **inputs: Any
) -> dict[str, Any]:
    """Evidence signed here with ``key`` and recorded by the server as it is: the statement
    the direct mode would sign (``service.presign``, about the image as the server inspects
    it), submitted as a DSSE envelope (``POST /api/v1/envelopes``); the server verifies it
    against its conveyor.yaml through the one recording path. The answer is the server's
    ``Recorded`` document with this side's summary and notes, as the direct mode shows."""
    from conveyor import service

    signed = service.presign(kind, reference, server.inspect, key=key, **inputs)
    done = server.record_envelope(reference, signed.envelope)
    return {**done, "summary": signed.summary, "notes": [*signed.notes, *done.get("notes", [])]}
