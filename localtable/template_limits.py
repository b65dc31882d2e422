"""A Jinja sandbox that also bounds what a template may build.

Jinja's sandbox keeps a template from reaching Python internals and caps
`range`, but `{{ 'a' * 10**10 }}` in a user's layout still runs until memory
runs out. This sandbox refuses, before building it, any value larger than a
layout could ever need, with a TemplateLimitError naming the operation:

- `*` repeating a string or list, `+` joining two, `%` and `str.format` widths,
  `**` on integers, `~` joins (checked as they are made);
- str methods and filters whose arguments set a size: center, ljust, rjust,
  zfill, expandtabs, replace, join, indent, format, sum, batch, slice, tojson's
  indent; `lipsum`'s paragraph count;
- the output of every template, macro and `{% set %}` block.

It bounds memory, not time: a template can still loop for long. Built-in
templates are far below these limits (the largest layout of a 10-round debate
of 8 panelists is a few MB).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

import jinja2
from jinja2 import filters as jinja_filters
from jinja2 import pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

MAX_CHARS = 20_000_000  # of any string a template builds, its output included
MAX_ITEMS = 1_000_000  # of any list it builds
MAX_INT_BITS = 100_000  # of an integer computed with **
MAX_LIPSUM = 1_000  # paragraphs or words per paragraph from lipsum()
# A width or precision in a %-format or a str.format spec: "%10s", "{:>10}", "{:.3}"
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_NUMBERS = re.compile(r"\d+")


class TemplateLimitError(jinja2.TemplateRuntimeError):
    """A template tried to build a value larger than any layout needs."""


def check_chars(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise TemplateLimitError(
            f"{what} would build {size:,} characters, over the limit of {MAX_CHARS:,}"
        )


def check_items(size: int, what: str) -> None:
    if size > MAX_ITEMS:
        raise TemplateLimitError(
            f"{what} would build {size:,} items, over the limit of {MAX_ITEMS:,}"
        )


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_size(value: Any, size: int, what: str) -> None:
    if isinstance(value, str):
        check_chars(size, what)
    else:
        check_items(size, what)


def _check_percent(fmt: str, what: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*":
                raise TemplateLimitError(f"{what}: a '*' width is not allowed in templates")
            if number:
                check_chars(int(number), what)


def _check_format(fmt: str, what: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises its own error
    for _literal, _name, spec, _conversion in fields:
        if spec and "{" in spec:
            raise TemplateLimitError(f"{what}: a computed width is not allowed in templates")
        for number in _FORMAT_NUMBERS.findall(spec or ""):
            check_chars(int(number), what)


def _replaced_size(text: str, old: str, new: str, count: int | None = None) -> int:
    found = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _joined_size(items: list[Any], separator: str) -> int:
    return sum(len(str(x)) for x in items) + len(separator) * max(0, len(items) - 1)


def _check_str_call(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        check_chars(args[0], what)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            check_chars(len(owner) + owner.count("\t") * tabsize, what)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        count = args[2] if len(args) > 2 else kwargs.get("count")
        check_chars(_replaced_size(owner, args[0], str(args[1]), count), what)
    elif name in ("format", "format_map"):
        _check_format(owner, what)


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    check_items(len(items), "join")
    if attribute is None:
        check_chars(_joined_size(items, d), "join")
    result: str = jinja_filters.do_join(eval_ctx, items, d, attribute)
    check_chars(len(result), "join")
    return result


@pass_eval_context
def _replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    check_chars(_replaced_size(str(s), str(old), str(new), count), "replace")
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


def _center(value: str, width: int = 80) -> str:
    check_chars(width, "center")
    return jinja_filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    step = width if isinstance(width, int) else len(str(width))
    text = str(s)
    check_chars(len(text) + (text.count("\n") + 1) * step, "indent")
    return jinja_filters.do_indent(s, width, first, blank)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(str(value), "format")
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    items = list(iterable)
    if attribute is None and isinstance(start, list | tuple):
        check_items(len(start) + sum(_sized(x) or 0 for x in items), "sum")
    return jinja_filters.do_sum(environment, items, attribute, start)


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
    check_items(linecount, "batch")
    return jinja_filters.do_batch(value, linecount, fill_with)


@pass_eval_context
def _slice(eval_ctx: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
    check_items(slices, "slice")
    return jinja_filters.do_slice(eval_ctx, value, slices, fill_with)


@pass_eval_context
def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    if indent is not None:
        check_chars(indent * 1000, "tojson indent")  # per nesting level: keep it small
    return jinja_filters.do_tojson(eval_ctx, value, indent)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if n > MAX_LIPSUM or max > MAX_LIPSUM:
        raise TemplateLimitError(
            f"lipsum: {n:,} paragraphs of up to {max:,} words is over the limit of {MAX_LIPSUM:,}"
        )
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


class _BoundedCodeGenerator(CodeGenerator):
    """Checks the size of every `~` join (the sandbox cannot intercept it)."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's name
        self.write("environment.checked_text(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment plus the size limits of this module's docstring."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters.update(
            join=_join, replace=_replace, center=_center, indent=_indent, format=_format,
            sum=_sum, batch=_batch, slice=_slice, tojson=_tojson,
        )  # fmt: skip
        self.globals["lipsum"] = _lipsum

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(times, int):
                    _check_size(seq, size * max(times, 0), "'*'")
        elif operator == "+":
            a, b = _sized(left), _sized(right)
            if a is not None and b is not None and type(left) is type(right):
                _check_size(left, a + b, "'+'")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                bits = abs(left).bit_length() * right
                if bits > MAX_INT_BITS:
                    raise TemplateLimitError(
                        f"'**' would compute a number of about {bits:,} bits, over the limit "
                        f"of {MAX_INT_BITS:,}"
                    )
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, "'%'")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name == "join" and args:
                items = list(args[0])
                check_items(len(items), "str.join()")
                check_chars(_joined_size(items, owner), "str.join()")
                args = (items, *args[1:])
            _check_str_call(owner, name, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def checked_text(self, value: Any) -> Any:
        """A `~` join, refused when too long."""
        check_chars(len(value), "'~'")
        return value

    def concat(self, parts: Iterable[str]) -> str:
        """Every template's, macro's and block's output, refused when too long (read part by
        part, so a template printing forever stops at the limit)."""
        kept: list[str] = []
        size = 0
        for part in parts:
            size += len(part)
            check_chars(size, "the template's output")
            kept.append(part)
        return "".join(kept)
