"""Servers, keys and clusters as untrusted input (issue #27, items 1, 4, 8 and 9, and
the smaller gaps of its list): a shared record never chooses where localtable
connects or which credential it sends, a key that cannot go in a header is one line
that does not show it, a server's words reach the terminal with their control
characters escaped, and a server that drips its answer, or a cluster nobody listens
on, fails within a bounded time.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localtable.backends.server.client import ServerClient, ServerDown, ServerTimeout
from localtable.cli import cli
from localtable.config import load_config
from localtable.errors import ConfigError
from localtable.record import RunRecord, read_record, write_record
from tests.conftest import REPO, subprocess_env
from tests.fakeserver import FakeLlamaServer
from tests.hostile import (
    CONTROL,
    NO_MODELS,
    localtable,
    no_models_config,
    one_line_error,
    questions_file,
)
from tests.hubserver import HubServer

QUESTION = "Should cities ban cars?"
SECRET = "AKIAxSECRETxVALUE"  # what the user's environment holds, never to be sent


def config(url: str, *, key_env: str | None = None, name: str = "Ada") -> str:
    key = f', api_key_env = "{key_env}"' if key_env else ""
    return f"""
[debate]
panel = "duo"
rounds = 1
seed = 7

[models.big]
source = {{ kind = "server", url = "{url}"{key} }}
chat = "template"

[panels.duo]
panelists = [{{ name = "{name}", model = "big" }}, {{ name = "Bob", model = "big" }}]
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def server() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer() as s:
        yield s


@pytest.fixture
def elsewhere() -> Iterator[FakeLlamaServer]:
    """The server a tampered record points at: it counts what it gets."""
    with FakeLlamaServer() as s:
        yield s


def only_run(runs: Path) -> tuple[Path, RunRecord]:
    (run_dir,) = [p for p in runs.iterdir() if "-replay-" not in p.name]
    return run_dir, read_record(run_dir)


def failed_run(server: FakeLlamaServer, cfg: Path, runs: Path) -> Path:
    """A run whose second turn failed (a 500): resumable."""

    def second(s: FakeLlamaServer) -> None:
        if len(s.completions) == 2:
            s.fail.append("500")

    server.on_completion.append(second)
    result = run("debate", QUESTION, "--config", str(cfg), "--runs-dir", str(runs), "-q")
    assert result.exit_code == 1, result.output
    server.on_completion.clear()
    return only_run(runs)[0]


def complete_run(cfg: Path, runs: Path) -> Path:
    result = run("debate", QUESTION, "--config", str(cfg), "--runs-dir", str(runs), "-q")
    assert result.exit_code == 0, result.output
    return only_run(runs)[0]


def tamper(run_dir: Path, **settings: object) -> None:
    """What someone who shares a record can do: point its server model elsewhere."""
    record = read_record(run_dir)
    model = record.models[0]
    record.models[0] = model.model_copy(update={"settings": {**model.settings, **settings}})
    write_record(run_dir, record)


# -- item 1: a record never chooses where to connect, nor the credential ----------------


