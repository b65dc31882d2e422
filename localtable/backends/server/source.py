"""The `server` source of models.toml: a model on a llama-server. Light on purpose:
config validation imports this module (the registry names it), never the backend.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from localtable.backends.urls import plain_server_url, public_url
from localtable.config import Source


class ServerSource(Source):
    """A model served by llama.cpp's own HTTP server (llama-server), maybe on another
    machine. localtable renders and tokenizes the prompts itself and sends token ids."""

    kind: Literal["server"]
    url: str = Field(description="http://host:port of llama-server, without credentials")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable holding the server's API key (never the key)",
    )
    model: str | None = Field(
        default=None,
        description="the model the server must be running: its model path as /props shows "
        "it, or the end of that path (e.g. the file name)",
    )
    build: str | None = Field(
        default=None, description="the llama.cpp build the server must report, e.g. b1-0c1e570"
    )
    flags: str = Field(
        default="",
        description="the llama-server flags that change numbers (batch sizes, flash "
        "attention, SWA cache...), as you started it: the server does not report them, so "
        "the record keeps them as declared",
    )
    timeout: float = Field(
        default=600.0, gt=0, le=86400, description="seconds to wait for one answer"
    )

    @field_validator("url")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        return plain_server_url(url)

    def label(self) -> str:
        return f"server {public_url(self.url)}"
