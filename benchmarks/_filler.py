"""Really-signed filler entries for the benchmarks that need a large ledger (latency.py,
server.py): records of other digests (build, tests, scan per digest), signed with one key in
a process pool. Imported as ``benchmarks._filler`` (the scripts keep benchmarks/ itself off
``sys.path``, where copy.py would shadow the standard library's ``copy``)."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_SIGNER: Any = None


def _init(pem: bytes) -> None:
    global _SIGNER
    from conveyor.attest import load_signing_key

    with tempfile.NamedTemporaryFile(suffix=".key") as f:
        f.write(pem)
        f.flush()
        _SIGNER = load_signing_key(f.name)


def facts(i: int) -> tuple[str, str, str]:
    """(digest, kind, predicate type) of filler entry ``i``: build, tests, scan per digest."""
    from conveyor.attest import SLSA_PROVENANCE_V1, TEST_RESULT_V01, VULNS_V02

    digest = f"sha256:{hashlib.sha256(b'filler-%d' % (i // 3)).hexdigest()}"
    kinds = (("build", SLSA_PROVENANCE_V1), ("tests", TEST_RESULT_V01), ("scan", VULNS_V02))
    kind, predicate_type = kinds[i % 3]
    return digest, kind, predicate_type


def _sign(job: tuple[int, int, float]) -> list[bytes]:
    from conveyor.attest import (
        IN_TOTO_PAYLOAD_TYPE,
        FindingInput,
        ScanInput,
        make_statement,
        make_test_result,
        sign_envelope,
        slsa_provenance,
        vulnerability_scan,
    )
    from conveyor.oci.digest import Digest

    start, end, base = job
    out = []
    for i in range(start, end):
        digest, kind, predicate_type = facts(i)
        at = datetime.fromtimestamp(base + i * 0.001, UTC)
        if kind == "build":
            predicate = slsa_provenance(
                commit=f"{i // 3:040x}", repository_url=None, run_id=str(i // 3),
                run_url=None, builder_id="https://ci.example/builder",
            )  # fmt: skip
        elif kind == "tests":
            predicate = make_test_result(
                passed=["unit::a", "unit::b"], failed=[], reports=[], at=at
            )
        else:
            predicate = vulnerability_scan(
                ScanInput("trivy", "0.50", None, at, at, [FindingInput("CVE-1", "low")])
            )
        statement = make_statement(
            "registry.example/filler", Digest.parse(digest), predicate_type, predicate
        )
        out.append(sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [_SIGNER]))
    return out


def signed(
    pem: bytes, n: int, base: float, workers: int, *, step: int = 5_000
) -> Iterator[list[bytes]]:
    """The envelopes of filler entries 0..n-1 in order, in chunks of ``step``; entry ``i``
    is dated ``base + i ms``."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = [(a, min(a + step, n), base) for a in range(0, n, step)]
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init, initargs=(pem,)
    ) as pool:
        yield from pool.map(_sign, jobs)
