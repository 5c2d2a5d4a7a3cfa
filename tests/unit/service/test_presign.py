"""``service.presign``: remote ``--key`` signs here the statement the verb would record,
about the image as a server inspected it; the server's answer is checked first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor import service
from conveyor.attest import SLSA_PROVENANCE_V1, decode_envelope, parse_statement
from conveyor.errors import ExternalError, InputError
from conveyor.oci.digest import Digest
from tests.unit.service._pipeline import COMMIT, PASSING_JUNIT, make_pipeline

IDENTITIES = {"ci": "builder, tester, scanner", "alice": "approver"}
ENV = "environments:\n  prod:\n    repository: oci:prod\n    requires: {}\n"


def _inspected(ref: str) -> dict[str, Any]:
    return service.inspect(ref).to_dict()


def test_the_presigned_statement_is_the_one_direct_mode_records(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, IDENTITIES, ENV)
    ref = p.image()
    signed = service.presign("build", ref, _inspected, key=p.key("ci"), commit=COMMIT, run_id="42")
    assert signed.kind == "build"
    assert signed.summary["commit"] == COMMIT
    statement = parse_statement(decode_envelope(signed.envelope).payload)
    assert statement.predicate_type == SLSA_PROVENANCE_V1
    assert statement.names(Digest.parse(ref.split("@")[1]))  # about this very digest
    # recorded as it is, it counts like evidence the verb recorded itself
    with service.Workspace.open(p.config) as workspace:
        recorded = service.record_envelope(ref, signed.envelope, workspace=workspace)
    assert (recorded.kind, recorded.signer) == ("build", "ci")


def test_a_report_is_parsed_before_anything_else(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, IDENTITIES, ENV)
    bad = tmp_path / "junit.xml"
    bad.write_text("<testsuite")

    def never(_ref: str) -> dict[str, Any]:
        raise AssertionError("the server was asked before the report was read")

    with pytest.raises(InputError):
        service.presign("tests", p.image(), never, key=p.key("ci"), files=[bad])
    good = tmp_path / "good.xml"
    good.write_text(PASSING_JUNIT)
    signed = service.presign("tests", p.image(), _inspected, key=p.key("ci"), files=[good])
    assert signed.summary["passed"] == 2


def test_the_servers_answer_is_checked_before_signing(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, IDENTITIES, ENV)
    ref = p.image()
    honest = _inspected(ref)

    def lying(_ref: str) -> dict[str, Any]:
        return {**honest, "digest": "sha256:" + "0" * 64}

    with pytest.raises(ExternalError, match="not the digest it names; nothing was signed"):
        service.presign("approval", ref, lying, key=p.key("alice"), environment="prod")
    for broken in ({}, {**honest, "manifests": "x"}, {**honest, "digest": "md5:1"}, [1]):
        with pytest.raises(ExternalError, match="malformed"):
            service.presign(
                "approval", ref, lambda _r, b=broken: b, key=p.key("alice"), environment="prod"
            )
    with pytest.raises(InputError, match="cannot sign 'promotion'"):
        service.presign("promotion", ref, _inspected, key=p.key("alice"))
    approved = service.presign("approval", ref, _inspected, key=p.key("alice"), environment="prod")
    predicate = json.loads(decode_envelope(approved.envelope).payload)["predicate"]
    assert predicate["environment"] == "prod"
