"""``conveyor demo``: resolve → inspect → copy on an embedded OCI image layout.

Interim, until the promotion flow exists: it builds a fresh image with ``git.commit`` and
``ci.run`` labels into a "dev" layout, then shows each step as the command a user could
type, and proves the copy in "staging" has the very same digest.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.main import app


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Work in this directory instead of a fresh temporary one."),
    ] = None,
) -> None:
    """Show resolve → inspect → copy on a generated image in local OCI layouts."""
    from conveyor import service
    from conveyor.errors import VerificationError

    base = directory if directory is not None else Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    dev, staging = base / "dev", base / "staging"
    commit = secrets.token_hex(20)
    version = "1.4.2"
    labels = {
        "git.commit": commit,
        "ci.run": f"https://ci.example.com/acme/shop/runs/{secrets.randbelow(90000) + 10000}",
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.source": "https://git.example.com/acme/shop",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.title": "shop",
    }

    render.note(f"Building a small image (commit {commit[:12]}) into the OCI layout {dev}")
    built = service.create_sample_image(f"oci:{dev}:{version}", labels=labels)
    render.note(f"  built {built}")

    render.command(f"conveyor resolve oci:{dev}:{version}")
    resolved = service.resolve(f"oci:{dev}:{version}")
    render.line(str(resolved))
    render.note("  The tag is resolved to a digest exactly once; from here on, the digest travels.")

    render.command(f"conveyor inspect {resolved}")
    render.inspection(service.inspect(str(resolved)))

    render.command(f"conveyor copy {resolved} oci:{staging}:{version}")
    result = service.copy_image(str(resolved), f"oci:{staging}:{version}")
    render.line(f"{result.destination}@{result.digest}")
    render.copy_summary(result, to_stdout=True)

    render.command(f"conveyor resolve oci:{staging}:{version}")
    promoted = service.resolve(f"oci:{staging}:{version}")
    render.line(str(promoted))

    if promoted.digest != resolved.digest:
        raise VerificationError(
            f"staging has {promoted.digest} but dev has {resolved.digest}; the copy changed bytes"
        )
    render.note(
        f"\nSame digest in dev and staging: {resolved.digest}. "
        "Staging runs exactly the bytes that were built and tested.",
        style="bold green",
    )
    render.note(
        f"Layouts kept in {base} (readable by skopeo: skopeo inspect oci:{staging}:{version})"
    )
