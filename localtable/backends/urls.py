"""The URL of a server a backend connects to, as models.toml and --allow-url give it
and as records and messages show it. Any backend that reaches a server over HTTP uses
these (the standard library only: a source model and the CLI's --allow-url import it)."""

from __future__ import annotations

from urllib.parse import urlsplit


def plain_server_url(url: str) -> str:
    """A server's URL as models.toml and --allow-url give it: http(s)://host:port
    and maybe a path, nothing that could smuggle a header line, a credential or a
    second request into what is sent. ValueError says what is wrong."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(
            "the URL holds a space, a line break or another control character; give the "
            "server as http://host:port"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("give the server as http://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the URL must not hold credentials: put the API key in an environment "
            "variable and name it in api_key_env"
        )
    if parts.query or parts.fragment:
        raise ValueError("give the server as http://host:port, without ? or #")
    _, colon, port = parts.netloc.rpartition(":")
    if not colon or parts.netloc.endswith("]"):  # no port (an IPv6 host has colons)
        port = ""
    if port and not port.isdigit():
        raise ValueError("the port is not a number")
    if port and not 1 <= int(port) <= 65535:
        raise ValueError(f"the port {int(port)} is out of range (1-65535)")
    return url.rstrip("/")


def public_url(url: str) -> str:
    """The URL as the record and messages show it: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def is_loopback(url: str) -> bool:
    """A server on this machine (so the model file it names may be here too)."""
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
