"""Models from the Hugging Face Hub: pulled once, pinned, verified, then used offline.

`pull` is the only code here that touches the network. For each Hub model it
resolves the revision of models.toml (branch, tag or commit) to a commit and
reads each file's size and LFS sha256 in one metadata call, downloads with
huggingface_hub into the standard cache (HF_HUB_CACHE), hashes the file itself
(huggingface_hub checks only the size) and records the result in models.lock.
A file that does not match is deleted from the cache before the error is
reported, so nothing wrong stays usable.

`locate_pulled` reads only models.lock and the cache: no network, ever. The
Hub client reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is
imported, so set them before starting localtable, not from inside it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_token,
    hf_hub_download,
    set_client_factory,
    try_to_load_from_cache,
)
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils._http import default_client_factory
from huggingface_hub.utils.tqdm import silent_tqdm
from pydantic import BaseModel, ConfigDict

from localtable.config import LoadedConfig
from localtable.errors import ConfigError, LocaltableError, ModelFileError
from localtable.models.local import CHUNK, LocatedFile, cached_sha256
from localtable.models.lock import LockedFile, LockedModel, lock_path, read_lock, record_pull
from localtable.models.sources import HubSource

# Split GGUFs: name-00001-of-00003.gguf, name-00002-of-00003.gguf, ...
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What a Hub call or a download can raise; anything else is a bug and keeps its traceback.
_HUB_FAILURES = (httpx2.HTTPError, OSError, hf_errors.HFValidationError)
# Seconds to wait for a connection, and for each read once connected (`pull --connect-timeout`,
# `--read-timeout`). huggingface_hub waits forever for some answers (model_info), so a proxy
# or mirror that accepts the connection and never answers would hang `pull`.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# A host that sends a byte now and then never hits a per-read timeout: each exchange
# must also end within the read timeout, plus one second per MIN_RATE bytes it announces
# (a download: 1 GB may take 9 hours at this rate, not forever).
MIN_RATE = 32 << 10


class TooSlow(httpx2.ReadTimeout):
    """An answer that kept coming, too slowly to end within its deadline."""

    def __init__(self, seconds: float, request: httpx2.Request) -> None:
        super().__init__(f"not complete within {seconds:g} s", request=request)
        self.seconds = seconds


# when each request was sent: its deadline counts from there
_started: weakref.WeakKeyDictionary[httpx2.Request, float] = weakref.WeakKeyDictionary()


class _Deadline(httpx2.SyncByteStream):
    """A response body that raises TooSlow once its exchange is past its deadline. A read
    that hangs meanwhile ends at the per-read timeout, so an exchange takes at most its
    deadline plus one read timeout."""

    def __init__(
        self, stream: httpx2.SyncByteStream, request: httpx2.Request, seconds: float
    ) -> None:
        self.stream, self.request, self.seconds = stream, request, seconds
        self.ends = _started.get(request, time.monotonic()) + seconds

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            if time.monotonic() > self.ends:
                raise TooSlow(self.seconds, self.request)
            yield chunk

    def close(self) -> None:
        self.stream.close()


class NotPulledError(ModelFileError):
    """The model is not in models.lock, its pin is stale, or its files are not in the cache."""


class PulledFileMismatch(ModelFileError):
    """A pulled file in the cache no longer matches its pin (size or sha256)."""


class ModelPull(BaseModel):
    """What `pull` did for one model; `detail` is one line for the user."""

    model_config = ConfigDict(frozen=True)
    name: str
    state: Literal["pulled", "present", "skipped", "failed"]
    detail: str
    repo: str | None = None
    commit: str | None = None
    bytes_downloaded: int = 0


class PullSummary(BaseModel):
    model_config = ConfigDict(frozen=True)
    models: list[ModelPull]

    @property
    def failed(self) -> list[ModelPull]:
        return [m for m in self.models if m.state == "failed"]

    @property
    def bytes_downloaded(self) -> int:
        return sum(m.bytes_downloaded for m in self.models)


class RemoteFile(BaseModel):
    """A file as the Hub describes it at one commit."""

    model_config = ConfigDict(frozen=True)
    path: str
    size: int
    sha256: str | None  # LFS files (every real GGUF)
    git_oid: str | None  # plain git files: sha1 of "blob <size>\0<bytes>"


def shard_files(file: str) -> list[str]:
    """All files of a model: the file itself, or every shard of a split GGUF in order."""
    match = _SHARD.match(file)
    if match is None:
        return [file]
    index, count = int(match["index"]), int(match["count"])
    if count < 1 or not 1 <= index <= count:
        return [file]
    width = len(match["index"])
    if index != 1:
        raise ConfigError(
            f"file {file!r} is shard {index} of a split GGUF; set file to the first shard, "
            f"{match['stem']}-{1:0{width}d}-of-{match['count']}.gguf"
        )
    return [f"{match['stem']}-{i:0{width}d}-of-{match['count']}.gguf" for i in range(1, count + 1)]


def hub_models(loaded: LoadedConfig, panel: str | None = None) -> list[str]:
    """Names of the Hub models of one panel, or of all of models.toml, in file order."""
    config = loaded.config
    names = [p.model for p in config.panel(panel).panelists] if panel else list(config.models)
    return [n for n in dict.fromkeys(names) if isinstance(config.models[n].source, HubSource)]


# --- Offline: find what was pulled -------------------------------------------


def _cached_file(repo: str, commit: str, filename: str) -> Path | None:
    """The snapshot entry of a file in the HF cache, if it is there (no network)."""
    found = try_to_load_from_cache(repo, filename, revision=commit)
    return Path(found) if isinstance(found, str) else None


def _check_pinned(name: str, path: Path, pinned: LockedFile, *, verify: bool) -> None:
    size = path.stat().st_size
    redo = f"run `localtable pull {name}` to download it again"
    if size != pinned.size:
        raise PulledFileMismatch(
            f"model {name!r}: {path} has {size:,} bytes, expected {pinned.size:,}; {redo}"
        )
    digest = cached_sha256(path, verify=verify)
    if digest != pinned.sha256:
        raise PulledFileMismatch(
            f"model {name!r}: {path} has sha256 {digest[:12]}..., expected "
            f"{pinned.sha256[:12]}...; {redo}"
        )


def locate_pulled(
    name: str, source: HubSource, loaded: LoadedConfig, *, verify: bool = False
) -> LocatedFile:
    """The pinned file of a Hub model in the local cache; never touches the network.

    The first file is returned for modelfiles.resolve to check; the other shards
    of a split GGUF are checked here (size, sha256; re-hashed if verify).
    """
    entry = read_lock(loaded).get(name)
    pull = f"run `localtable pull {name}` (needs the network once)"
    if entry is None:
        raise NotPulledError(
            f"model {name!r} ({source.repo} {source.file}) has not been pulled yet; {pull}"
        )
    if not entry.matches(source):
        raise NotPulledError(
            f"model {name!r}: models.toml asks for {source.repo} {source.file} @ "
            f"{source.revision} but {lock_path(loaded).name} pins {entry.repo} {entry.file} @ "
            f"{entry.revision}; {pull}"
        )
    paths: list[Path] = []
    for pinned in entry.files:
        path = _cached_file(entry.repo, entry.commit, pinned.path)
        if path is None:
            raise NotPulledError(
                f"model {name!r}: {pinned.path} of {entry.repo}@{entry.commit[:12]} is not in "
                f"the Hugging Face cache ({constants.HF_HUB_CACHE}); {pull}"
            )
        paths.append(path)
    if len({p.parent for p in paths}) != 1:
        raise NotPulledError(f"model {name!r}: its shards are not side by side in the cache; "
                             f"{pull}")  # fmt: skip
    for path, pinned in zip(paths[1:], entry.files[1:], strict=True):
        _check_pinned(name, path, pinned, verify=verify)
    return LocatedFile(
        path=paths[0],
        source=f"hf {entry.repo}@{entry.commit[:12]}",
        sha256=entry.sha256,
        size=entry.size,
    )


# --- Online: pull -------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """The innermost cause of an error, on one short line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _timed_out(exc: BaseException) -> httpx2.TimeoutException | None:
    """The timeout behind an error, however huggingface_hub wrapped it."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None or isinstance(seen, httpx2.TimeoutException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _no_answer(timeout: httpx2.TimeoutException, again: str) -> str:
    """Which host did not answer, and within how long."""
    try:
        request = timeout.request
        host = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
        limits = request.extensions.get("timeout", {})
    except RuntimeError:  # no request attached
        host, limits = constants.ENDPOINT, {}
    if isinstance(timeout, TooSlow):
        return (
            f"{host} answered too slowly: {timeout} (--read-timeout plus a second per "
            f"{MIN_RATE >> 10} KiB); check the network, a proxy or HF_ENDPOINT, or give a "
            f"longer --read-timeout, then {again}"
        )
    connecting = isinstance(timeout, httpx2.ConnectTimeout)
    phase, option = ("connect", "--connect-timeout") if connecting else ("read", "--read-timeout")
    seconds = limits.get(phase)
    within = f" within {seconds:g} s" if isinstance(seconds, int | float) else ""
    what = "accept the connection" if connecting else "answer"
    return (
        f"{host} did not {what}{within} ({type(timeout).__name__}); check the network, a "
        f"proxy or HF_ENDPOINT, or give a longer {option}, then {again}"
    )


def _explain(exc: BaseException, name: str, source: HubSource, filename: str) -> ModelFileError:
    """One line naming the model, what went wrong and the fix."""
    again = f"run `localtable pull {name}` again"
    toml = "in models.toml"
    timeout = _timed_out(exc)
    if timeout is not None:
        msg = _no_answer(timeout, again)
    elif isinstance(exc, hf_errors.GatedRepoError):
        msg = (
            f"{source.repo} is gated: accept its terms on its Hub page, log in with "
            f"`hf auth login`, then {again}"
        )
    elif isinstance(exc, hf_errors.RepositoryNotFoundError):
        msg = (
            f"repository {source.repo!r} is not on the Hub (or is private); check `repo` in "
            "models.toml"
        )
    elif isinstance(exc, hf_errors.RevisionNotFoundError):
        msg = f"revision {source.revision!r} is not in {source.repo}; check `revision` {toml}"
    elif isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        msg = f"{source.repo}@{source.revision} has no file {filename!r}; check `file` {toml}"
    elif isinstance(exc, hf_errors.OfflineModeIsEnabled):
        msg = f"HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it and {again}"
    elif isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout) or (
        isinstance(exc, hf_errors.LocalEntryNotFoundError) and exc.__cause__ is not None
    ):
        msg = (
            f"cannot reach the Hub at {constants.ENDPOINT} ({_reason(exc)}); check the network "
            f"(and HF_ENDPOINT), then {again}"
        )
    elif isinstance(exc, httpx2.TransportError) or "Consistency check failed" in str(exc):
        msg = (
            f"the download of {filename} was cut off ({_reason(exc)}); nothing partial was "
            f"kept; {again}"
        )
    elif isinstance(exc, hf_errors.HfHubHTTPError):
        msg = f"the Hub answered HTTP {exc.response.status_code} ({_reason(exc)}); {again} later"
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        msg = (
            f"no room to write {filename} into {constants.HF_HUB_CACHE} ({exc.strerror}); free "
            f"disk space or point HF_HUB_CACHE at a bigger disk, then {again}"
        )
    elif isinstance(exc, hf_errors.HFValidationError):
        msg = f"invalid Hub repository or file name ({_reason(exc)}); check models.toml"
    else:
        msg = f"cannot download {filename} ({_reason(exc)}); {again}"
    return ModelFileError(f"model {name!r}: {msg}")


def _remote_files(name: str, source: HubSource, files: list[str]) -> tuple[str, list[RemoteFile]]:
    """Resolve the revision to a commit and describe the files there, in one Hub call."""
    try:
        info = HfApi().model_info(source.repo, revision=source.revision, files_metadata=True)
    except _HUB_FAILURES as exc:
        raise _explain(exc, name, source, files[0]) from None
    commit = info.sha or ""
    if not _COMMIT.match(commit):
        raise ModelFileError(
            f"model {name!r}: the Hub at {constants.ENDPOINT} gave no commit for "
            f"{source.repo}@{source.revision}; check HF_ENDPOINT"
        )
    siblings = {s.rfilename: s for s in info.siblings or []}
    remote: list[RemoteFile] = []
    for filename in files:
        sibling = siblings.get(filename)
        if sibling is None:
            ggufs = sorted(f for f in siblings if f.endswith(".gguf"))
            has = f" (GGUF files there: {', '.join(ggufs[:8])}{', ...' if len(ggufs) > 8 else ''})"
            raise ModelFileError(
                f"model {name!r}: {source.repo}@{commit[:12]} has no file {filename!r}"
                f"{has if ggufs else ''}; check `file` in models.toml"
            )
        size: int | None
        if sibling.lfs is not None:
            size, sha256, oid = sibling.lfs.size, sibling.lfs.sha256, None
        else:
            size, sha256, oid = sibling.size, None, sibling.blob_id
        if size is None or (sha256 is None and oid is None):
            raise ModelFileError(
                f"model {name!r}: the Hub gave no size or hash for {filename}, so it cannot be "
                "verified; check HF_ENDPOINT"
            )
        remote.append(RemoteFile(path=filename, size=size, sha256=sha256, git_oid=oid))
    return commit, remote


def _git_blob_oid(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(path: Path, remote: RemoteFile, *, rehash: bool) -> tuple[str | None, str]:
    """(what is wrong with the file or None, its sha256)."""
    size = path.stat().st_size
    if size != remote.size:
        return f"has {size:,} bytes but the Hub says {remote.size:,}", ""
    digest = cached_sha256(path, verify=rehash)
    if remote.sha256 is not None and digest != remote.sha256:
        return f"has sha256 {digest[:12]}... but the Hub says {remote.sha256[:12]}...", digest
    if remote.sha256 is None and _git_blob_oid(path) != remote.git_oid:
        return f"does not match its git blob id {str(remote.git_oid)[:12]}...", digest
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            return "is not a GGUF file", digest
    return None, digest


def _evict(pointer: Path) -> None:
    """Delete a bad file from the cache: the snapshot entry and the blob(s) behind it."""
    cache = Path(constants.HF_HUB_CACHE).resolve()
    chain = [pointer]
    while chain[-1].is_symlink() and len(chain) < 8:
        chain.append(chain[-1].parent / os.readlink(chain[-1]))
    for entry in chain:
        if cache in Path(os.path.abspath(entry)).parents:
            entry.unlink(missing_ok=True)


def _fetch(
    name: str, source: HubSource, commit: str, remote: RemoteFile, progress: bool
) -> tuple[LockedFile, int]:
    """Download one file (unless cached), verify it, and return its pin and bytes fetched."""
    repo_cache = Path(constants.HF_HUB_CACHE) / f"models--{source.repo.replace('/', '--')}"
    blob = repo_cache / "blobs" / str(remote.sha256 or remote.git_oid)
    cached = blob.is_file()
    tqdm_class = None if progress else cast(Any, silent_tqdm)
    while True:
        try:
            path = Path(
                hf_hub_download(source.repo, remote.path, revision=commit, tqdm_class=tqdm_class)
            )
        except _HUB_FAILURES as exc:
            raise _explain(exc, name, source, remote.path) from None
        problem, digest = _mismatch(path, remote, rehash=not cached)
        if problem is None:
            pinned = LockedFile(path=remote.path, size=remote.size, sha256=digest)
            return pinned, 0 if cached else remote.size
        _evict(path)
        if not cached:
            raise ModelFileError(
                f"model {name!r}: {remote.path} from {source.repo}@{commit[:12]} {problem}; it "
                f"was deleted from the cache; run `localtable pull {name}` again (if this "
                "persists, the Hub's copy or its metadata is wrong)"
            )
        cached = False  # the cached copy was bad: it is gone now, download it afresh


def _pull_one(name: str, source: HubSource, loaded: LoadedConfig, progress: bool) -> ModelPull:
    before = read_lock(loaded).get(name)
    try:
        files = shard_files(source.file)
    except ConfigError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    commit, remote = _remote_files(name, source, files)
    pinned: list[LockedFile] = []
    downloaded = 0
    for item in remote:
        entry, nbytes = _fetch(name, source, commit, item, progress)
        pinned.append(entry)
        downloaded += nbytes
    model = LockedModel(
        name=name, repo=source.repo, file=source.file, revision=source.revision,
        commit=commit, files=pinned,
    )  # fmt: skip
    where = f"{source.repo}@{commit[:12]}"
    if before == model and downloaded == 0:
        return ModelPull(name=name, state="present", repo=source.repo, commit=commit,
                         detail=f"{where} already pulled and verified")  # fmt: skip
    record_pull(loaded, model)
    moved = f", was {before.commit[:12]}" if before and before.commit != commit else ""
    shards = f" in {len(pinned)} shards" if len(pinned) > 1 else ""
    detail = f"{where} ({source.revision}{moved}), {model.total_size:,} bytes{shards}, verified"
    return ModelPull(name=name, state="pulled", repo=source.repo, commit=commit,
                     detail=detail, bytes_downloaded=downloaded)  # fmt: skip


@contextmanager
def bounded_requests(connect: float, read: float) -> Iterator[None]:
    """Every request huggingface_hub sends while the block runs waits at most `connect`
    seconds for a connection and `read` seconds for each read, whatever timeout the call
    itself asks for (model_info asks for none), and its answer must end within `read`
    seconds plus one per MIN_RATE bytes of its Content-Length (_Deadline). Through its
    public client factory, so a client it rebuilds after an error keeps the bound."""
    bounded = httpx2.Timeout(read, connect=connect).as_dict()

    def bound(request: httpx2.Request) -> None:
        request.extensions = {**request.extensions, "timeout": bounded}
        _started[request] = time.monotonic()

    def deadline(response: httpx2.Response) -> None:
        length = response.headers.get("Content-Length", "")
        size = int(length) if length.isdigit() else 0
        stream = response.stream
        assert isinstance(stream, httpx2.SyncByteStream)
        response.stream = _Deadline(stream, response.request, read + size / MIN_RATE)

    def client() -> httpx2.Client:
        made = default_client_factory()
        made.event_hooks["request"].append(bound)
        made.event_hooks["response"].append(deadline)
        return made

    set_client_factory(client)
    try:
        yield
    finally:
        set_client_factory(default_client_factory)


def check_token() -> None:
    """The Hugging Face token the Hub client will send, if any, must fit in an HTTP
    header: one line naming where it comes from, never the token (the client itself
    fails with a traceback)."""
    token = get_token()
    if token is not None and not all(" " <= c <= "~" for c in token):
        raise ConfigError(
            "the Hugging Face token (HF_TOKEN, or the file `hf auth login` wrote) holds a "
            "control character or one outside ASCII, which cannot go in an HTTP header; set "
            "it to the token alone"
        )


def pull(
    loaded: LoadedConfig,
    names: list[str],
    *,
    progress: bool = True,
    on_result: Callable[[ModelPull], None] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> PullSummary:
    """Download, verify and pin the named models; a failure is reported, not raised.

    Unknown names are a ConfigError before anything is downloaded. Non-Hub
    models are reported as skipped. models.lock is updated after each model
    that succeeds, so an interrupted pull keeps what it finished. A host that
    does not connect or answer within the timeouts fails that model, naming it.
    """
    check_token()
    with bounded_requests(connect_timeout, read_timeout):
        return _pull(loaded, names, progress, on_result)


def _pull(
    loaded: LoadedConfig,
    names: list[str],
    progress: bool,
    on_result: Callable[[ModelPull], None] | None,
) -> PullSummary:
    models = loaded.config.models
    unknown = [n for n in names if n not in models]
    if unknown:
        raise ConfigError(
            f"unknown model {unknown[0]!r}: {loaded.path} defines {', '.join(sorted(models))}"
        )
    results: list[ModelPull] = []
    for name in dict.fromkeys(names):
        source = models[name].source
        if not isinstance(source, HubSource):
            skip = f"not a Hub model ({source.kind}), nothing to pull"
            result = ModelPull(name=name, state="skipped", detail=skip)
        else:
            try:
                result = _pull_one(name, source, loaded, progress)
            except LocaltableError as exc:
                kept = read_lock(loaded).get(name)
                still = (
                    f" (models.lock still pins {kept.commit[:12]})"
                    if kept is not None and kept.matches(source)
                    else ""
                )
                result = ModelPull(name=name, state="failed", repo=source.repo,
                                   detail=f"{exc}{still}")  # fmt: skip
        results.append(result)
        if on_result is not None:
            on_result(result)
    return PullSummary(models=results)
