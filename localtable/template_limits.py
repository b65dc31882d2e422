"""The one Jinja sandbox every template renders in, bounded in memory and time.

Layouts and prompts (ours or the user's) and chat templates (from a GGUF file
or a server's /props, so from anyone) all render in BoundedSandbox. Jinja's
own sandbox keeps a template from reaching Python internals and caps `range`;
this one also refuses, with a TemplateLimitError naming the operation:

- a value over MAX_CHARS characters or MAX_ITEMS items, checked before it is
  built where its size can be known first: `*`, `+`, `~`, `%` and str.format
  (each field counted, so `'%s%s' % (s, s)` doubles are seen), `**` and `*`
  on integers, str methods and filters whose arguments set a size (center,
  ljust, rjust, zfill, expandtabs, replace, translate, split, splitlines,
  join, indent, wordwrap, urlize, format, sum, batch, slice, list), and
  after it is built for every other filter and call;
- a template of more than MAX_TOKENS tokens, before it is compiled;
- a list, tuple or dict whose text form would be over MAX_CHARS, however it
  was nested: `[x, x]` twenty times over is a few objects whose str(), JSON,
  comparison or hash would take 2**20 times the work (text_size);
- more than MAX_BUILT characters and items built in one render, which bounds
  the memory a template can hold however many values it keeps;
- a render running past MAX_SECONDS (a layout: LAYOUT_SECONDS, as a report
  may show a batch of thousands of runs): checked at each loop step, call,
  operator and filter, none of which can itself run long.

`tojson` encodes piece by piece and stops at the limit; bytes (from
str.encode) are refused, so their methods need no checks. Built-in templates are
far below every limit (the largest layout of a 10-round debate of 8 panelists
is a few MB, rendered in well under a second).
"""

from __future__ import annotations

import functools
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import jinja2
from jinja2 import filters as jinja_filters
from jinja2 import nodes, pass_context, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

MAX_CHARS = 20_000_000  # of any string a template builds, its output included
MAX_ITEMS = 1_000_000  # of any list it builds
MAX_BUILT = 100_000_000  # characters and items built in one render, all values together
MAX_SECONDS = 3.0  # of one render of a chat template or a prompt (they take milliseconds)
LAYOUT_SECONDS = 60.0  # of one report (20M characters of output take 5-20 s)
MAX_INT_BITS = 100_000  # of an integer computed with ** or *
MAX_LIPSUM = 1_000  # paragraphs or words per paragraph from lipsum()
MAX_JSON_INDENT = 16  # tojson's indent
# Of a template's source. Compiling takes time and memory by the token (100 KB of
# `{{ a }}` take 0.9 s and 150 MB); the largest built-in layout has 2,831 tokens and
# Qwen2.5's chat template 530.
MAX_SOURCE_CHARS = 1_000_000
MAX_TOKENS = 20_000
# A width or precision in a %-format or a str.format spec: "%10s", "{:>10}", "{:.3}"
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]?")
_FORMAT_NUMBERS = re.compile(r"\d+")
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_ATOMS = (bool, int, float, type(None))
_PLAIN = (str, *_ATOMS)  # printed as they are: no walk needed
# What a template can nest values in (dict views included): walked by text_size
_NESTING: tuple[type, ...] = (list, tuple, dict, set, frozenset, Namespace,
                              type({}.keys()), type({}.values()), type({}.items()))  # fmt: skip


class TemplateLimitError(jinja2.TemplateRuntimeError):
    """A template tried to build more, or run longer, than any template needs."""


# -- what one render may spend -------------------------------------------------------


@dataclass
class _Budget:
    seconds: float
    deadline: float
    built: int = 0


# Per thread (turns format prompts in parallel) and per render; None outside one.
_BUDGET: ContextVar[_Budget | None] = ContextVar("localtable_template_budget", default=None)


