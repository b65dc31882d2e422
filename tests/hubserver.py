"""A Hugging Face Hub look-alike for tests, speaking the HTTP that huggingface_hub 2.x speaks.

Only the subset that localtable's pull path uses, shaped after what
huggingface_hub 2.4.0 sends and parses (hf_api.py, file_download.py,
utils/_http.py):

  GET  /api/models/{repo}[/revision/{rev}][?blobs=true]
       HfApi.model_info / repo_info / resolve_revision: `sha`, `siblings`, and
       with blobs=true each sibling's `size`, `blobId` and `lfs` {sha256, size, pointerSize}.
  POST /api/models/{repo}/paths-info/{rev}   (form: paths=...&paths=...&expand=...)
       HfApi.get_paths_info: [{type, path, size, oid, lfs: {oid, size, pointerSize}}].
  HEAD|GET /{repo}/resolve/{rev}/{path}
       hf_hub_download: HEAD for X-Repo-Commit, ETag / X-Linked-Etag (the sha256 of
       an LFS file, which becomes the blob's name in the cache) and X-Linked-Size,
       then GET, with `Range: bytes=N-` when the client resumes a cut transfer.
  Errors are 404s with the X-Error-Code header that hf_raise_for_status maps
  to RepositoryNotFoundError, RevisionNotFoundError and RemoteEntryNotFoundError.

With `cdn_redirect` the resolve URL of an LFS file answers 302 to
http://localhost:{port}/cdn/{sha256}, another origin, like the real Hub's CDN:
the client then reads the metadata from the 302 itself and downloads from the
CDN URL without following the redirect on HEAD.

Switches for failure tests (keyed by file path in the repo):
  cut[path] = N          every transfer of the file stops at byte N of the file, after
                         headers announcing the full length (cut_times limits how many)
  tamper                 serve the bytes with one byte flipped (metadata stays right)
  wrong_sha256           advertise a wrong sha256 everywhere (API and X-Linked-Etag)
  wrong_size             advertise a wrong size in the API metadata

StalledServer is another host: one that accepts connections and never answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 1 << 20
_MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_PATHS_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


@dataclass(frozen=True)
class HubFile:
    """One file of a commit: its bytes (in memory or on disk) and its git/LFS identity."""

    source: Path | bytes
    size: int
    sha256: str
    lfs: bool

    @staticmethod
    def of(source: Path | bytes, *, lfs: bool) -> HubFile:
        digest = hashlib.sha256()
        for block in _read(source, 0, None):
            digest.update(block)
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        return HubFile(source=source, size=size, sha256=digest.hexdigest(), lfs=lfs)

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer file that git stores in place of an LFS file."""
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    @property
    def git_oid(self) -> str:
        """The git blob id: of the pointer for an LFS file, of the bytes otherwise."""
        digest = hashlib.sha1(usedforsecurity=False)
        if self.lfs:
            digest.update(b"blob %d\0" % len(self.pointer) + self.pointer)
        else:
            digest.update(b"blob %d\0" % self.size)
            for block in _read(self.source, 0, None):
                digest.update(block)
        return digest.hexdigest()


def _read(source: Path | bytes, start: int, end: int | None) -> Iterator[bytes]:
    """Bytes [start, end) of a file, in chunks."""
    if isinstance(source, bytes):
        yield source[start:end]
        return
    with source.open("rb") as fh:
        fh.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            block = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block


@dataclass
class HubRepo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)


