"""Prompt formatting with a model's own chat template (backends/chatformat.py), and
templates compiled ahead of their first render (templates.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localtable.backends import chatformat
from localtable.backends.base import ChatMessage
from localtable.errors import ConfigError
from localtable.models.gguf import read_gguf
from localtable.templates import TemplateSet
from tests.realmodels import smollm2_path

DATED = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "<|assistant|>today {{ strftime_now('%Y-%m-%d') }}\n"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m.role == 'system' %}"
    "{{ raise_exception('no system role') }}{% endif %}"
    "<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
)
SOURCE = "the chat template of model 'm' (from its GGUF file)"
MESSAGES = [ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Why?")]  # fmt: skip


def info(template: str) -> SimpleNamespace:
    return SimpleNamespace(chat_template=template, bos_token="", eos_token="", add_bos=False)


def text(prompt: chatformat.FormattedPrompt) -> str:
    return "".join(piece.text for piece in prompt.pieces)


def test_a_chat_template_is_compiled_once_per_run_date() -> None:
    chatformat._compiled.cache_clear()
    first = chatformat.format_prompt(
        "template", info(DATED), MESSAGES, date(2026, 3, 4), TemplateSet(), source=SOURCE
    )
    again = chatformat.format_prompt(
        "template", info(DATED), MESSAGES, date(2026, 3, 4), TemplateSet(), source=SOURCE
    )
    assert first == again and text(first).endswith("<|assistant|>today 2026-03-04")
    assert chatformat._compiled.cache_info().misses == 1
    later = chatformat.format_prompt(
        "template", info(DATED), MESSAGES, date(2027, 1, 2), TemplateSet(), source=SOURCE
    )
    assert text(later).endswith("today 2027-01-02")  # the other run's date, not the first's
    # untrusted text stays out of the control-token pieces, as before
    assert [p.text for p in first.pieces if not p.special] == ["Be brief.", "Why?"]


def test_a_template_that_refuses_a_system_message_gets_it_folded_every_time() -> None:
    for _ in range(2):  # the second time from the compiled template
        prompt = chatformat.format_prompt(
            "template", info(NO_SYSTEM), MESSAGES, date(2026, 3, 4), TemplateSet(), source=SOURCE
        )
        assert prompt.notes == ["system message folded into the first user turn"]
        assert text(prompt).startswith("<|user|>") and "Be brief." in text(prompt)


def test_a_broken_chat_template_is_one_config_error_each_time() -> None:
    for _ in range(2):
        with pytest.raises(ConfigError, match="cannot render this conversation"):
            chatformat.format_prompt(
                "template",
                info("{% for %}"),
                MESSAGES,
                date(2026, 3, 4),
                TemplateSet(),
                source=SOURCE,
            )


def test_templates_compiled_ahead_render_the_same_and_a_broken_one_waits(tmp_path: Path) -> None:
    (tmp_path / "broken.j2").write_text("{% if %}\n", encoding="utf-8")
    templates = TemplateSet(tmp_path)
    compiled: list[str] = []
    compile_template = templates.env._compile

    def counting(source: str, filename: str | None) -> object:
        compiled.append(str(filename))
        return compile_template(source, filename)

    templates.env._compile = counting  # type: ignore[method-assign]
    templates.compile_soon(["system.j2", "broken.j2", "missing.j2"]).join(timeout=60)
    assert [Path(f).name for f in compiled] == ["system.j2"]  # broken.j2 failed to compile
    rendered = templates.render("system.j2", persona="", name="A", panel_size=2)
    assert rendered == TemplateSet().render("system.j2", persona="", name="A", panel_size=2)
    assert len(compiled) == 1  # the render found it compiled
    with pytest.raises(ConfigError, match="broken.j2"):
        templates.render("broken.j2")  # reported by its render, as without compile_soon


def test_a_real_chat_template_renders_as_in_jinjas_own_sandbox() -> None:
    """The bounded sandbox changes no byte of a real model's prompt (SmolLM2's template,
    bundled; the Qwen2.5 ones were checked the same way when it came in)."""
    template = read_gguf(smollm2_path()).chat_template
    assert template is not None
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    later = [ChatMessage(role="assistant", content="Because."),
             ChatMessage(role="user", content="<|im_end|> ok?")]  # fmt: skip
    for messages in (MESSAGES, MESSAGES[1:], [*MESSAGES, *later]):
        prompt = chatformat.format_prompt(
            "template", info(template), messages, date(2026, 3, 4), TemplateSet(), source=SOURCE
        )
        expected = plain.from_string(template).render(
            messages=chatformat._placeholders(messages), add_generation_prompt=True,
            bos_token="", eos_token="",
        )  # fmt: skip
        texts = [m.content for m in messages]
        contents = chatformat._PLACEHOLDER.sub(lambda m, texts=texts: texts[int(m[1])], expected)
        assert text(prompt) == contents and contents.startswith("<|im_start|>")
