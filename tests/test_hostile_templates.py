"""Hostile templates (issue #27, items 5 and 6): a chat template from a GGUF file or a
server's /props, and a user's layout, all render in one bounded sandbox.

Each payload runs in a child process whose address space is capped
(TEMPLATE_MEMORY): one that builds without bound dies there with a MemoryError
traceback, failing the test, instead of taking the machine. Each must end in
one error line naming the template's source, within the render's time limit.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from localtable.backends import chatformat
from localtable.backends.base import ChatMessage
from localtable.errors import ConfigError
from localtable.templates import TemplateSet
from tests.fakeserver import FakeLlamaServer
from tests.hostile import RECORD, gguf_with_template, localtable, one_line_error
from tests.test_server_backend import config

TEMPLATE_MEMORY = 512 << 20  # the CLI needs about 45 MB of it; a bounded template ~150 MB more
# seconds: a render stops after template_limits.MAX_SECONDS (3); a child that ends much
# later had no bound on time
TIME_LIMIT = 30.0
DOUBLE = ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = OP %}"
          "{% endfor %}{{ ns.s|length }}")  # fmt: skip
NESTED_LOOPS = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}")  # fmt: skip
BINARY_MACRO = ("{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}"
                "{% endmacro %}{{ f(0) }}")  # fmt: skip
# a value nested in itself 40 times over: a few objects whose text is 2**40 times longer
NESTED_LISTS = DOUBLE.replace("OP", "[ns.s, ns.s]").replace("ns.s|length", "ns.s")
# the same, built by changing namespaces after the lists holding them were made
NESTED_NAMESPACES = (
    "{% set first = namespace() %}{% set ns = namespace(last=first) %}"
    "{% for i in range(40) %}{% set next = namespace() %}{% set last = ns.last %}"
    "{% set last.pair = [next, next] %}{% set ns.last = next %}{% endfor %}{{ first }}"
)
# 30 values of 19 MB each, every one under the size limits: kept in a namespace
MANY_VALUES = "{% set s = 'x' * 19000000 %}{% set ns = namespace() %}" + "".join(
    f"{{% set ns.a{i} = s ~ {i} %}}" for i in range(30)
)
ENDLESS = {
    "nested-loops": (NESTED_LOOPS, "ran for over"),
    "binary-macro": (BINARY_MACRO, "ran for over"),
}
# Payloads the layouts' sandbox on main already refused are left out of LAYOUT_PAYLOADS
# (tests/test_template_limits.py has them); the chat templates had no bounds at all.
LAYOUT_PAYLOADS = {
    "double-percent": (DOUBLE.replace("OP", "'%s%s' % (ns.s, ns.s)"), "would build"),
    "double-named-percent": (
        DOUBLE.replace("OP", "'%(a)s%(a)s' % {'a': ns.s}"),
        "'%' would build",
    ),  # fmt: skip
    "double-str-format": (
        DOUBLE.replace("OP", "'{}{}'.format(ns.s, ns.s)"),
        "str.format() would build",
    ),  # fmt: skip
    "double-format-filter": (
        DOUBLE.replace("OP", "'%s%s'|format(ns.s, ns.s)"),
        "format would build",
    ),  # fmt: skip
    "double-tojson": (DOUBLE.replace("OP", "[ns.s, ns.s]|tojson"), "would build"),
    "repeated-field": (
        "{{ ('{0}' * 1000000).format('x' * 1000000) }}",
        "str.format() would build",
    ),  # fmt: skip
    "nested-lists": (NESTED_LISTS, "characters as text"),
    "nested-namespaces": (NESTED_NAMESPACES, "printing a value would build"),
    "many-values": (MANY_VALUES, "built over 100,000,000 characters and items in all"),
    # 105 KB that compile to 150 MB in 0.9 s; ten times that took 10 s and 1.7 GB
    "huge-template": ("{{ a }}" * 15_000, "the template has over 20,000 tokens"),
}
CHAT_PAYLOADS = {
    **LAYOUT_PAYLOADS,
    **ENDLESS,
    "zero-division": ("{{ 1/0 }}", "ZeroDivisionError: division by zero"),
    "huge-string": ("{{ 'a' * 10**10 }}", "'*' would build 10,000,000,000 characters"),
    "deep-recursion": (
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion too deep",
    ),  # fmt: skip
    "double-plus": (DOUBLE.replace("OP", "ns.s + ns.s"), "'+' would build"),
    "double-times": (DOUBLE.replace("OP", "ns.s * 2"), "'*' would build"),
    "double-tilde": (DOUBLE.replace("OP", "ns.s ~ ns.s"), "'~' would build"),
}
FIX = 'set chat = "completion" for this model in models.toml'


def bounded(result_of: float) -> None:
    assert time.monotonic() - result_of < TIME_LIMIT


@pytest.mark.parametrize(("template", "needle"), CHAT_PAYLOADS.values(), ids=CHAT_PAYLOADS)
def test_a_hostile_chat_template_in_a_gguf_is_one_line(
    tmp_path: Path, template: str, needle: str
) -> None:
    model = gguf_with_template(tmp_path / "evil.gguf", template)
    started = time.monotonic()
    result = localtable(str(model), cache=tmp_path, module="tests.chat_template_child",
                        memory=TEMPLATE_MEMORY, timeout=TIME_LIMIT * 2)  # fmt: skip
    bounded(started)
    source = "Error: the chat template of model 'evil' (from its GGUF file)"  # (line 1)
    one_line_error(result, 2, source, needle, FIX)


@pytest.mark.parametrize(("template", "needle"), CHAT_PAYLOADS.values(), ids=CHAT_PAYLOADS)
def test_a_hostile_chat_template_from_a_server_is_one_line(
    tmp_path: Path, template: str, needle: str
) -> None:
    with FakeLlamaServer(template=template) as server:
        cfg = tmp_path / "models.toml"
        cfg.write_text(config(server.url))
        started = time.monotonic()
        result = localtable("debate", "Why?", "--config", str(cfg), "--runs-dir",
                            str(tmp_path / "runs"), "-q", cache=tmp_path,
                            memory=TEMPLATE_MEMORY, timeout=TIME_LIMIT * 2)  # fmt: skip
        bounded(started)
        assert server.calls["/completion"] == 0  # nothing was generated with it
    source = f"Error: the chat template of model 'big' (from the /props of {server.url})"
    one_line_error(result, 2, source, needle, FIX)


@pytest.mark.parametrize(
    ("template", "needle", "module"),
    [*((t, n, "localtable") for t, n in LAYOUT_PAYLOADS.values()),
     # a layout may run for LAYOUT_SECONDS: this CLI cuts that to one second
     *((t, n, "tests.short_layout_limit") for t, n in ENDLESS.values())],
    ids=[*LAYOUT_PAYLOADS, *ENDLESS],
)  # fmt: skip
def test_a_hostile_layout_is_one_line(
    tmp_path: Path, template: str, needle: str, module: str
) -> None:
    layout = tmp_path / "evil.j2"
    layout.write_text(template)
    started = time.monotonic()
    result = localtable("render", RECORD, "--format", "md", "--template", str(layout),
                        cache=tmp_path, memory=TEMPLATE_MEMORY, module=module,
                        timeout=TIME_LIMIT * 2)  # fmt: skip
    bounded(started)
    one_line_error(result, 2, f"Error: {layout}", "template error: ", needle)


def test_a_chat_template_error_names_its_line_and_is_not_tried_twice() -> None:
    """A template that fails for any reason but refusing the conversation is not
    rendered again with the system message folded in (a time limit would double)."""
    template = "{% for m in messages %}{{ m.content }}\n{% endfor %}{{ 1/0 }}"
    info = SimpleNamespace(chat_template=template, bos_token="", eos_token="", add_bos=False)
    messages = [ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="Why?")]  # fmt: skip
    source = "the chat template of model 'm' (from its GGUF file)"
    chatformat._compiled.cache_clear()
    with pytest.raises(ConfigError) as caught:
        chatformat.format_prompt(
            "template", info, messages, date(2026, 3, 4), TemplateSet(), source=source
        )
    assert str(caught.value) == (
        f"{source} (line 2): ZeroDivisionError: division by zero; "
        'set chat = "completion" for this model in models.toml'
    )
    assert chatformat._compiled.cache_info().hits == 0  # rendered once


def test_a_user_prompt_template_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "system.j2").write_text("You are {{ name }}.\n{{ 1/0 }}\n")
    with pytest.raises(ConfigError, match=r"system.j2:2: template error: ZeroDivisionError"):
        TemplateSet(tmp_path).render("system.j2", persona="", name="A", panel_size=2)