def test_resume_of_a_record_naming_another_server_is_refused_and_sends_nothing(
    server: FakeLlamaServer,
    elsewhere: FakeLlamaServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_config(tmp_path, config(server.url))
    runs = tmp_path / "runs"
    run_dir = failed_run(server, cfg, runs)
    tamper(run_dir, url=elsewhere.url, api_key_env="AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    result = run("resume", str(run_dir), "--runs-dir", str(runs), "--config", str(cfg), "-q")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and elsewhere.url in line
    assert f"--allow-url {elsewhere.url}" in line and SECRET not in line
    assert sum(elsewhere.calls.values()) == 0  # not one request
    # allowed by the user: reached, but with no key (models.toml names none for it)
    allowed = run("resume", str(run_dir), "--runs-dir", str(runs), "--config", str(cfg), "-q",
                  "--allow-url", elsewhere.url)  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert elsewhere.calls["/completion"] >= 1
    assert elsewhere.authorizations and set(elsewhere.authorizations) == {None}


def test_resume_without_any_models_toml_reaches_no_server(
    server: FakeLlamaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, config(server.url))
    runs = tmp_path / "runs"
    run_dir = failed_run(server, cfg, runs)
    calls = sum(server.calls.values())
    monkeypatch.chdir(tmp_path / "runs")  # no ./models.toml here
    monkeypatch.setattr("localtable.cli.default_config", lambda: tmp_path / "none.toml")
    result = run("resume", str(run_dir), "--runs-dir", str(runs), "-q")
    assert result.exit_code == 2 and "--allow-url" in result.stderr, result.output
    assert sum(server.calls.values()) == calls


def test_replay_of_a_record_naming_another_server_and_hf_token_sends_nothing(
    server: FakeLlamaServer,
    elsewhere: FakeLlamaServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_config(tmp_path, config(server.url))
    runs = tmp_path / "runs"
    run_dir = complete_run(cfg, runs)
    tamper(run_dir, url=elsewhere.url, api_key_env="HF_TOKEN", timeout=1e300)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    result = run("replay", str(run_dir), "--runs-dir", str(runs), "--config", str(cfg), "-q")
    assert result.exit_code == 2, result.output
    assert "--allow-url" in result.stderr and SECRET not in result.output
    assert sum(elsewhere.calls.values()) == 0
    allowed = run("replay", str(run_dir), "--runs-dir", str(runs), "--config", str(cfg), "-q",
                  "--allow-url", elsewhere.url + "/")  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert elsewhere.calls["/completion"] >= 1 and set(elsewhere.authorizations) == {None}


def test_the_key_sent_is_the_one_models_toml_names_for_the_url_never_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOX_KEY", "box-key")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with FakeLlamaServer(api_key="box-key") as server:
        cfg = write_config(tmp_path, config(server.url, key_env="BOX_KEY"))
        runs = tmp_path / "runs"
        run_dir = complete_run(cfg, runs)
        tamper(run_dir, api_key_env="HF_TOKEN")
        server.authorizations.clear()
        result = run("replay", str(run_dir), "--runs-dir", str(runs), "--config", str(cfg), "-q")
        assert result.exit_code == 0, result.output
    assert server.authorizations and f"Bearer {SECRET}" not in server.authorizations


def test_allow_url_is_checked_like_a_models_toml_url(tmp_path: Path) -> None:
    result = run("resume", "nothing", "--runs-dir", str(tmp_path), "--allow-url", "ftp://x")
    assert result.exit_code == 2 and "--allow-url 'ftp://x'" in result.stderr, result.output


# -- item 4: a key that cannot go in a header ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (SECRET + "\r", "line break"),
        (SECRET + "\r\nX-Injected: 1", "line break"),
        (SECRET + "\u20ac", "outside ASCII"),
        (SECRET + "\x1b", "control character"),
    ],
)
def test_a_key_that_cannot_go_in_a_header_is_one_line_without_the_key(
    server: FakeLlamaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, says: str
) -> None:
    cfg = write_config(tmp_path, config(server.url, key_env="BOX_KEY"))
    monkeypatch.setenv("BOX_KEY", key)
    result = localtable(
        "debate", QUESTION, "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "-q",
        cache=tmp_path / "cache",
    )  # fmt: skip
    one_line_error(result, 2, "BOX_KEY", says)
    assert SECRET not in result.stderr + result.stdout
    assert sum(server.calls.values()) == 0


def test_a_hugging_face_token_that_cannot_go_in_a_header_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "models.toml"
    cfg.write_text(
        NO_MODELS.replace('{ kind = "path", path = "missing.gguf" }',
                          '{ kind = "hf", repo = "someone/tiny", file = "m.gguf" }')
    )  # fmt: skip
    env = {k: v for k, v in subprocess_env(tmp_path / "cache").items() if not k.startswith("HF_")}
    with HubServer() as hub:
        hub.add_commit("someone/tiny", {"m.gguf": b"GGUF" + bytes(100)})
        env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "hf"),
                   HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=SECRET + "\u0416")  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "localtable", "pull", "m", "--config", str(cfg), "-q"],
            env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
    one_line_error(proc, 2, "Hugging Face token", "outside ASCII")
    assert SECRET not in proc.stderr


# -- item 8: a server's words reach the terminal escaped ----------------------------------

ESCAPES = "\x1b]0;PWNED\x07\x1b[2J\x9b31m\r"


def test_models_escapes_what_a_server_says_about_itself(tmp_path: Path) -> None:
    with FakeLlamaServer(build=f"b1{ESCAPES}", model_path=f"/m/{ESCAPES}.gguf") as server:
        result = run("models", "--config", str(write_config(tmp_path, config(server.url))))
    assert result.exit_code == 0, result.output
    assert "PWNED" in result.output and not CONTROL.search(result.output), result.output


