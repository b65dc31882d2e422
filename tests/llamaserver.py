"""A real llama-server for tests: the binary `make llama-server` builds from the same
llama-cpp-python source package as the wheel, started on 127.0.0.1 with a demo GGUF.

Without the binary these tests skip locally and fail under CI (CI=true), as the
browser tests do: `make test` builds it first.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.backends.llamacpp.backend import available_cores
from localtable.backends.server.launch import server_command

LLAMA_VERSION = "0.3.36"
START_SECONDS = 300  # a shared 2-core machine can be slow to load even a small model


def llama_server_binary() -> Path:
    """$LOCALTABLE_LLAMA_SERVER (the Makefile sets it), else the one in the build cache."""
    env = os.environ.get("LOCALTABLE_LLAMA_SERVER")
    if env and Path(env).is_file():
        return Path(env)
    cache = Path.home() / ".cache" / "localtable"
    found = sorted(cache.glob(f"llama-server-{LLAMA_VERSION}-*/llama-server"))
    if found:
        return found[0]
    message = "llama-server not built: `make llama-server` (make test builds it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One llama-server process serving one model on a fixed port (kept across restarts)."""

    def __init__(
        self, model: Path, log: Path, *, n_ctx: int = 4096, extra: tuple[str, ...] = ()
    ) -> None:
        self.binary = llama_server_binary()
        self.model = model
        self.log = log
        self.n_ctx = n_ctx
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = server_command(
            self.binary, self.model, port=self.port, n_ctx=self.n_ctx, threads=available_cores()
        )
        return [*cmd, *self.extra]

    def start(self) -> LlamaServer:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Until /health answers 200 (the model is loaded), the process dies, or time ends."""
        assert self.proc is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama-server did not answer /health within {START_SECONDS} s")

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.proc = None

    def props(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}/props", timeout=30) as response:
            props: dict[str, object] = json.loads(response.read())
            return props


@contextlib.contextmanager
def llama_server(model: Path, log: Path, **kwargs: object) -> Iterator[LlamaServer]:
    server = LlamaServer(model, log, **kwargs)  # type: ignore[arg-type]
    try:
        yield server.start()
    finally:
        server.kill()
