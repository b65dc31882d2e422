"""The `openai` source of models.toml: a model behind an OpenAI-compatible server
(Ollama, vLLM, SGLang, LM Studio, llama-server's /v1). Light on purpose: config
validation imports this module (the registry names it), never the backend.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from localtable.backends.urls import plain_server_url, public_url
from localtable.config import Source

ServerKind = Literal["llama-server", "vllm", "sglang", "lmstudio", "ollama", "other"]
Structure = Literal["response_format", "ollama_format", "text"]


class OpenAISource(Source):
    """A model served over the OpenAI chat API. The server renders and tokenizes the
    conversation itself; localtable asks for the turn's fields as a JSON schema."""

    kind: Literal["openai"]
    url: str = Field(
        description="the server, e.g. http://127.0.0.1:11434 or http://127.0.0.1:8000/v1, "
        "without credentials"
    )
    model: str = Field(
        min_length=1, max_length=400, description="the model to ask for, as /v1/models lists it"
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable holding the server's API key (never the key)",
    )
    timeout: float = Field(
        default=600.0, gt=0, le=86400, description="seconds to wait for one answer"
    )
    server: Literal["auto"] | ServerKind = Field(
        default="auto",
        description="which server it is (what it takes and promises): auto asks the server",
    )
    structure: Literal["auto"] | Structure = Field(
        default="auto",
        description="how a turn's fields are asked for: response_format (a JSON schema), "
        "ollama_format (Ollama's own chat API and `format`), or text (no constraint: the "
        "prompt asks for the lines and the parser reads them); auto: by server",
    )

    @field_validator("url")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        return plain_server_url(url)

    def label(self) -> str:
        return f"openai {public_url(self.url)} {self.model}"