def test_a_panelist_name_reaches_the_progress_lines_escaped(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, config(server.url, name="Ada\\u001b]0;PWNED\\u0007"))
    name = load_config(cfg).config.panels["duo"].panelists[0].name
    assert "\x1b" in name  # the name itself holds the escape
    result = localtable("debate", QUESTION, "--config", str(cfg), "--runs-dir",
                        str(tmp_path / "runs"), cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PWNED" in result.stderr and not CONTROL.search(result.stderr), result.stderr


def test_an_error_message_from_the_server_is_escaped(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Hostile(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = ('{"error": {"message": "' + ESCAPES.replace("\x1b", "\\u001b").replace(
                "\x07", "\\u0007").replace("\x9b", "\\u009b").replace("\r", "\\r")
                + ' PWNED"}}').encode()  # fmt: skip
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        cfg = write_config(tmp_path, config(url))
        result = localtable("debate", QUESTION, "--config", str(cfg), "--runs-dir",
                            str(tmp_path / "runs"), "-q", cache=tmp_path / "cache")  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    one_line_error(result, 1, "PWNED", "HTTP 500")
    assert not CONTROL.search(result.stderr), result.stderr


# -- item 9: a slow drip, and a cluster nobody listens on ---------------------------------


class Drip:
    """A server that answers one byte at a time, each well within the read timeout: a
    timeout per read never fires. It stops when the test ends."""

    def __init__(self, phase: str) -> None:
        self.phase = phase  # "headers": drips the status line; "body": the body
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            if self.phase == "headers":  # a long header line, a byte at a time
                payload = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n"
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                payload = b"[" + b"1," * 60000
            for byte in payload:
                if self.stop.wait(0.05):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_dripping_server_is_cut_off_at_the_deadline(phase: str) -> None:
    drip = Drip(phase)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            ServerClient(f"http://127.0.0.1:{drip.port}").request("GET", "/props", None, 0.5)
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    started = time.monotonic()
    asker.start()
    asker.join(timeout=15)  # an upper bound only: it ends at about 0.5 s
    elapsed = time.monotonic() - started
    drip.close()
    assert not asker.is_alive(), "a per-read timeout only: the drip was never cut off"
    assert elapsed < 15
    (exc,) = outcome
    assert isinstance(exc, ServerTimeout) and "no answer within 0.5 s" in str(exc), exc


def test_a_hub_that_drips_its_answer_fails_the_pull_in_bounded_time(tmp_path: Path) -> None:
    cfg = tmp_path / "models.toml"
    cfg.write_text(
        NO_MODELS.replace('{ kind = "path", path = "missing.gguf" }',
                          '{ kind = "hf", repo = "someone/tiny", file = "m.gguf" }')
    )  # fmt: skip
    env = {k: v for k, v in subprocess_env(tmp_path / "cache").items() if not k.startswith("HF_")}
    drip = Drip("body")
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{drip.port}", HF_HUB_CACHE=str(tmp_path / "hf"),
               HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "localtable", "pull", "m", "--config", str(cfg),
             "--read-timeout", "1", "--connect-timeout", "1", "-q"],
            env=env, capture_output=True, text=True, timeout=90, cwd=REPO,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("a per-read timeout only: the dripping Hub held the pull")
    finally:
        drip.close()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "answered too slowly: not complete within" in proc.stderr, proc.stderr


def test_ray_at_an_address_nobody_listens_on_is_one_line_at_once(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]  # closed again below: nobody listens there
    started = time.monotonic()
    result = localtable(
        "batch", str(questions_file(tmp_path)), "--config", str(no_models_config(tmp_path)),
        "--runs-dir", str(tmp_path / "runs"), "--ray", f"127.0.0.1:{port}",
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert time.monotonic() - started < 120
    one_line_error(result, 2, f"cannot reach the Ray cluster at 127.0.0.1:{port}")


# -- smaller gaps ---------------------------------------------------------------------------


def test_an_answer_cut_off_mid_body_is_a_dropped_connection_and_asked_again(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    with pytest.raises(ServerDown, match="connection closed before the answer"):
        server.fail = ["cut"]
        ServerClient(server.url).completion({"prompt": [1], "grammar": "", "seed": 1})
    server.fail = ["cut"]  # the first turn's answer is cut off: sent again, identical
    cfg = write_config(tmp_path, config(server.url))
    complete_run(cfg, tmp_path / "runs")
    assert server.completions[1] == server.completions[2]


def test_a_token_id_outside_the_vocabulary_fails_the_run(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    server.fail = ["bad-token"]
    cfg = write_config(tmp_path, config(server.url))
    result = run("debate", QUESTION, "--config", str(cfg), "--runs-dir", str(tmp_path / "r"), "-q")
    assert result.exit_code == 1
    assert "outside the model's vocabulary" in result.stderr, result.output
    _, record = only_run(tmp_path / "r")
    assert all(t.generation is None for t in record.turns)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:99999", "out of range (1-65535)"),
        ("http://127.0.0.1:0", "out of range (1-65535)"),
        ("http://127.0.0.1:80/a\\r\\nb", "line break"),
        ("http://127.0.0.1:80/a b", "space"),
        ("http://127.0.0.1:8a", "not a number"),
    ],
)
def test_a_bad_server_url_is_refused_when_models_toml_is_loaded(
    tmp_path: Path, url: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(write_config(tmp_path, config(url)))
