"""Signing keys: generate, write, load; sign and verify raw bytes.

Conveyor signs with Ed25519 (default) or ECDSA P-256/SHA-256 (DER signatures). For reading
third-party attestations it also verifies ECDSA P-384/SHA-384 and RSA-PSS/SHA-256 (any salt
length, modulus >= 2048 bits); RSA keys are never used to sign.

A key's id is ``"sha256:" + hex(sha256(DER SubjectPublicKeyInfo))``: it depends only on the
public key, not on the PEM text around it, so the same key always has the same id.

No message raised here ever contains key material or a password.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conveyor.errors import InputError
from conveyor.files import FileTooLarge, UnreadableFile, read_bounded

KeyKind = Literal["ed25519", "ecdsa-p256"]
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM key is a few KiB; refuse /dev/zero and friends
_PEM_MARK = "-----BEGIN"
_KEY_FILE_SUFFIXES = {".key", ".pem", ".priv", ".p8", ".pkcs8", ".pub"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Hash per curve for ECDSA verification; only P-256 signs.
_EC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
}


class KeyFileError(InputError):
    """A key that cannot be read, decrypted or used. Never carries key material."""


def generate_key(kind: KeyKind = "ed25519") -> PrivateKey:
    if kind == "ed25519":
        return Ed25519PrivateKey.generate()
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise KeyFileError(f"unknown key type {kind!r}: use ed25519 or ecdsa-p256")


def keyid(public_key: PublicKey) -> str:
    """``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo of ``public_key``."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


# --- writing ---------------------------------------------------------------------------


