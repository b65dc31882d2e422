"""Format one conversation with the chat template of a GGUF file, as the in-process
backend does (a LlamaSeat counting a prompt's tokens), and print its error as the CLI
would. Run as a child by tests/test_hostile_templates.py, with its memory capped: a
template that builds without bound kills this process, not the machine.

    python -m tests.chat_template_child MODEL.gguf
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace

from localtable.backends.base import ChatMessage
from localtable.backends.llamacpp.backend import LlamaSeat
from localtable.errors import LocaltableError
from localtable.models.gguf import read_gguf
from localtable.templates import TemplateSet


def main(path: Path) -> int:
    info = SimpleNamespace(chat_template=read_gguf(path).chat_template, bos_token="<s>",
                           eos_token="</s>", add_bos=False)  # fmt: skip
    backend = SimpleNamespace(today=date(2026, 3, 4), templates=TemplateSet(), engine=None)
    model = SimpleNamespace(name="evil", chat_mode="template")
    seat = LlamaSeat(backend, model, "evil", info)  # type: ignore[arg-type]
    messages = [ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="Why?")]  # fmt: skip
    try:
        seat.count_tokens(messages)  # formats the prompt first: the engine is never reached
    except LocaltableError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