class HubServer:
    """A Hub on 127.0.0.1:<free port>, serving what the test put in it."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self.cut: dict[str, int] = {}
        self.cut_times: int | None = None  # None: cut every transfer
        self.tamper: set[str] = set()
        self.wrong_sha256: set[str] = set()
        self.wrong_size: set[str] = set()
        self.cdn_redirect = False
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # --- content --------------------------------------------------------------

    def add_commit(
        self,
        repo: str,
        files: Mapping[str, Path | bytes],
        *,
        refs: Iterable[str] = ("main",),
        lfs: bool = True,
    ) -> str:
        """Add a commit with exactly these files; point the refs (branches/tags) at it."""
        hub_repo = self.repos.setdefault(repo, HubRepo())
        entries = {name: HubFile.of(src, lfs=lfs) for name, src in files.items()}
        seed = json.dumps(
            [repo, len(hub_repo.commits), sorted((n, f.sha256) for n, f in entries.items())]
        )
        commit = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
        hub_repo.commits[commit] = entries
        for ref in refs:
            hub_repo.refs[ref] = commit
        return commit

    def file(self, repo: str, commit: str, path: str) -> HubFile:
        return self.repos[repo].commits[commit][path]

    # --- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> HubServer:
        self._httpd = _Server(("127.0.0.1", self._port), _Handler)
        self._httpd.hub = self
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; the port then refuses connections (and start() reuses it)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the API says about a file ----------------------------------------

    def advertised(self, path: str, hub_file: HubFile) -> tuple[int, str]:
        """(size, sha256) as the metadata announces them, switches applied."""
        size = hub_file.size + 1 if path in self.wrong_size else hub_file.size
        sha = hub_file.sha256
        if path in self.wrong_sha256:
            sha = hashlib.sha256(b"not the file" + sha.encode()).hexdigest()
        return size, sha

    def lookup(self, repo: str, rev: str) -> tuple[str, dict[str, HubFile]] | str:
        """(commit, files) for a branch, tag, commit or unique commit prefix; else an error code."""
        hub_repo = self.repos.get(repo)
        if hub_repo is None:
            return "RepoNotFound"
        if rev in hub_repo.refs:
            rev = hub_repo.refs[rev]
        matches = [c for c in hub_repo.commits if c == rev or (len(rev) >= 7 and c.startswith(rev))]
        if len(matches) != 1:
            return "RevisionNotFound"
        return matches[0], hub_repo.commits[matches[0]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so a stopped server leaves no connection serving.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass

    # --- plumbing ---------------------------------------------------------------

    def _send(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object) -> None:
        body = json.dumps(data).encode()
        self._send(200, {"Content-Type": "application/json"}, body)

    def _error(self, code: str, extra: Mapping[str, str] | None = None) -> None:
        messages = {
            "RepoNotFound": "Repository not found",
            "RevisionNotFound": "Invalid rev id",
            "EntryNotFound": "Entry not found",
        }
        body = json.dumps({"error": messages.get(code, code)}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Code": code,
                   "X-Error-Message": messages.get(code, code), **(extra or {})}  # fmt: skip
        self._send(404, headers, body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def do_POST(self) -> None:  # noqa: N802
        self._route()

    def _route(self) -> None:
        hub = self.server.hub
        ranged = self.headers.get("Range")
        hub.requests.append(f"{self.command} {self.path}" + (f" [{ranged}]" if ranged else ""))
        path = urlsplit(self.path).path
        query = parse_qs(urlsplit(self.path).query)
        if self.command == "POST" and (m := _PATHS_INFO.match(path)):
            self._paths_info(m["repo"], unquote(m["rev"]))
        elif self.command == "GET" and (m := _MODEL_INFO.match(path)):
            self._model_info(m["repo"], unquote(m["rev"] or "main"), "blobs" in query)
        elif self.command in ("GET", "HEAD") and (m := _RESOLVE.match(path)):
            self._resolve(m["repo"], unquote(m["rev"]), unquote(m["path"]))
        elif self.command in ("GET", "HEAD") and (m := _CDN.match(path)):
            self._cdn(m["sha"])
        else:
            self._send(404, {"Content-Type": "text/plain"}, b"no such endpoint")

    # --- endpoints ----------------------------------------------------------------

    def _model_info(self, repo: str, rev: str, blobs: bool) -> None:
        found = self.server.hub.lookup(repo, rev)
        if isinstance(found, str):
            self._error(found)
            return
        commit, files = found
        siblings: list[dict[str, object]] = []
        for name, hub_file in sorted(files.items()):
            sibling: dict[str, object] = {"rfilename": name}
            if blobs:
                size, sha = self.server.hub.advertised(name, hub_file)
                sibling.update(size=size, blobId=hub_file.git_oid)
                if hub_file.lfs:
                    sibling["lfs"] = {"sha256": sha, "size": size,
                                      "pointerSize": len(hub_file.pointer)}  # fmt: skip
            siblings.append(sibling)
        self._json({
            "_id": hashlib.md5(repo.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": commit,
            "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
            "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": ["gguf"], "library_name": "gguf", "siblings": siblings,
        })  # fmt: skip

    def _paths_info(self, repo: str, rev: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            wanted = list(json.loads(raw).get("paths", []))
        else:
            wanted = parse_qs(raw).get("paths", [])
        found = self.server.hub.lookup(repo, rev)
        if isinstance(found, str):
            self._error(found)
            return
        _commit, files = found
        out: list[dict[str, object]] = []
        for path in wanted:
            path = path.strip("/")
            if path in files:
                hub_file = files[path]
                size, sha = self.server.hub.advertised(path, hub_file)
                item: dict[str, object] = {"type": "file", "path": path, "size": size,
                                           "oid": hub_file.git_oid}  # fmt: skip
                if hub_file.lfs:
                    item["lfs"] = {"oid": sha, "size": size, "pointerSize": len(hub_file.pointer)}
                out.append(item)
            elif any(name.startswith(path + "/") for name in files):
                oid = hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest()
                out.append({"type": "directory", "path": path, "oid": oid})
            # paths that do not exist are left out, as the Hub does
        self._json(out)

    def _resolve(self, repo: str, rev: str, path: str) -> None:
        hub = self.server.hub
        found = hub.lookup(repo, rev)
        if isinstance(found, str):
            self._error(found)
            return
        commit, files = found
        if path not in files:
            self._error("EntryNotFound", {"X-Repo-Commit": commit})
            return
        hub_file = files[path]
        size, sha = hub.advertised(path, hub_file)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hub_file.git_oid}"'}
        if hub_file.lfs:
            headers.update({"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(hub_file.size)})
            if hub.cdn_redirect:
                headers["Location"] = f"http://localhost:{hub._port}/cdn/{hub_file.sha256}"
                self._send(302, headers)
                return
        self._body(path, hub_file, headers)

    def _cdn(self, sha: str) -> None:
        for hub_repo in self.server.hub.repos.values():
            for files in hub_repo.commits.values():
                for path, hub_file in files.items():
                    if hub_file.sha256 == sha:
                        self._body(path, hub_file, {"ETag": f'"{sha}"'})
                        return
        self._send(404, {"Content-Type": "text/plain"}, b"no such blob")

    def _body(self, path: str, hub_file: HubFile, headers: dict[str, str]) -> None:
        """Send the file (or the asked range), applying the cut and tamper switches."""
        hub = self.server.hub
        start, end, status = 0, hub_file.size, 200
        if m := re.match(r"^bytes=(\d+)-(\d*)$", self.headers.get("Range", "")):
            start = int(m[1])
            end = min(int(m[2]) + 1, hub_file.size) if m[2] else hub_file.size
            if start >= hub_file.size:
                self._send(416, {"Content-Range": f"bytes */{hub_file.size}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{hub_file.size}"
        headers.update({"Content-Length": str(end - start), "Accept-Ranges": "bytes",
                        "Content-Type": "application/octet-stream"})  # fmt: skip
        self._send(status, headers)
        if self.command == "HEAD":
            return
        stop = end
        if self.command == "GET" and path in hub.cut and hub.cut_times != 0:
            stop = max(start, min(end, hub.cut[path]))
            if hub.cut_times is not None:
                hub.cut_times -= 1
        flip = hub_file.size // 2 if path in hub.tamper else -1
        position = start
        try:
            for block in _read(hub_file.source, start, stop):
                if position <= flip < position + len(block):
                    data = bytearray(block)
                    data[flip - position] ^= 0xFF
                    block = bytes(data)
                self.wfile.write(block)
                position += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to clean up
        # Returning closes the connection (HTTP/1.0): a cut transfer ends short of Content-Length.


class StalledServer:
    """A host on 127.0.0.1:<free port> that accepts connections and never answers, like a
    stalled proxy or mirror. It holds each connection until stop(), or `hold_seconds`
    after starting at most, so a client without timeouts hangs only that long."""

    def __init__(self, hold_seconds: float = 300.0) -> None:
        self.hold_seconds = hold_seconds
        self.accepted = 0
        self.url = ""
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StalledServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()
        return self

    def _hold(self) -> None:
        assert self._sock is not None
        held: list[socket.socket] = []
        deadline = time.monotonic() + self.hold_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            held.append(conn)  # read nothing, write nothing
        for conn in held:
            conn.close()
        self._sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> StalledServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
