"""A real llama-server for tests: the binary `make llama-server` builds from the same
llama-cpp-python source package as the wheel, started on 127.0.0.1 with a demo GGUF
(backends/server/launch.py's LocalServer, as `make bench` starts it).

Without the binary these tests skip locally and fail under CI (CI=true), as the
browser tests do: `make test` builds it first.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.backends.server.launch import LocalServer, cached_binary, free_port
from localtable.machine import available_cores

__all__ = ["LlamaServer", "free_port", "llama_server", "llama_server_binary"]


def llama_server_binary() -> Path:
    """$LOCALTABLE_LLAMA_SERVER (the Makefile sets it), else the one in the build cache."""
    found = cached_binary()
    if found is not None:
        return found
    message = "llama-server not built: `make llama-server` (make test builds it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


class LlamaServer(LocalServer):
    """One llama-server process serving one model on a fixed port (kept across restarts)."""

    def __init__(
        self, model: Path, log: Path, *, n_ctx: int = 4096, extra: tuple[str, ...] = ()
    ) -> None:
        super().__init__(
            llama_server_binary(), model, log, n_ctx=n_ctx, threads=available_cores(), extra=extra
        )

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
