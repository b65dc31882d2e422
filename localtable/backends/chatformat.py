"""Turn a conversation into prompt pieces for one model.

A chat model's own GGUF template renders the conversation with a placeholder
in place of each message's text. The rendered string is then split at the
placeholders: the template's parts are tokenized with control tokens enabled,
the messages' text without, so `<|im_end|>` typed into a question or written
by a panelist stays plain text. Models without a template get our plain
transcript (prompts/completion.j2) and stop strings, never llama-cpp-python's
silent `[INST]` fallback.

A chat template comes from a GGUF file or a server's /props: from anyone. It
renders in the same bounded sandbox as every template (template_limits.py),
and whatever goes wrong in it is one error line naming where it came from.
"""

from __future__ import annotations

import hashlib
import re
import traceback
from datetime import date, datetime
from functools import lru_cache
from typing import Literal, Protocol

import jinja2
from pydantic import BaseModel, ConfigDict

from localtable.backends.base import ChatMessage
from localtable.backends.promptpiece import PromptPiece
from localtable.errors import ConfigError, LocaltableError
from localtable.template_limits import BoundedSandbox, TemplateLimitError, error_reason
from localtable.templates import TemplateSet

COMPLETION_TEMPLATE = "completion.j2"
COMPLETION_STOP = ["\n### "]
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: no template or model emits them
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


class ModelInfo(Protocol):
    """What formatting needs to know of a loaded model (any backend)."""

    @property
    def chat_template(self) -> str | None: ...

    @property
    def bos_token(self) -> str: ...

    @property
    def eos_token(self) -> str: ...

    @property
    def add_bos(self) -> bool: ...


class FormattedPrompt(BaseModel):
    model_config = ConfigDict(frozen=True)
    pieces: list[PromptPiece]
    add_bos: bool
    stop: list[str]
    notes: list[str] = []  # e.g. that the system message was folded into the first turn

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)


def template_sha256(info: ModelInfo) -> str | None:
    if info.chat_template is None:
        return None
    return hashlib.sha256(info.chat_template.encode("utf-8")).hexdigest()


def _placeholders(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(messages)]


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


@lru_cache(maxsize=16)
def _compiled(chat_template: str, today: date) -> jinja2.Template:
    """A model's chat template, compiled once per run date: every turn, label and
    summary formats a prompt, and compiling Qwen2.5's template takes 14-21 ms."""
    env = BoundedSandbox(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    pinned = datetime(today.year, today.month, today.day)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = pinned.strftime  # the run's pinned date, not the clock
    return env.from_string(chat_template)


def _render_gguf_template(info: ModelInfo, messages: list[ChatMessage], today: date) -> str:
    assert info.chat_template is not None
    template = _compiled(info.chat_template, today)
    return template.render(
        messages=_placeholders(messages),
        add_generation_prompt=True,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
    )


def _split(rendered: str, messages: list[ChatMessage]) -> list[PromptPiece]:
    pieces: list[PromptPiece] = []
    seen: list[int] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(rendered):
        if match.start() > pos:
            pieces.append(PromptPiece(text=rendered[pos : match.start()], special=True))
        index = int(match.group(1))
        seen.append(index)
        if messages[index].content:
            pieces.append(PromptPiece(text=messages[index].content, special=False))
        pos = match.end()
    if pos < len(rendered):
        pieces.append(PromptPiece(text=rendered[pos:], special=True))
    if sorted(seen) != list(range(len(messages))):
        raise ValueError("the chat template dropped or repeated a message")
    return pieces


def _refuses(exc: Exception) -> bool:
    """The template refused this conversation (raise_exception, a missing value, a
    message it dropped): worth one more try with the system message folded in."""
    return isinstance(exc, ValueError) or (
        isinstance(exc, jinja2.TemplateError) and not isinstance(exc, TemplateLimitError)
    )


def _template_line(exc: BaseException) -> str:
    lines = [
        f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"
    ]
    return f" (line {lines[-1]})" if lines and lines[-1] else ""


def _broken(source: str, exc: Exception, fix: str) -> ConfigError:
    """One line: whose template, what went wrong in it, where, what to do."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = f" (line {exc.lineno})"
        reason = f"syntax error: {exc.message}"
    else:
        where, reason = _template_line(exc), error_reason(exc)
    if len(reason) > 300:  # a template's own message is the template author's
        reason = reason[:300] + "..."
    return ConfigError(f"{source}{where}: {reason}; {fix}")


def _fold_system(messages: list[ChatMessage]) -> list[ChatMessage]:
    if not messages or messages[0].role != "system" or len(messages) < 2:
        return messages
    first_user = messages[1]
    merged = ChatMessage(role="user", content=f"{messages[0].content}\n\n{first_user.content}")
    return [merged, *messages[2:]]


def with_prefill(prompt: FormattedPrompt, prefill: str) -> FormattedPrompt:
    """The prompt followed by the start of the reply (plain text: it was generated)."""
    if not prefill:
        return prompt
    piece = PromptPiece(text=prefill, special=False)
    return prompt.model_copy(update={"pieces": [*prompt.pieces, piece]})


def format_prompt(
    mode: Literal["template", "completion"],
    info: ModelInfo,
    messages: list[ChatMessage],
    today: date,
    templates: TemplateSet,
    prefill: str = "",
    *,
    source: str,
) -> FormattedPrompt:
    """The conversation as the model's prompt pieces, ending where the reply starts
    (after `prefill`, when part of the reply is already written). `source` names the
    chat template in errors: "the chat template of model 'm' (from its GGUF file)"."""
    return with_prefill(_format(mode, info, messages, today, templates, source), prefill)


def _format(
    mode: Literal["template", "completion"],
    info: ModelInfo,
    messages: list[ChatMessage],
    today: date,
    templates: TemplateSet,
    source: str,
) -> FormattedPrompt:
    if mode == "completion":
        rendered = templates.render(COMPLETION_TEMPLATE, messages=_placeholders(messages))
        return FormattedPrompt(
            pieces=_split(rendered, messages), add_bos=info.add_bos, stop=COMPLETION_STOP
        )
    notes: list[str] = []
    fix = 'set chat = "completion" for this model in models.toml'
    try:
        rendered = _render_gguf_template(info, messages, today)
        pieces = _split(rendered, messages)
    except LocaltableError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted code: any error is the template's
        if not _refuses(exc):
            raise _broken(source, exc, fix) from None
        # Some templates (Gemma 1/2, Mistral) refuse a system message: fold it
        # into the first user turn, as Gemma 3's own template does.
        folded = _fold_system(messages)
        try:
            rendered = _render_gguf_template(info, folded, today)
            pieces = _split(rendered, folded)
        except LocaltableError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _refuses(exc):
                fix = f"it cannot render this conversation; {fix}"
            raise _broken(source, exc, fix) from None
        notes.append("system message folded into the first user turn")
    add_bos = info.add_bos and not (info.bos_token and rendered.startswith(info.bos_token))
    return FormattedPrompt(pieces=pieces, add_bos=add_bos, stop=[], notes=notes)
