"""Keys: generation, files on disk (mode, atomic, no overwrite), loading in every CI form."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from conveyor.attest import (
    KeyFileError,
    Signer,
    Verifier,
    generate_key,
    keyid,
    load_public_key,
    load_signing_key,
    write_keypair,
)
from conveyor.attest.keys import MAX_KEY_FILE_BYTES
from conveyor.errors import InputError
from tests.unit._files_support import raises_at_once

KINDS = ["ed25519", "ecdsa-p256"]


def _all_text(exc: BaseException) -> str:
    """Everything a user or a log could see of an error, chained causes included."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args)]
        parts += [str(getattr(seen, name, "")) for name in ("filename", "filename2")]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("kind", KINDS)
def test_written_keypair_loads_back_and_signs(tmp_path: Path, kind: str) -> None:
    key = generate_key(kind)  # type: ignore[arg-type]
    private_path, public_path = write_keypair(key, tmp_path, "ci", password=None)
    assert (private_path.name, public_path.name) == ("ci.key", "ci.pub")
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")

    signer = load_signing_key(str(private_path))
    verifier = Verifier(load_public_key(public_path))
    assert signer.keyid == verifier.keyid
    signature = signer.sign(b"hello")
    assert verifier.verify(signature, b"hello")
    assert not verifier.verify(signature, b"hellO")
    assert not verifier.verify(b"\x00" * len(signature), b"hello")
    assert not verifier.verify(b"not a signature", b"hello")


def test_private_key_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        private_path, public_path = write_keypair(generate_key(), tmp_path, "k", password=None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_private_key_is_never_visible_with_wider_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file creation asks the kernel for 0600 (or 0644 for .pub) from the start."""
    created: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_CREAT:
            created.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    write_keypair(generate_key(), tmp_path, "k", password=None)
    key_files = [mode for path, mode in created if ".key" in path]
    assert key_files == [0o600]


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = generate_key()
    write_keypair(first, tmp_path, "ci", password=None)
    before = (tmp_path / "ci.key").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(generate_key(), tmp_path, "ci", password=None)
    assert (tmp_path / "ci.key").read_bytes() == before

    # only the .pub exists: still refused, and no .key is left behind
    (tmp_path / "ci.key").unlink()
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(generate_key(), tmp_path, "ci", password=None)
    assert not (tmp_path / "ci.key").exists()

    second = generate_key()
    write_keypair(second, tmp_path, "ci", password=None, overwrite=True)
    assert load_signing_key(str(tmp_path / "ci.key")).keyid == keyid(second.public_key())
    assert stat.S_IMODE((tmp_path / "ci.key").stat().st_mode) == 0o600


def test_no_overwrite_even_when_the_file_appears_after_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final name is claimed atomically (link), not by check-then-write."""
    (tmp_path / "ci.key").write_bytes(b"someone else's key")
    monkeypatch.setattr(Path, "exists", lambda self: False)
    monkeypatch.setattr(Path, "is_symlink", lambda self: False)
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(generate_key(), tmp_path, "ci", password=None)
    assert (tmp_path / "ci.key").read_bytes() == b"someone else's key"
    assert not os.path.lexists(tmp_path / "ci.pub")
    assert sorted(os.listdir(tmp_path)) == ["ci.key"]  # no temp file left behind


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 200, "a\nb"])
def test_key_names_cannot_escape_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="invalid key name"):
        write_keypair(generate_key(), tmp_path / "keys", name, password=None)


def test_creates_missing_directory_private(tmp_path: Path) -> None:
    target = tmp_path / "new" / "keys"
    write_keypair(generate_key(), target, "ci", password=None)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


