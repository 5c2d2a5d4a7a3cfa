"""Real third-party attestations (shared corpus): in-toto DSSE links, Sigstore bundles,
cosign and slsa-github-generator envelopes, GCB's not-quite-DSSE envelope.

Expected subjects and predicate types are read here with the stdlib json module, never
copied from our output. Certificates embedded in bundles are used only as carriers of the
signing public key: no chain validation to Fulcio, no Rekor check (out of scope here).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from conveyor.attest import (
    IN_TOTO_PAYLOAD_TYPE,
    SLSA_PROVENANCE_V1,
    SignatureError,
    Signer,
    StatementError,
    SubjectMismatch,
    Verifier,
    decode_envelope,
    generate_key,
    load_public_key,
    open_attestation,
    parse_statement,
    read_provenance,
    verify_envelope,
)
from conveyor.oci.digest import Digest


def _folder(corpus: Path) -> Path:
    return corpus / "attestations"


def _stdlib_payload(envelope: dict[str, Any]) -> dict[str, Any]:
    """The statement as plain json sees it, for independent expectations."""
    decoded: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return decoded


def _subjects(statement: dict[str, Any]) -> list[tuple[str | None, dict[str, str]]]:
    return [(s.get("name"), s["digest"]) for s in statement["subject"]]


# --- in-toto DSSE links, RSA-PSS ------------------------------------------------------------

LINKS = [
    ("in-toto-dsse-write-code.776a00e2.link.json", "in-toto-bob.pub.pem", "write-code"),
    ("in-toto-dsse-package.2f89b927.link.json", "in-toto-carl.pub.pem", "package"),
]


@pytest.mark.parametrize(("link", "key", "step"), LINKS)
def test_in_toto_links_verify_with_their_rsa_keys(
    corpus: Path, link: str, key: str, step: str
) -> None:
    folder = _folder(corpus)
    envelope = (folder / link).read_bytes()
    verifier = Verifier(load_public_key(folder / key))
    verified = verify_envelope(envelope, [verifier], payload_type=IN_TOTO_PAYLOAD_TYPE)
    assert verified.signer_keyids == [verifier.keyid]
    expected = _stdlib_payload(json.loads(envelope))
    assert json.loads(verified.payload) == expected
    assert expected["_type"] == "link"
    assert expected["name"] == step
    # a link is not a Statement: our Statement parser says so instead of guessing
    with pytest.raises(StatementError, match="not an in-toto Statement"):
        parse_statement(verified.payload)


def test_in_toto_links_refuse_the_other_key(corpus: Path) -> None:
    folder = _folder(corpus)
    (link_a, key_a, _), (link_b, key_b, _) = LINKS
    for link, wrong_key in ((link_a, key_b), (link_b, key_a)):
        with pytest.raises(SignatureError):
            verify_envelope(
                (folder / link).read_bytes(), [Verifier(load_public_key(folder / wrong_key))]
            )


def test_in_toto_link_tampered_payload_is_refused(corpus: Path) -> None:
    folder = _folder(corpus)
    document = json.loads((folder / LINKS[0][0]).read_bytes())
    payload = base64.b64decode(document["payload"]).replace(b"write-code", b"write-kode")
    document["payload"] = base64.b64encode(payload).decode()
    with pytest.raises(SignatureError):
        verify_envelope(
            json.dumps(document).encode(), [Verifier(load_public_key(folder / LINKS[0][1]))]
        )


# --- envelopes that carry their signing certificate -----------------------------------------


def _cert_from_der_b64(text: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(text))


def _signed_cases(corpus: Path) -> list[tuple[str, dict[str, Any], x509.Certificate]]:
    """(file, DSSE envelope as a dict, certificate whose key signed it), per SOURCES.md."""
    folder = _folder(corpus)
    cases = []
    bare = json.loads((folder / "slsa-generic-v1.10.0-workflow_dispatch.intoto.jsonl").read_text())
    cases.append(
        (
            "slsa-generic-v1.10.0",
            bare,
            x509.load_pem_x509_certificate(bare["signatures"][0]["cert"].encode()),
        )
    )
    for name, where in [
        ("slsa-generic-v2.1.0-workflow_dispatch.intoto.jsonl", ("certificate",)),
        (
            "slsa-delegator-v2.1.0-workflow_dispatch.build.slsa.json",
            ("x509CertificateChain", "certificates", 0),
        ),
        ("cosign-oci-attestation.sigstore.json", ("certificate",)),
    ]:
        bundle = json.loads((folder / name).read_text())
        material: Any = bundle["verificationMaterial"]
        for step in where:
            material = material[step]
        cases.append((name, bundle["dsseEnvelope"], _cert_from_der_b64(material["rawBytes"])))
    manifest = json.loads((corpus / "oci" / "cosign-attestation-manifest.json").read_text())
    pem = manifest["layers"][0]["annotations"]["dev.sigstore.cosign/certificate"]
    container = json.loads(
        (folder / "slsa-container-v2.1.0-cosign-attestation.dsse.json").read_text()
    )
    cases.append(("slsa-container", container, x509.load_pem_x509_certificate(pem.encode())))
    return cases


def test_envelopes_verify_with_their_embedded_certificates(corpus: Path) -> None:
    cases = _signed_cases(corpus)
    assert len(cases) == 5
    for name, envelope, certificate in cases:
        verifier = Verifier(certificate.public_key())  # type: ignore[arg-type]
        raw = json.dumps(envelope).encode()
        verified = verify_envelope(raw, [verifier])
        expected = _stdlib_payload(envelope)
        statement = parse_statement(verified.payload)
        assert statement.legacy == (expected["_type"] == "https://in-toto.io/Statement/v0.1"), name
        assert statement.predicate_type == expected["predicateType"], name
        assert [(s.name, s.digest) for s in statement.subject] == _subjects(expected), name
        # and a stranger's key does not verify the same bytes
        with pytest.raises(SignatureError):
            verify_envelope(raw, [Signer(generate_key("ecdsa-p256")).verifier()])


def test_container_attestation_opens_for_the_index_it_names(corpus: Path) -> None:
    """End to end: cosign attestation layer -> subject = the buildx image index in oci/."""
    index_digest = Digest.of(
        (corpus / "oci" / "buildx-image-index-with-attestation-manifest.json").read_bytes()
    )
    envelope = (_folder(corpus) / "slsa-container-v2.1.0-cosign-attestation.dsse.json").read_bytes()
    assert Digest.of(envelope).encoded == (
        "e163b472f2e5d66e5a2a45e26e020c51a0d2da7dc8b567b31fc2ebfd33dbc33a"
    )  # the layer digest in the cosign manifest, per SOURCES.md
    certificate = next(c for n, _, c in _signed_cases(corpus) if n == "slsa-container")
    trusted = [Verifier(certificate.public_key())]  # type: ignore[arg-type]
    expected = _stdlib_payload(json.loads(envelope))
    opened = open_attestation(
        envelope,
        trusted,
        digest=index_digest,
        predicate_types={expected["predicateType"]},
        allow_legacy=True,
    )
    assert opened.envelope_digest == Digest.of(envelope)
    with pytest.raises(StatementError, match=r"v0\.1"):
        open_attestation(envelope, trusted, digest=index_digest)
    other = Digest.of(b"some other image")
    with pytest.raises(SubjectMismatch, match="not sha256:"):
        open_attestation(envelope, trusted, digest=other, allow_legacy=True)


def test_delegator_slsa_v1_provenance_reads(corpus: Path) -> None:
    bundle = json.loads(
        (_folder(corpus) / "slsa-delegator-v2.1.0-workflow_dispatch.build.slsa.json").read_text()
    )
    expected = _stdlib_payload(bundle["dsseEnvelope"])
    assert expected["predicateType"] == SLSA_PROVENANCE_V1
    statement = parse_statement(
        decode_envelope(json.dumps(bundle["dsseEnvelope"]).encode()).payload
    )
    facts = read_provenance(statement.predicate)
    predicate = expected["predicate"]
    git = [
        d["digest"]["gitCommit"]
        for d in predicate["buildDefinition"]["resolvedDependencies"]
        if "gitCommit" in d.get("digest", {})
    ]
    assert facts.commit == git[0]
    assert facts.builder_id == predicate["runDetails"]["builder"]["id"]
    assert facts.run_id == predicate["runDetails"]["metadata"]["invocationId"]
    assert facts.build_type == predicate["buildDefinition"]["buildType"]


# --- unsigned statements and the no-key envelope -----------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["buildkit-provenance-v0.2.intoto.json", "slsa1-container-based-provenance-unsigned.json"],
)
def test_unsigned_statements_parse(corpus: Path, name: str) -> None:
    data = (_folder(corpus) / name).read_bytes()
    expected = json.loads(data)
    statement = parse_statement(data)
    assert statement.legacy
    assert statement.predicate_type == expected["predicateType"]
    assert [(s.name, s.digest) for s in statement.subject] == _subjects(expected)


def test_slsa_v1_0_draft_provenance_reads_the_git_sha1(corpus: Path) -> None:
    data = (_folder(corpus) / "slsa1-container-based-provenance-unsigned.json").read_bytes()
    expected = json.loads(data)["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    facts = read_provenance(parse_statement(data).predicate)
    assert expected["uri"].startswith("git+")
    assert facts.commit == expected["digest"]["sha1"]
    assert facts.builder_id is None  # no runDetails in that file: tolerated


def test_cosign_vuln_envelope_parses_but_trusts_no_one(corpus: Path) -> None:
    raw = (_folder(corpus) / "cosign-vuln-attestation.dsse.json").read_bytes()
    expected = _stdlib_payload(json.loads(raw))
    decoded = decode_envelope(raw)
    assert [hint for hint, _ in decoded.signatures] == [""]
    statement = parse_statement(decoded.payload)
    assert [(s.name, s.digest) for s in statement.subject] == _subjects(expected)
    assert statement.predicate_type == expected["predicateType"]
    with pytest.raises(SignatureError):
        verify_envelope(raw, [Signer(generate_key("ecdsa-p256")).verifier()])


# --- GCB: signs the raw payload, not the PAE -----------------------------------------------------


def test_gcb_envelope_is_rejected_by_strict_dsse_but_signs_the_raw_payload(corpus: Path) -> None:
    folder = _folder(corpus)
    report = json.loads((folder / "gcb-container-provenance-v0.3.json").read_text())
    provenance = report["provenance_summary"]["provenance"][0]
    envelope = json.dumps(provenance["envelope"]).encode()
    verifier = Verifier(load_public_key(folder / "gcb-us-west2-attestor.pub.pem"))
    with pytest.raises(SignatureError):
        verify_envelope(envelope, [verifier])
    # what GCB actually signed: the decoded payload itself (documented quirk)
    decoded = decode_envelope(envelope)
    ((_, signature),) = decoded.signatures
    assert verifier.verify(signature, decoded.payload)
    statement = parse_statement(decoded.payload)
    image = report["image_summary"]["digest"]
    algorithm, _, hex_value = image.partition(":")
    assert any(s.digest.get(algorithm) == hex_value for s in statement.subject)