def tick() -> None:
    """Stop a render that has run for too long."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TemplateLimitError(
            f"the template ran for over {budget.seconds:g} seconds, the limit "
            "(a loop or a recursion without end?)"
        )


def _spend(size: int) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.built += size
    if budget.built > MAX_BUILT:
        raise TemplateLimitError(
            f"the template built over {MAX_BUILT:,} characters and items in all, the limit"
        )
    if time.monotonic() > budget.deadline:
        tick()


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


def check_text_size(value: Any, what: str, *, measure_objects: bool = False) -> None:
    """Refuse a value whose text (str, repr or JSON) would be over MAX_CHARS."""
    size = text_size(value, measure_objects=measure_objects)
    if size > MAX_CHARS:
        raise TemplateLimitError(
            f"{what} would build a value of {size:,} characters as text, over the limit "
            f"of {MAX_CHARS:,}"
        )


def check_built(value: Any, what: str) -> Any:
    """A value a template just built (or is about to keep), refused when too large."""
    if isinstance(value, str | bytes | bytearray):
        check_chars(len(value), what)
        _spend(len(value))
    elif isinstance(value, _NESTING):
        if not isinstance(value, Namespace):
            check_items(len(cast(Sized, value)), what)
            _spend(len(cast(Sized, value)))
        check_text_size(value, what)
    return value


# -- the size of a value as text -----------------------------------------------------


def _nested_str_size(s: str | bytes | bytearray) -> int:
    """At least len(repr(s)) and len(json.dumps(s)) with jinja's tojson escapes."""
    if isinstance(s, bytes | bytearray):
        return 4 * len(s) + 3
    if s.isascii() and s.isprintable():  # the one common case: count what gets escaped
        escaped = sum(s.count(c) for c in "<>&'") * 5 + sum(s.count(c) for c in '\\"')
        return len(s) + escaped + 2
    return 12 * len(s) + 2  # "\ud83d\ude00" for one character, at most


def escaped_size(s: str) -> int:
    """len(markupsafe.escape(s)): `<` and `>` become 4 characters, `&`, `"` and `'` 5."""
    return len(s) + 3 * (s.count("<") + s.count(">")) + 4 * sum(s.count(c) for c in "&\"'")


