"""Start `localtable serve` in a process of its own and talk to it (tests)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

CLI = "from localtable.cli import main; main()"


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT
    token: str | None
    started_in: float  # seconds from the command to its first answer

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return request(self.url + path, headers=headers)

    def post(self, path: str, body: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return request(self.url + path, body.encode(), headers)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location", "")
        return exc.code, location or exc.read().decode("utf-8", "replace")


def serve(runs: Path, env: dict[str, str], *args: str, config: Path | None = None) -> Served:
    """`localtable serve --port 0`, waiting for the line that says where it listens."""
    command = [sys.executable, "-c", CLI, "serve", "--runs-dir", str(runs), "--port", "0"]
    command += ["--config", str(config or REPO / "models.toml"), *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"on (http://\S+?)(/\?token=(\S+))?/? \(Ctrl-C", line)
        if found:
            url = found.group(1)
            if "0.0.0.0" in url:
                url = url.replace("0.0.0.0", "127.0.0.1")
            served = Served(proc, url, found.group(3), 0.0)
            served.get("/", _bearer(served.token))
            served.started_in = time.monotonic() - started
            return served
    raise AssertionError("serve did not start: " + "".join(lines))


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
