"""Bind, say where, serve: uvicorn on a socket of our own (so --port 0 works and the
address printed is the one bound)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from localtable.config import LoadedConfig
from localtable.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    runs_dir: Path,
    loaded: LoadedConfig,
    host: str,
    port: int,
    token: str | None,
    say: Callable[[str], None],
) -> None:
    """Serve until Ctrl-C. Another address than this machine's needs a token: given,
    or made here and printed."""
    import uvicorn

    from localtable.serve.app import Settings, build_app

    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(18)
        say(f"Listening on {host}: made a token for this server (pass --token to choose one)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another "
                          "--port") from None  # fmt: skip
    sock.listen(64)
    bound = sock.getsockname()[1]
    settings = Settings(runs_dir=runs_dir, loaded=loaded, host=host, port=bound, token=token)
    shown = f"[{host}]" if ":" in host else host
    query = f"/?token={token}" if token else "/"
    say(f"Serving {runs_dir} on http://{shown}:{bound}{query} (Ctrl-C stops)")
    config = uvicorn.Config(
        build_app(settings), log_level="warning", timeout_graceful_shutdown=2,
        lifespan="on",
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])