def text_size(value: Any, *, pretty: bool = False, measure_objects: bool = False) -> int:
    """An upper bound of the length of str(value), repr(value) and its JSON (pprint's
    layout too with pretty), counting each nested value as often as it appears. Stops
    counting past MAX_CHARS, so it takes time in the number of distinct objects (a
    value nested in itself counts once).

    Other objects (a record's, a comparison's: values the caller passed) count as
    one character, or as long as their repr with measure_objects (for when they are
    about to be printed)."""
    seen: dict[tuple[int, int], int] = {}
    open_: set[int] = set()

    def size(v: Any, nested: bool, depth: int) -> int:
        if isinstance(v, str | bytes | bytearray):
            return _nested_str_size(v) if nested else len(v)
        if isinstance(v, _ATOMS):
            return (v.bit_length() // 3 + 2) if isinstance(v, int) else 24
        key = (id(v), depth if pretty else 0)
        if key in seen:
            return seen[key]
        if not isinstance(v, _NESTING):
            seen[key] = len(repr(v)) if measure_objects else 1
            return seen[key]
        if id(v) in open_:
            return 8  # repr writes a value inside itself as [...] or {...}
        if isinstance(v, Namespace):
            children: Iterable[Any] = v._Namespace__attrs.items()
        elif isinstance(v, dict):
            children = v.items()
        else:
            children = cast(Iterable[Any], v)
        fields = getattr(v, "_fields", None)  # a namedtuple's repr names each field
        named = max(map(len, fields), default=0) + 1 if isinstance(fields, tuple) else 0
        per_item = 4 + named + (depth + 1 if pretty else 0)
        total = 32 + len(type(v).__name__)
        open_.add(id(v))
        for count, child in enumerate(children):
            if isinstance(child, tuple) and isinstance(v, dict | Namespace):
                total += size(child[0], True, depth + 1) + size(child[1], True, depth + 1)
            else:
                total += size(child, True, depth + 1)
            total += per_item
            if total > MAX_CHARS:
                break
            if count % 4096 == 4095:
                tick()
        open_.discard(id(v))
        seen[key] = total
        return total

    return size(value, False, 0)


# -- formats: every field counted --------------------------------------------------


def _largest_text(values: Iterable[Any], nested: bool) -> int:
    sizes = [text_size([v]) if nested else text_size(v) for v in values]
    return max(sizes, default=0)


def _format_arguments(args: Any) -> list[Any]:
    if isinstance(args, tuple):
        return list(args)
    if isinstance(args, Mapping):
        return list(args.values())
    return [args]


def checked_percent(fmt: Any, args: Any, what: str) -> None:
    """Refuse `fmt % args` when its result could be over MAX_CHARS: each field (a
    `%(name)s` can repeat) may print the largest argument at its width."""
    text = fmt if isinstance(fmt, str) else str(fmt)
    fields = 0
    widths = 0
    for match in _PERCENT_SPEC.finditer(text):
        if match.group(0) == "%%":
            continue
        fields += 1
        for number in match.groups():
            if number == "*":
                raise TemplateLimitError(f"{what}: a '*' width is not allowed in templates")
            if number:
                check_chars(int(number), what)
                widths += int(number)
    if fields:
        largest = _largest_text(_format_arguments(args), nested="%r" in text or "%a" in text)
        if isinstance(fmt, Markup):
            largest *= 6  # each argument HTML-escaped
        check_chars(len(text) + widths + fields * largest, what)


def checked_format(fmt: str, args: Iterable[Any], what: str) -> None:
    """Refuse `fmt.format(...)` when its result could be over MAX_CHARS (each field may
    print the largest argument, at its width)."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises its own error
    count = widths = 0
    nested = False
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        count += 1
        nested = nested or conversion in ("r", "a")
        if spec and "{" in spec:
            raise TemplateLimitError(f"{what}: a computed width is not allowed in templates")
        for number in _FORMAT_NUMBERS.findall(spec or ""):
            check_chars(int(number), what)
            widths += int(number)
    if count:
        check_chars(len(fmt) + widths + count * _largest_text(args, nested), what)


# -- str methods --------------------------------------------------------------------


def _replaced_size(text: str, old: str, new: str, count: int | None = None) -> int:
    found = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _joined_size(items: list[Any], separator: str) -> int:
    return sum(text_size(x) for x in items) + len(separator) * max(0, len(items) - 1)


def _checked_str_call(
    owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Check a str method's call before it runs; the arguments to run it with."""
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        check_chars(args[0], what)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            check_chars(len(owner) + owner.count("\t") * tabsize, what)
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count")
        check_chars(_replaced_size(owner, str(args[0]), str(args[1]), count), what)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        check_chars(len(owner) * max(longest, 1), what)
    elif name in ("format", "format_map"):
        values = [*args, *kwargs.values()]
        if name == "format_map" and args and isinstance(args[0], Mapping):
            values = list(args[0].values())
        checked_format(owner, values, what)
    elif name == "join" and args:
        items = list(args[0])
        check_items(len(items), what)
        check_chars(_joined_size(items, owner), what)
        args = (items, *args[1:])
    elif name in ("split", "rsplit"):
        # at most MAX_ITEMS + 1 pieces are made: more is refused after
        maxsplit = args[1] if len(args) > 1 else kwargs.pop("maxsplit", -1)
        if not isinstance(maxsplit, int) or maxsplit < 0 or maxsplit > MAX_ITEMS:
            maxsplit = MAX_ITEMS
        args = (args[0] if args else kwargs.pop("sep", None), maxsplit)
    elif name == "splitlines" and len(owner) > MAX_ITEMS:
        check_items(sum(owner.count(c) for c in _LINE_BREAKS) + 1, what)
    return args, kwargs


# -- filters --------------------------------------------------------------------------


def _sized_len(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    check_items(len(items), "join")
    check_chars(_joined_size(items, str(d)), "join")  # an attribute is part of its item
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
    step = width if isinstance(width, int) else text_size(width)
    text = str(s)
    check_chars(len(text) + (text.count("\n") + 1) * step, "indent")
    return jinja_filters.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(
    environment: Any, s: str, width: int = 79, break_long_words: bool = True,
    wrapstring: str | None = None, break_on_hyphens: bool = True,
) -> str:  # fmt: skip
    text = str(s)
    joiner = environment.newline_sequence if wrapstring is None else str(wrapstring)
    lines = len(text) // max(int(width), 1) + text.count("\n") + 1
    check_chars(len(text) + lines * len(joiner), "wordwrap")
    return jinja_filters.do_wordwrap(environment, s, width, break_long_words, wrapstring,
                                     break_on_hyphens)  # fmt: skip


@pass_eval_context
def _urlize(eval_ctx: Any, value: str, *args: Any, **kwargs: Any) -> str:
    extra = sum(len(str(a)) for a in [*args, *kwargs.values()] if isinstance(a, str))
    text = str(value)
    words = text.count(" ") + text.count("\n") + 1
    check_chars(len(text) * 12 + words * (100 + extra), "urlize")
    return jinja_filters.do_urlize(eval_ctx, value, *args, **kwargs)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    checked_percent(value, kwargs or args, "format")
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    items = list(iterable)
    if attribute is None and isinstance(start, list | tuple):
        check_items(len(start) + sum(_sized_len(x) or 0 for x in items), "sum")
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
    if indent is not None and (not isinstance(indent, int) or indent > MAX_JSON_INDENT):
        raise TemplateLimitError(f"tojson: an indent over {MAX_JSON_INDENT} is not allowed")
    return jinja_filters.do_tojson(eval_ctx, value, indent)


def _pprint(value: Any) -> str:
    size = text_size(value, pretty=True)
    if size > MAX_CHARS:
        check_chars(size, "pprint")
    return jinja_filters.do_pprint(value)


def bounded_dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps, piece by piece, stopped at MAX_CHARS (counting the growth of
    jinja's HTML escapes, done on the result)."""
    parts: list[str] = []
    size = 0
    for count, part in enumerate(json.JSONEncoder(**kwargs).iterencode(obj)):
        size += len(part) + 5 * sum(part.count(c) for c in "<>&'")
        if size > MAX_CHARS:
            check_chars(size, "tojson")
        if count % 4096 == 4095:
            tick()
        parts.append(part)
    result = "".join(parts)
    _spend(len(result))
    return result


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if n > MAX_LIPSUM or max > MAX_LIPSUM:
        raise TemplateLimitError(
            f"lipsum: {n:,} paragraphs of up to {max:,} words is over the limit of {MAX_LIPSUM:,}"
        )
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


def _divisibleby(value: Any, num: int) -> bool:
    if not isinstance(value, int | float) or not isinstance(num, int | float):
        raise TemplateLimitError("divisibleby: both sides must be numbers")
    return value % num == 0


# Filters that build a list from their first argument: sized before they start.
_LISTING = frozenset({"list", "sort", "unique", "dictsort", "items", "groupby",
                      "map", "select", "reject", "selectattr", "rejectattr"})  # fmt: skip
_ESCAPING = frozenset({"e", "escape", "forceescape", "xmlattr"})
# Filters that turn their first argument into text: a caller's object counts as long as
# its repr (the others count it as one character).
_TEXT = frozenset({"string", "format", "pprint", "join", "upper", "lower", "title",
                   "capitalize", "trim", "striptags", "truncate", "wordcount", "wordwrap",
                   "center", "indent", "replace", "escape", "e", "forceescape", "safe",
                   "urlencode", "urlize", "xmlattr", "gbnf_literal"})  # fmt: skip


def metered(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts toward the render's time and size budget: its first
    argument (the filtered value) is sized first, its result after."""
    offset = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None and time.monotonic() > budget.deadline:
            tick()
        if len(args) > offset:
            value = args[offset]
            if type(value) is not str:
                if not isinstance(value, _PLAIN):
                    check_text_size(value, name, measure_objects=name in _TEXT)
                if name in _LISTING and (size := _sized_len(value)) is not None:
                    check_items(size, name)
            elif name in _LISTING:
                check_items(len(value), name)
            elif name in _ESCAPING and 5 * len(value) > MAX_CHARS:
                check_chars(escaped_size(value), name)
        result = func(*args, **kwargs)
        if type(result) is str and budget is not None:  # the common case, made short
            if len(result) > MAX_CHARS:
                check_chars(len(result), name)
            budget.built += len(result)
            if budget.built > MAX_BUILT:
                _spend(0)
            return result
        return check_built(result, name)

    return run


class _MeteredFilters(dict[str, Any]):
    """Every filter, whenever added, is metered (the environment's overlays share it)."""

    def __setitem__(self, name: str, func: Any) -> None:
        super().__setitem__(name, metered(name, func))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, func in dict(*args, **kwargs).items():
            self[name] = func


@pass_context
def _loop_steps(context: Any, iterable: Any) -> Iterator[Any]:
    """What a {% for %} loops over, one step of the time budget per item."""
    budget = _BUDGET.get()
    if budget is None:
        yield from iterable
        return
    deadline = budget.deadline
    clock = time.monotonic
    for item in iterable:
        if clock() > deadline:
            tick()
        yield item


LOOP_FILTER = "localtable_loop_steps"


class _BoundedCodeGenerator(CodeGenerator):
    """Sizes what the sandbox cannot intercept: `~` joins, printed values and list,
    tuple and dict literals."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.checked_text({func_name}((")
        for arg in node.nodes:
            self.write("environment.printable(context.eval_ctx.autoescape, ")
            self.visit(arg, frame)
            self.write("), ")
        self.write(")))")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.printable(context.eval_ctx.autoescape, ")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write(")")
        super()._output_child_post(node, frame, finalize)

    def _literal(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        if getattr(node, "ctx", "load") != "load":  # a target: {% for a, b in ... %}
            visit(node, frame)
            return
        self.write("environment.checked_literal(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:  # noqa: N802
        self._literal(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:  # noqa: N802
        self._literal(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:  # noqa: N802
        self._literal(super().visit_Dict, node, frame)


class BoundedTemplate(jinja2.Template):
    """A template whose render is one budget of time and memory (its includes,
    imports and macros included)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        if _BUDGET.get() is not None:  # rendered from inside another render
            return super().render(*args, **kwargs)
        seconds = getattr(self.environment, "max_seconds", MAX_SECONDS)
        token = _BUDGET.set(_Budget(seconds, deadline=time.monotonic() + seconds))
        try:
            return super().render(*args, **kwargs)
        finally:
            _BUDGET.reset(token)

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        raise TypeError("a bounded template renders whole: call render()")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment plus the bounds of this module's docstring."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})
    code_generator_class = _BoundedCodeGenerator
    template_class = BoundedTemplate
    max_seconds = MAX_SECONDS  # of one render; an overlay may have its own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        filters = _MeteredFilters()
        filters.update(self.filters)
        filters.update(
            join=_join, replace=_replace, center=_center, indent=_indent, format=_format,
            sum=_sum, batch=_batch, slice=_slice, tojson=_tojson, pprint=_pprint,
            wordwrap=_wordwrap, urlize=_urlize,
        )  # fmt: skip
        dict.__setitem__(filters, LOOP_FILTER, _loop_steps)  # yields as it goes: not metered
        self.filters = filters
        self.tests["divisibleby"] = _divisibleby
        self.globals["lipsum"] = _lipsum
        self.policies["json.dumps_function"] = bounded_dumps

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """A template's tree, refused when too large to compile; every {% for %} in it
        loops through the time budget (an empty nested loop calls nothing else the
        sandbox could count)."""
        if len(source) > MAX_SOURCE_CHARS:
            raise TemplateLimitError(
                f"the template is {len(source):,} characters long, over the limit of "
                f"{MAX_SOURCE_CHARS:,}"
            )
        for count, _token in enumerate(self.lexer.tokeniter(source, name, filename)):
            if count == MAX_TOKENS:
                raise TemplateLimitError(
                    f"the template has over {MAX_TOKENS:,} tokens (names, operators, "
                    "tags, text), the limit"
                )
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [], [], None, None,
                                     lineno=loop.iter.lineno)  # fmt: skip
        tree.set_environment(self)
        return tree

    # -- operators --

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "*":
            self._check_repeat(left, right)
        elif operator == "+":
            if isinstance(left, str | bytes) and isinstance(right, str | bytes):
                check_chars(len(left) + len(right), "'+'")
            elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
                check_items(len(left) + len(right), "'+'")
                check_text_size([left, right], "'+'")  # at least the sum's
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                self._check_bits(abs(left).bit_length() * right, "'**'")
        elif operator == "%" and isinstance(left, str | bytes):
            checked_percent(left, right, "'%'")
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str | bytes):
            check_built(result, f"'{operator}'")
        elif isinstance(result, list | tuple):
            _spend(len(result))  # sized above
        return result

    def _check_repeat(self, left: Any, right: Any) -> None:
        if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool):
            self._check_bits(abs(left).bit_length() + abs(right).bit_length(), "'*'")
            return
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                times = max(times, 0)
                if isinstance(seq, str | bytes):
                    check_chars(len(seq) * times, "'*'")
                else:
                    check_items(len(seq) * times, "'*'")
                    if times > 1:
                        check_chars((text_size(seq) - 2) * times + 2, "'*' (as text)")

    @staticmethod
    def _check_bits(bits: int, what: str) -> None:
        if bits > MAX_INT_BITS:
            raise TemplateLimitError(
                f"{what} would compute a number of about {bits:,} bits, over the limit "
                f"of {MAX_INT_BITS:,}"
            )

    # -- calls, attributes, items --

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        tick()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str):
            args, kwargs = _checked_str_call(owner, name, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        what = f"{name}()" if name else "a call"
        if isinstance(result, bytes | bytearray):  # their methods are not checked: no need
            raise TemplateLimitError(f"{what}: bytes are not allowed in templates")
        if name in ("split", "rsplit") and isinstance(result, list) and len(result) > MAX_ITEMS:
            check_items(len(result), f"str.{name}()")
        if isinstance(result, str) or (
            isinstance(owner, str | list | tuple | dict) or __obj is dict or __obj is Namespace
        ):  # what a template builds; a caller's own values are its own size
            check_built(result, what)
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        result = super().getitem(obj, argument)
        if isinstance(argument, slice) and isinstance(result, str | bytes | list | tuple):
            _spend(len(result))
        return result

    # -- values the code generator sends here --

    def checked_text(self, value: Any) -> Any:
        """A `~` join, refused when too long."""
        check_chars(len(value), "'~'")
        _spend(len(value))
        return value

    def printable(self, autoescape: bool, value: Any) -> Any:
        """A value about to be printed or joined with `~`, refused when its text (HTML-
        escaped, in an autoescaped template) would be too long, before it is built."""
        if isinstance(value, str):
            if autoescape and 5 * len(value) > MAX_CHARS and not isinstance(value, Markup):
                check_chars(escaped_size(value), "printing a value")
        elif not isinstance(value, _ATOMS):
            check_text_size(value, "printing a value", measure_objects=True)
        return value

    def checked_literal(self, value: Any) -> Any:
        """A list, tuple or dict literal, refused when its text would be too long."""
        tick()
        return check_built(value, "a literal")

    def concat(self, parts: Iterable[str]) -> str:
        """Every template's, macro's and block's output, refused when too long (read part by
        part, so a template printing forever stops at the limit)."""
        kept: list[str] = []
        keep = kept.append
        size = 0
        for part in parts:
            size += len(part)
            if size > MAX_CHARS:
                check_chars(size, "the template's output")
            keep(part)
        _spend(size)
        return "".join(kept)


def error_reason(exc: BaseException) -> str:
    """What went wrong in a template, in words (no traceback)."""
    if isinstance(exc, jinja2.UndefinedError):
        return exc.message or str(exc)
    if isinstance(exc, jinja2.TemplateError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "recursion too deep (a macro, include or loop that calls itself without end?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"
