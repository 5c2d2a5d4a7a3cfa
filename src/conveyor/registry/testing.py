"""An in-memory OCI distribution registry as an httpx transport, for offline tests.

``FakeRegistry(...).transport`` plugs into ``RegistryClient(transport=...)``. It stores
blobs, manifests and tags per repository, runs upload sessions (monolithic and chunked),
mounts, paginated tag lists and the referrers API, and can play a hostile registry:

- ``lie(digest, data)``          serve other bytes for a blob or manifest;
- ``fail_next(status, times)``   answer 429/5xx (optionally with ``Retry-After``);
- ``always_401``                 refuse every credential;
- ``answer_html``                answer every request with an HTML page;
- ``redirect_blobs_to(host)``    send blob GETs to a storage host (signed URL);
- ``huge_manifest(name, ref, size)``  stream a huge manifest, counting what was read;
- ``token_prefix``, ``url_signature``  put a canary into issued tokens and signed URLs;
- ``storage_status``             make the blob storage host fail;
- ``require_auth`` / ``bearer``  Basic auth, or Bearer tokens from ``auth.<host>/token``
                                 with per-repository scopes checked on every request.

Every request is logged in ``requests`` (method, url, headers) for assertions. The fake is
deliberately independent of conveyor's parsers: it reads manifests with plain ``json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

__all__ = ["FakeRegistry", "LoggedRequest"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_ROUTES = [
    ("tags", re.compile(rf"^/v2/(?P<name>{_NAME})/tags/list$")),
    ("manifest", re.compile(rf"^/v2/(?P<name>{_NAME})/manifests/(?P<ref>[^/]+)$")),
    ("uploads", re.compile(rf"^/v2/(?P<name>{_NAME})/blobs/uploads/?$")),
    ("upload", re.compile(rf"^/v2/(?P<name>{_NAME})/blobs/uploads/(?P<id>[0-9a-f-]+)$")),
    ("blob", re.compile(rf"^/v2/(?P<name>{_NAME})/blobs/(?P<digest>[^/]+)$")),
    ("referrers", re.compile(rf"^/v2/(?P<name>{_NAME})/referrers/(?P<digest>[^/]+)$")),
]
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    url: str
    headers: dict[str, str]

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: str | None


@dataclass
class _Repo:
    blobs: set[str] = field(default_factory=set)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return httpx.Response(
        status, content=body, headers={"Content-Type": "application/json", **headers}
    )


class FakeRegistry:
    """An in-memory registry at ``https://<host>``; see the module docstring for knobs."""

    def __init__(
        self,
        host: str = "fake.example",
        *,
        require_auth: tuple[str, str] | None = None,
        bearer: bool = False,
        referrers_api: bool = True,
        token_lifetime: int | None = 300,
    ) -> None:
        self.host = host
        self.require_auth = require_auth
        self.bearer = bearer
        self.referrers_api = referrers_api
        self.token_lifetime = token_lifetime
        self.auth_host = f"auth.{host.split(':')[0]}"
        self.storage_host: str | None = None
        self.always_401 = False
        self.answer_html = False
        self.requests: list[LoggedRequest] = []
        self.tokens_issued: list[tuple[str, tuple[str, ...]]] = []
        self._blobs: dict[str, bytes] = {}
        self._repos: dict[str, _Repo] = {}
        self._uploads: dict[str, tuple[str, bytearray]] = {}
        self._lies: dict[str, bytes] = {}
        self._failures: list[_Failure] = []
        self._tokens: dict[str, tuple[str, ...]] = {}
        self._huge: dict[tuple[str, str], int] = {}
        self.huge_bytes_served = 0
        self.token_prefix = "fake-token-"  # noqa: S105 - a fake, by design
        self.url_signature = "signed-secret"
        self.storage_status = 200
        self._lock = threading.RLock()
        self.transport = httpx.MockTransport(self._handle)

    # --- knobs -------------------------------------------------------------------------

    def lie(self, digest: str, data: bytes) -> None:
        """Serve ``data`` whenever ``digest`` (a blob or manifest) is asked for."""
        self._lies[str(digest)] = data

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self._failures.append(_Failure(status, times, retry_after))

    def redirect_blobs_to(self, host: str) -> None:
        self.storage_host = host

    def huge_manifest(self, name: str, reference: str, size: int) -> None:
        """Serve a ``size``-byte manifest body (no Content-Length) for ``name:reference``."""
        self._huge[(name, reference)] = size

    # --- direct access for test setup and assertions ------------------------------------

    def _repo(self, name: str) -> _Repo:
        return self._repos.setdefault(name, _Repo())

    def add_blob(self, name: str, data: bytes) -> str:
        digest = _digest_of(data)
        with self._lock:
            self._blobs[digest] = data
            self._repo(name).blobs.add(digest)
        return digest

    def add_manifest(
        self, name: str, data: bytes, media_type: str, *, tag: str | None = None
    ) -> str:
        digest = _digest_of(data)
        with self._lock:
            repo = self._repo(name)
            repo.manifests[digest] = (data, media_type)
            if tag is not None:
                repo.tags[tag] = digest
        return digest

    def blob(self, digest: str) -> bytes | None:
        return self._blobs.get(str(digest))

    def has_blob(self, name: str, digest: str) -> bool:
        return str(digest) in self._repo(name).blobs

    def manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        repo = self._repo(name)
        digest = repo.tags.get(reference, reference)
        return repo.manifests.get(digest)

    def tags(self, name: str) -> dict[str, str]:
        return dict(self._repo(name).tags)

    def digests(self) -> list[str]:
        """Every blob and manifest digest stored (for tests that lie about all of them)."""
        found = set(self._blobs)
        for repo in self._repos.values():
            found.update(repo.manifests)
        return sorted(found)

    def manifest_count(self) -> int:
        return sum(len(r.manifests) for r in self._repos.values())

    @property
    def open_uploads(self) -> int:
        return len(self._uploads)

    # --- HTTP --------------------------------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(
                LoggedRequest(request.method, str(request.url), dict(request.headers.items()))
            )
        host = request.url.netloc.decode()
        if self.answer_html:
            return httpx.Response(
                200,
                content=b"<!DOCTYPE html><html><body>Welcome to nginx!</body></html>",
                headers={"Content-Type": "text/html"},
            )
        if host == self.auth_host:
            return self._token_endpoint(request)
        if self.storage_host is not None and host == self.storage_host:
            return self._storage(request)
        if host != self.host:
            return httpx.Response(502, text=f"unknown host {host}")
        with self._lock:
            if self._failures:
                failure = self._failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.pop(0)
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                return _error(failure.status, "TOOMANYREQUESTS", "slow down", **headers)
        path = request.url.path
        if path in ("/v2/", "/v2"):
            refused = self._check_auth(request, ())
            return refused or httpx.Response(
                200, json={}, headers={"Docker-Distribution-API-Version": "registry/2.0"}
            )
        for route, pattern in _ROUTES:
            match = pattern.match(path)
            if match:
                groups = match.groupdict()
                name = groups["name"]
                pushing = request.method not in ("GET", "HEAD")
                scopes = [f"repository:{name}:{'pull,push' if pushing else 'pull'}"]
                mount_from = request.url.params.get("from")
                if route == "uploads" and mount_from:
                    scopes.append(f"repository:{mount_from}:pull")
                refused = self._check_auth(request, tuple(scopes))
                if refused is not None:
                    return refused
                handler = getattr(self, f"_route_{route}")
                with self._lock:
                    response: httpx.Response = handler(request, **groups)
                return response
        return httpx.Response(404, text="404 page not found\n")

    # --- auth --------------------------------------------------------------------------

    def _challenge(self, scopes: tuple[str, ...]) -> dict[str, str]:
        if self.bearer:
            value = f'Bearer realm="https://{self.auth_host}/token",service="{self.host}"'
            if scopes:
                value += f',scope="{" ".join(scopes)}"'
        else:
            value = 'Basic realm="fake registry"'
        return {"WWW-Authenticate": value}

    def _check_auth(self, request: httpx.Request, scopes: tuple[str, ...]) -> httpx.Response | None:
        if self.always_401:
            return _error(401, "UNAUTHORIZED", "authentication required", **self._challenge(scopes))
        if self.require_auth is None and not self.bearer:
            return None
        header = request.headers.get("authorization", "")
        if self.bearer:
            token = header[7:] if header.lower().startswith("bearer ") else ""
            granted = self._tokens.get(token)
            if granted is not None and all(_covers(granted, s) for s in scopes):
                return None
        elif self.require_auth is not None and header == _basic(*self.require_auth):
            return None
        return _error(401, "UNAUTHORIZED", "authentication required", **self._challenge(scopes))

    def _token_endpoint(self, request: httpx.Request) -> httpx.Response:
        if not self.bearer or request.url.path != "/token":
            return httpx.Response(404, text="not found")
        if self.require_auth is not None and request.headers.get("authorization") != _basic(
            *self.require_auth
        ):
            return httpx.Response(401, json={"details": "incorrect username or password"})
        scopes = tuple(request.url.params.get_list("scope"))
        token = f"{self.token_prefix}{uuid.uuid4().hex}"
        with self._lock:
            self._tokens[token] = scopes
            self.tokens_issued.append((token, scopes))
        doc: dict[str, object] = {"token": token}
        if self.token_lifetime is not None:
            doc["expires_in"] = self.token_lifetime
        return httpx.Response(200, json=doc)

    # --- routes ------------------------------------------------------------------------

    def _route_tags(self, request: httpx.Request, name: str) -> httpx.Response:
        if name not in self._repos:
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        tags = sorted(self._repos[name].tags)
        last = request.url.params.get("last")
        if last:
            tags = [t for t in tags if t > last]
        n_text = request.url.params.get("n")
        headers: dict[str, str] = {}
        if n_text and n_text.isdigit():
            n = int(n_text)
            if len(tags) > n:
                tags = tags[:n]
                headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
        return httpx.Response(200, json={"name": name, "tags": tags}, headers=headers)

    def _route_manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        repo = self._repo(name)
        if request.method in ("GET", "HEAD"):
            huge = self._huge.get((name, ref))
            if huge is not None:
                return httpx.Response(
                    200,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                    stream=_Endless(self, huge),
                )
            digest = repo.tags.get(ref, ref)
            stored = repo.manifests.get(digest)
            if stored is None:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            data, media_type = stored
            data = self._lies.get(digest, data)
            headers = {
                "Content-Type": media_type,
                "Docker-Content-Digest": digest,
                "Content-Length": str(len(data)),
            }
            if request.method == "HEAD":
                return httpx.Response(200, headers=headers)
            return httpx.Response(200, content=data, headers=headers)
        if request.method == "PUT":
            data = request.read()
            media_type = request.headers.get("content-type", "")
            digest = _digest_of(data)
            if _DIGEST.match(ref) and ref != digest:
                return _error(400, "DIGEST_INVALID", "provided digest did not match content")
            try:
                doc = json.loads(data)
            except ValueError:
                return _error(400, "MANIFEST_INVALID", "manifest invalid")
            for blob in _referenced_blobs(doc):
                if blob not in repo.blobs:
                    return _error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown {blob}")
            repo.manifests[digest] = (data, media_type)
            if not _DIGEST.match(ref):
                repo.tags[ref] = digest
            headers = {
                "Docker-Content-Digest": digest,
                "Location": f"/v2/{name}/manifests/{digest}",
            }
            subject = doc.get("subject") if isinstance(doc, dict) else None
            if self.referrers_api and isinstance(subject, dict) and "digest" in subject:
                headers["OCI-Subject"] = str(subject["digest"])
            return httpx.Response(201, headers=headers)
        if request.method == "DELETE":
            if ref not in repo.manifests:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            del repo.manifests[ref]
            for tag in [t for t, d in repo.tags.items() if d == ref]:
                del repo.tags[tag]
            return httpx.Response(202)
        return _error(405, "UNSUPPORTED", "method not allowed")

    def _route_blob(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        repo = self._repo(name)
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "method not allowed")
        if digest not in repo.blobs:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        data = self._lies.get(digest, self._blobs[digest])
        if self.storage_host is not None and request.method == "GET":
            location = (
                f"https://{self.storage_host}/store/{digest}"
                f"?X-Amz-Signature={self.url_signature}&X-Amz-Expires=300"
            )
            return httpx.Response(307, headers={"Location": location})
        headers = {
            "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
        }
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, content=data, headers=headers)

    def _storage(self, request: httpx.Request) -> httpx.Response:
        digest = request.url.path.rsplit("/", 1)[-1]
        data = self._lies.get(digest, self._blobs.get(digest))
        if data is None or self.storage_status != 200:
            return httpx.Response(
                self.storage_status if self.storage_status != 200 else 404,
                text=f"<Error><Code>NoSuchKey</Code><Request>{request.url}</Request></Error>",
            )
        return httpx.Response(200, content=data, headers={"Content-Type": "binary/octet-stream"})

    def _route_uploads(self, request: httpx.Request, name: str) -> httpx.Response:
        if request.method != "POST":
            return _error(405, "UNSUPPORTED", "method not allowed")
        repo = self._repo(name)
        mount = request.url.params.get("mount")
        source = request.url.params.get("from")
        if mount and source and mount in self._repo(source).blobs and True:
            repo.blobs.add(mount)
            return httpx.Response(
                201,
                headers={
                    "Location": f"/v2/{name}/blobs/{mount}",
                    "Docker-Content-Digest": mount,
                },
            )
        upload_id = str(uuid.uuid4())
        self._uploads[upload_id] = (name, bytearray())
        return httpx.Response(
            202,
            headers={
                "Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state=opaque",
                "Range": "0-0",
                "Docker-Upload-UUID": upload_id,
            },
        )

    def _route_upload(self, request: httpx.Request, name: str, id: str) -> httpx.Response:  # noqa: A002
        session = self._uploads.get(id)
        if session is None or session[0] != name:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
        buffer = session[1]
        if request.method == "DELETE":
            del self._uploads[id]
            return httpx.Response(204)
        data = request.read()
        if request.method == "PATCH":
            content_range = request.headers.get("content-range")
            if content_range:
                start, _, _end = content_range.partition("-")
                if int(start) != len(buffer):
                    return httpx.Response(416, headers={"Range": f"0-{len(buffer) - 1}"})
            buffer += data
            return httpx.Response(
                202,
                headers={
                    "Location": f"/v2/{name}/blobs/uploads/{id}?_state=opaque",
                    "Range": f"0-{len(buffer) - 1}",
                },
            )
        if request.method == "PUT":
            buffer += data
            digest = request.url.params.get("digest", "")
            algorithm = digest.split(":", 1)[0]
            if (
                algorithm not in ("sha256", "sha512")
                or _digest_of(bytes(buffer), algorithm) != digest
            ):
                return _error(
                    400, "DIGEST_INVALID", "provided digest did not match uploaded content"
                )
            del self._uploads[id]
            self._blobs[digest] = bytes(buffer)
            self._repo(name).blobs.add(digest)
            return httpx.Response(
                201,
                headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
            )
        return _error(405, "UNSUPPORTED", "method not allowed")

    def _route_referrers(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        if not self.referrers_api or request.method != "GET":
            return httpx.Response(404, text="404 page not found\n")
        wanted = request.url.params.get("artifactType")
        entries = []
        for manifest_digest, (data, media_type) in self._repo(name).manifests.items():
            try:
                doc = json.loads(data)
            except ValueError:
                continue
            subject = doc.get("subject") if isinstance(doc, dict) else None
            if not isinstance(subject, dict) or subject.get("digest") != digest:
                continue
            artifact_type = doc.get("artifactType") or doc.get("config", {}).get("mediaType")
            if wanted and artifact_type != wanted:
                continue
            entry: dict[str, object] = {
                "mediaType": media_type,
                "digest": manifest_digest,
                "size": len(data),
            }
            if artifact_type:
                entry["artifactType"] = artifact_type
            if doc.get("annotations"):
                entry["annotations"] = doc["annotations"]
            entries.append(entry)
        headers = {"Content-Type": OCI_INDEX}
        if wanted:
            headers["OCI-Filters-Applied"] = "artifactType"
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        return httpx.Response(200, content=body.encode(), headers=headers)


class _Endless(httpx.SyncByteStream):
    """A response body of ``size`` bytes, produced lazily and counted as it is read."""

    def __init__(self, registry: FakeRegistry, size: int) -> None:
        self._registry = registry
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        prefix = b'{"schemaVersion": 2, "annotations": {"pad": "'
        self._registry.huge_bytes_served += len(prefix)
        yield prefix
        sent = len(prefix)
        piece = b"x" * 65536
        while sent < self._size:
            self._registry.huge_bytes_served += len(piece)
            sent += len(piece)
            yield piece


def _covers(granted: tuple[str, ...], needed: str) -> bool:
    resource, _, actions = needed.rpartition(":")
    for scope in granted:
        g_resource, _, g_actions = scope.rpartition(":")
        if g_resource == resource and set(actions.split(",")) <= set(g_actions.split(",")):
            return True
    return False


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _referenced_blobs(doc: object) -> list[str]:
    if not isinstance(doc, dict):
        return []
    found = []
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("digest"), str):
        found.append(config["digest"])
    for layer in doc.get("layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("digest"), str):
            found.append(layer["digest"])
    return found