def write_keypair(
    key: PrivateKey,
    directory: Path,
    name: str,
    *,
    password: bytes | None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub`` (SPKI PEM) into ``directory``.

    The private key file is created with mode 0600 from its first byte (never readable by
    others, even briefly) and appears under its final name only when complete. Existing
    files are refused unless ``overwrite``. Returns ``(private_path, public_path)``.
    """
    _check_signing_key(key)
    if not _NAME.fullmatch(name):
        raise KeyFileError(
            f"invalid key name {name[:80]!r}: use letters, digits, '.', '_' or '-' "
            "(no path separators)"
        )
    if password is not None and not password:
        raise KeyFileError("the key password is empty: give a password or none at all")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not overwrite:
            for path in (private_path, public_path):
                if path.exists() or path.is_symlink():
                    raise KeyFileError(f"{path} already exists; refusing to overwrite it")
        _write_atomically(private_path, private_pem, mode=0o600, overwrite=overwrite)
        try:
            _write_atomically(public_path, public_pem, mode=0o644, overwrite=overwrite)
        except BaseException:
            if not overwrite:
                with contextlib.suppress(OSError):
                    private_path.unlink()
            raise
    except FileExistsError as exc:
        raise KeyFileError(f"{exc.filename} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        where = exc.filename or directory
        raise KeyFileError(f"cannot write key files in {where}: {exc.strerror}") from exc
    return private_path, public_path


def _write_atomically(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away; say exactly what we mean
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if the name exists: no check-then-write race
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


# --- loading ---------------------------------------------------------------------------


def load_signing_key(source: str, *, password: bytes | None = None) -> Signer:
    """Load a private key from a file path, or from the PEM text itself.

    CI secrets arrive as environment values, so ``source`` holding ``-----BEGIN`` is taken
    as PEM text (literal ``\\n`` sequences are accepted for single-line secrets); anything
    else is a path. Encrypted keys need ``password``.
    """
    if _PEM_MARK in source:
        pem = source if "\n" in source.strip() else source.replace("\\n", "\n")
        return Signer(_load_private_pem(pem.encode("utf-8"), password, where="the PEM text"))
    path = Path(source)
    # Never echo a value that may be a secret pasted in the wrong form: only names that
    # look like key files are repeated back.
    shown = str(path) if path.suffix.lower() in _KEY_FILE_SUFFIXES else "the given value"
    reason, data = "", b""
    try:
        data = read_bounded(path, max_bytes=MAX_KEY_FILE_BYTES)
    except FileTooLarge:
        reason = f"larger than {MAX_KEY_FILE_BYTES} bytes"
    except UnreadableFile as exc:
        reason = exc.reason
    except ValueError:  # a NUL byte in the value: not a path
        reason = "unreadable"
    if reason:
        # Raised outside the except block, unchained: the OSError would carry the value
        # as its filename, and the value may be a secret pasted in the wrong form.
        raise KeyFileError(
            f"cannot read the signing key from {shown} ({reason}): give a key file path "
            "or the PEM text"
        )
    return Signer(_load_private_pem(data, password, where=shown))


def _load_private_pem(data: bytes, password: bytes | None, *, where: str) -> PrivateKey:
    if b"-----BEGIN PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise KeyFileError(f"{where} holds a public key; signing needs the private key")
    encrypted = b"ENCRYPTED" in data
    if encrypted and not password:
        raise KeyFileError(f"the signing key in {where} is encrypted: set CONVEYOR_KEY_PASSWORD")
    try:
        key = serialization.load_pem_private_key(data, password if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise KeyFileError(
                f"cannot decrypt the signing key in {where}: wrong password or damaged key"
            ) from exc
        raise KeyFileError(f"{where} does not hold a PEM private key") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"the signing key in {where} uses an unsupported format") from exc
    return _check_signing_key(key, where=where)


def _check_signing_key(key: object, *, where: str = "the key") -> PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise KeyFileError(
                f"{where}: ECDSA curve {key.curve.name} cannot sign here; use P-256 "
                "(conveyor keys generate --type ecdsa-p256)"
            )
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(
            f"{where}: RSA keys are accepted for verification only; "
            "generate an ed25519 or ecdsa-p256 key to sign"
        )
    raise KeyFileError(f"{where}: unsupported key type; use ed25519 or ecdsa-p256")


def load_public_key(pem: bytes | Path) -> PublicKey:
    """Load a SubjectPublicKeyInfo PEM (bytes, or a file path)."""
    where = str(pem) if isinstance(pem, Path) else "the PEM text"
    if isinstance(pem, Path):
        try:
            pem = read_bounded(pem, max_bytes=MAX_KEY_FILE_BYTES)
        except UnreadableFile as exc:
            raise KeyFileError(f"cannot read public key {where}: {exc.reason}") from exc
    if b"PRIVATE KEY" in pem:
        raise KeyFileError(f"{where} holds a private key; a public key (.pub) is expected")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{where} does not hold a PEM public key") from exc
    return check_public_key(key, where=where)


def check_public_key(key: object, *, where: str = "the public key") -> PublicKey:
    """Return ``key`` if conveyor can verify with it, else raise ``KeyFileError``."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_HASHES:
            raise KeyFileError(f"{where}: unsupported ECDSA curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{where}: RSA key of {key.key_size} bits is too small")
        return key
    raise KeyFileError(f"{where}: unsupported public key type")


# --- signing and verifying ---------------------------------------------------------------


class Signer:
    """A private key ready to sign: Ed25519, or ECDSA P-256 with SHA-256 (DER signature)."""

    __slots__ = ("_key", "keyid", "public_key")

    def __init__(self, private_key: PrivateKey) -> None:
        self._key = _check_signing_key(private_key)
        self.public_key: PublicKey = private_key.public_key()
        self.keyid = keyid(self.public_key)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verifier(self) -> Verifier:
        return Verifier(self.public_key)

    def __repr__(self) -> str:  # never the key itself
        return f"Signer(keyid={self.keyid!r})"


class Verifier:
    """A public key that checks signatures; ``verify`` never raises on a bad signature."""

    __slots__ = ("keyid", "public_key")

    def __init__(self, public_key: PublicKey, *, key_id: str | None = None) -> None:
        self.public_key = check_public_key(public_key)
        self.keyid = key_id or keyid(public_key)

    @classmethod
    def from_pem(cls, pem: bytes | Path) -> Verifier:
        return cls(load_public_key(pem))

    def verify(self, signature: bytes, data: bytes) -> bool:
        key = self.public_key
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(signature, data)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(_EC_HASHES[key.curve.name]()))
            else:
                key.verify(
                    signature,
                    data,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                    hashes.SHA256(),
                )
        except (InvalidSignature, ValueError):
            # ValueError: a signature that is not even well-formed DER, wrong length, ...
            return False
        return True

    def __repr__(self) -> str:
        return f"Verifier(keyid={self.keyid!r})"
