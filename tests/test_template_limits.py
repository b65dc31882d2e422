"""A user template cannot exhaust memory (issue #13, item 7): each of these used to
run until the machine ran out of memory; here a child with 2 GiB of address space
gets a one-line error instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from localtable.record import RunRecord, read_record
from localtable.report.render import render
from localtable.templates import TemplateSet
from tests.hostile import RECORD, localtable, one_line_error


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{{ 'a' * 10**10 }}", "'*' would build 10,000,000,000 characters"),
        ("{{ 10**10 * 'a' }}", "'*' would build 10,000,000,000 characters"),
        ("{{ ([0] * 10**9)|length }}", "'*' would build 1,000,000,000 items"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}{{ ns.s|length }}", "'~' would build"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
         "{% endfor %}{{ ns.s|length }}", "'+' would build"),
        ("{{ (7 ** (10**10)) % 10 }}", "'**' would compute"),
        ("{{ 'x'|center(10**10) }}", "center would build"),
        ("{{ 'x'.ljust(10**10) }}", "str.ljust() would build"),
        ("{{ '{:>10000000000}'.format('x') }}", "str.format() would build"),
        ("{{ '%10000000000s' % 'x' }}", "'%' would build"),
        ("{{ ('a' * 10**7)|replace('a', 'aaaa') }}", "replace would build"),
        ("{{ (['a' * 10**6] * 10)|join('x' * 10**7) }}", "join would build"),
        ("{{ (['a' * 10**7] * 1000)|join }}", "'*' (as text) would build"),
        ("{{ lipsum(10**9) }}", "lipsum: 1,000,000,000 paragraphs"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}0123456789{% endfor %}"
         "{% endfor %}", "the template's output would build"),
    ],
)  # fmt: skip
def test_a_template_cannot_exhaust_memory(tmp_path: Path, template: str, needle: str) -> None:
    layout = tmp_path / "evil.j2"
    layout.write_text(template)
    result = localtable("render", RECORD, "--format", "md", "--template", str(layout),
                        cache=tmp_path)  # fmt: skip
    one_line_error(result, 2, str(layout), "template error: ", needle, "over the limit")


def test_builtin_layouts_are_far_from_the_limits() -> None:
    for fmt in ("text", "md", "html"):
        assert len(render(json_record(), fmt, TemplateSet())) < 1_000_000


def json_record() -> RunRecord:
    return read_record(Path(RECORD).parent)  # a version 3 record, read as version 4
