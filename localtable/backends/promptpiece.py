"""A piece of a formatted prompt: what the backends send to an engine to tokenize.

Its own module because the llama.cpp worker process imports it: chatformat.py
(templates, jinja2, the config) would cost every run's worker start 0.2 s."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PromptPiece(BaseModel):
    """Part of a prompt. Only template text is tokenized with control tokens enabled:
    text from the question or from a panelist can never become a control token."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    text: str
    special: bool