@pytest.mark.parametrize("kind", KINDS)
def test_encrypted_key_needs_the_right_password(tmp_path: Path, kind: str) -> None:
    key = generate_key(kind)  # type: ignore[arg-type]
    private_path, _ = write_keypair(key, tmp_path, "enc", password=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in private_path.read_bytes()

    with pytest.raises(KeyFileError, match="encrypted: set CONVEYOR_KEY_PASSWORD"):
        load_signing_key(str(private_path))
    with pytest.raises(KeyFileError, match="wrong password") as wrong:
        load_signing_key(str(private_path), password=b"battery staple")
    assert wrong.value.exit_code == 2
    assert "battery" not in _all_text(wrong.value)

    signer = load_signing_key(str(private_path), password=b"correct horse")
    assert signer.keyid == keyid(key.public_key())


def test_password_given_for_a_plain_key_is_harmless(tmp_path: Path) -> None:
    private_path, _ = write_keypair(generate_key(), tmp_path, "plain", password=None)
    assert load_signing_key(str(private_path), password=b"unused").sign(b"x")


def test_empty_password_is_refused_when_writing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty"):
        write_keypair(generate_key(), tmp_path, "k", password=b"")


@pytest.mark.parametrize("kind", KINDS)
def test_pem_text_from_the_environment(tmp_path: Path, kind: str) -> None:
    key = generate_key(kind)  # type: ignore[arg-type]
    private_path, _ = write_keypair(key, tmp_path, "ci", password=None)
    pem = private_path.read_text()
    expected = keyid(key.public_key())
    assert load_signing_key(pem).keyid == expected
    # surrounding whitespace, CRLF line ends, and single-line secrets with literal "\n"
    assert load_signing_key("\n  " + pem + "\n").keyid == expected
    assert load_signing_key(pem.replace("\n", "\r\n")).keyid == expected
    assert load_signing_key(pem.replace("\n", "\\n")).keyid == expected


def test_encrypted_pem_text_from_the_environment(tmp_path: Path) -> None:
    private_path, _ = write_keypair(generate_key(), tmp_path, "ci", password=b"pw")
    with pytest.raises(KeyFileError, match="encrypted"):
        load_signing_key(private_path.read_text())
    assert load_signing_key(private_path.read_text(), password=b"pw").sign(b"x")


def test_keyid_is_sha256_of_the_der_spki() -> None:
    key = generate_key()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keyid(key.public_key()) == "sha256:" + hashlib.sha256(der).hexdigest()
    assert Signer(key).keyid == keyid(key.public_key())


def _rsa_pem(bits: int = 2048) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, pem


def test_rsa_signs_nothing_but_verifies_pss() -> None:
    key, pem = _rsa_pem()
    with pytest.raises(KeyFileError, match="verification only"):
        load_signing_key(pem.decode())
    verifier = Verifier(key.public_key())
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    signature = key.sign(b"data", pss, hashes.SHA256())
    assert verifier.verify(signature, b"data")
    assert not verifier.verify(signature, b"date")
    # any salt length (in-toto uses the digest length, others the maximum)
    longest = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    assert verifier.verify(key.sign(b"data", longest, hashes.SHA256()), b"data")
    # PKCS#1 v1.5 is not the agreed scheme
    assert not verifier.verify(key.sign(b"data", padding.PKCS1v15(), hashes.SHA256()), b"data")


def test_small_rsa_keys_are_refused() -> None:
    key, _ = _rsa_pem(1024)
    with pytest.raises(KeyFileError, match="too small"):
        Verifier(key.public_key())


def test_p384_verifies_but_does_not_sign() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    signature = key.sign(b"data", ec.ECDSA(hashes.SHA384()))
    assert Verifier(key.public_key()).verify(signature, b"data")
    with pytest.raises(KeyFileError, match="P-256"):
        Signer(key)


def test_other_curves_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(KeyFileError, match="unsupported ECDSA curve"):
        Verifier(key.public_key())


def test_public_key_where_a_private_one_is_needed(tmp_path: Path) -> None:
    _, public_path = write_keypair(generate_key(), tmp_path, "ci", password=None)
    with pytest.raises(KeyFileError, match="public key"):
        load_signing_key(str(public_path))
    private_path = tmp_path / "ci.key"
    with pytest.raises(KeyFileError, match="private key"):
        load_public_key(private_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key at all",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\x00\xff" * 40,
    ],
)
def test_garbage_key_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as caught:
        load_signing_key(str(path))
    assert isinstance(caught.value, InputError)
    assert "\n" not in str(caught.value)
    with pytest.raises(KeyFileError):
        load_public_key(content)


def test_endless_key_file_is_refused() -> None:
    with pytest.raises(KeyFileError, match="character device"):
        load_signing_key("/dev/zero")


def test_oversized_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.key"
    path.write_bytes(b"x" * (MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(KeyFileError, match="larger than"):
        load_signing_key(str(path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_key_file_is_refused_at_once(tmp_path: Path) -> None:
    # issue 9 #9: a FIFO given as --key blocked forever (open() waits for a writer).
    fifo = tmp_path / "ci.key"
    os.mkfifo(fifo)
    error = raises_at_once(fifo, lambda: load_signing_key(str(fifo)))
    assert isinstance(error, KeyFileError)
    assert "named pipe" in str(error)
    pub = tmp_path / "ci.pub"
    os.mkfifo(pub)
    error = raises_at_once(pub, lambda: load_public_key(pub))
    assert isinstance(error, KeyFileError)
    assert "named pipe" in str(error)


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"missing\.key"):
        load_signing_key(str(tmp_path / "missing.key"))


def test_key_material_never_appears_in_errors(tmp_path: Path) -> None:
    """Canary: a secret pasted in the wrong form, and a damaged PEM, are never echoed."""
    canary = "CANARYc2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbGVhaw"
    # a raw base64 secret where a path or PEM was expected
    with pytest.raises(KeyFileError) as raw:
        load_signing_key(canary)
    # a PEM whose body is the canary
    pem = f"-----BEGIN PRIVATE KEY-----\n{canary}\n-----END PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError) as damaged:
        load_signing_key(pem)
    # an encrypted PEM with a wrong password that is itself the canary
    private_path, _ = write_keypair(generate_key(), tmp_path, "c", password=b"right")
    with pytest.raises(KeyFileError) as wrong:
        load_signing_key(private_path.read_text(), password=canary.encode())
    # a real key in a file with an odd name
    real = tmp_path / "plain.key"
    write_keypair(generate_key(), tmp_path, "plain", password=None)
    body = real.read_text().splitlines()[1]
    for caught in (raw, damaged, wrong):
        text = _all_text(caught.value) + repr(caught.value)
        assert canary not in text
        assert body not in text
    signer = load_signing_key(str(real))
    assert body not in repr(signer)
