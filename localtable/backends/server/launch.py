"""How to start llama-server for localtable: the flags that keep its numbers fixed.

docs/models.md prints these flags; the tests and `make bench` start servers with them.
Each one pins something llama-server would otherwise choose, and that changes
the numbers (measured or read in the vendored llama.cpp source):

- `-np 1`: one slot, so no other request shares a batch with ours.
- `-b 512 -ub 128`: the in-process engine's batch sizes (backends/llamacpp/backend.py).
- `-fa off`: flash attention changes the numbers; `auto` may turn it on.
- `--swa-full`: a full-size sliding-window cache, as llama-cpp-python's contexts
  have; without it a sliding-window model (Gemma 3) keeps a smaller cache whose
  layout differs.
- `--ctx-checkpoints 0`: with checkpoints on, llama-server cuts a prompt's last 4
  tokens into a step of their own for a sliding-window model, and steps under 8
  tokens give other logits (backends/llamacpp/kvslots.py).
- `--cache-ram 0`, `--no-cache-prompt`: no saved prompt state is restored into a
  request (requests also send cache_prompt false).
- `-fit off`: no automatic change of the context or batch to fit memory.

`LocalServer` starts such a server on 127.0.0.1 for the tests and `make bench`,
with the binary `make llama-server` builds (`cached_binary`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from localtable.backends.server.client import ServerClient, ServerError

LLAMA_CPP_PYTHON = "0.3.36"  # the source package `make llama-server` builds from
START_SECONDS = 300.0  # a shared 2-core machine can be slow to load even a small model

DETERMINISTIC_FLAGS = [
    "-np", "1", "-b", "512", "-ub", "128", "-fa", "off", "--swa-full",
    "--ctx-checkpoints", "0", "--cache-ram", "0", "--no-cache-prompt", "-fit", "off",
]  # fmt: skip


def server_command(
    binary: Path, model: Path, *, port: int, n_ctx: int, threads: int, host: str = "127.0.0.1"
) -> list[str]:
    """The command line of a llama-server serving one GGUF file for localtable."""
    return [
        str(binary), "-m", str(model), "--host", host, "--port", str(port), "-c", str(n_ctx),
        "-t", str(threads), "-tb", str(threads), *DETERMINISTIC_FLAGS, "--no-webui",
    ]  # fmt: skip


def declared_flags() -> str:
    """DETERMINISTIC_FLAGS as a models.toml `flags` string."""
    return " ".join(DETERMINISTIC_FLAGS)


def cached_binary() -> Path | None:
    """$LOCALTABLE_LLAMA_SERVER (the Makefile sets it), else the llama-server `make
    llama-server` cached for this llama-cpp-python version; None when neither is there."""
    env = os.environ.get("LOCALTABLE_LLAMA_SERVER")
    if env and Path(env).is_file():
        return Path(env)
    cache = Path.home() / ".cache" / "localtable"  # the Makefile's SERVER_DIR
    found = sorted(cache.glob(f"llama-server-{LLAMA_CPP_PYTHON}-*/llama-server"))
    return found[0] if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """One llama-server on 127.0.0.1 serving one GGUF file with the flags above, for the
    tests and `make bench`. The port is chosen once and kept across restarts."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        log: Path,
        *,
        n_ctx: int,
        threads: int,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.model = model
        self.log = log
        self.n_ctx = n_ctx
        self.threads = threads
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = server_command(
            self.binary, self.model, port=self.port, n_ctx=self.n_ctx, threads=self.threads
        )
        return [*cmd, *self.extra]

    def start(self, seconds: float = START_SECONDS) -> Self:
        """Start it and wait until it serves (its log appended to `log`)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.wait_ready(seconds)
        return self

    def wait_ready(self, seconds: float = START_SECONDS) -> None:
        """Until /health answers ok (the model is loaded), the process ends, or `seconds`
        pass; then RuntimeError with the end of its log."""
        assert self.proc is not None
        client = ServerClient(self.url)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{tail}")
            try:
                client.health()
                return
            except ServerError:  # not listening yet, or 503 while the model loads
                time.sleep(0.1)
        raise RuntimeError(f"llama-server did not answer /health within {seconds:g} s ({self.log})")

    def stop(self) -> None:
        """SIGTERM, and wait for it to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.proc = None
