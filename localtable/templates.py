"""Prompt, grammar and layout templates: where they live, how they render, their hashes.

The templates are files in prompts/ (top level of a checkout, or
localtable/prompts inside an installed wheel); a debate protocol's prompts and
grammars are in a folder of their own (prompts/protocols/<name>/, or the user's:
localtable/protocols.py), rendered from the texts read once. Every template a
run uses is hashed into the run record, so a changed prompt is visible.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import traceback
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from localtable.errors import ConfigError, LocaltableError
from localtable.template_limits import LAYOUT_SECONDS, BoundedSandbox, error_reason


def builtin_dir() -> Path:
    installed = Path(__file__).parent / "prompts"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "prompts"


def roundtable_dir() -> Path:
    """The built-in roundtable protocol's folder: the prompts a debate rendered before
    protocols were data, which the built-in set still finds (tests, older records)."""
    return builtin_dir() / "protocols" / "roundtable"


class FilesLoader(jinja2.BaseLoader):
    """Templates from texts already read (a protocol's files), named as the files they
    came from, so that an error names the file and its line."""

    def __init__(self, files: Mapping[str, str], origin: Path) -> None:
        self.files = files
        self.origin = origin

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.files:
            raise jinja2.TemplateNotFound(template)
        return self.files[template], str(self.origin / template), lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.files)


def gbnf_literal(text: str) -> str:
    """Quote text as a GBNF string literal; an invalid grammar would crash llama.cpp."""
    return json.dumps(text, ensure_ascii=True)


class TemplateSet:
    """A folder of templates (user overrides first, then the built-ins), or the texts of
    a protocol's files (`files`, read from `origin`) and nothing else."""

    def __init__(
        self,
        override_dir: Path | None = None,
        *,
        files: Mapping[str, str] | None = None,
        origin: Path = Path("."),
    ) -> None:
        dirs = [str(builtin_dir()), str(roundtable_dir())]
        if override_dir is not None:
            if not override_dir.is_dir():
                raise ConfigError(f"{override_dir}: templates folder does not exist")
            dirs.insert(0, str(override_dir))
        self.files = files
        self.dirs = [origin] if files is not None else [Path(d) for d in dirs]
        loader: jinja2.BaseLoader = (
            FilesLoader(files, origin) if files is not None else jinja2.FileSystemLoader(dirs)
        )
        # Sandboxed: user-supplied templates must not reach Python internals, nor build
        # values or run without bound (localtable/template_limits.py).
        self.env = BoundedSandbox(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        )
        self.env.filters["gbnf_literal"] = gbnf_literal
        # Output layouts are escaped by their format (see render_layout), and may take
        # longer than a prompt: a report can show a batch of thousands of runs.
        self.html_env = self.env.overlay(autoescape=True, finalize=text_value)
        self.md_env = self.env.overlay(finalize=markdown_value)
        self.text_env = self.env.overlay(finalize=text_value)
        for layout_env in (self.html_env, self.md_env, self.text_env):
            layout_env.max_seconds = LAYOUT_SECONDS

    def path_of(self, name: str) -> Path:
        for d in self.dirs:
            if (name in self.files) if self.files is not None else (d / name).is_file():
                return d / name
        raise ConfigError(f"template {name!r} not found in {', '.join(map(str, self.dirs))}")

    def sha256(self, name: str) -> str:
        if self.files is not None:  # the bytes read (UTF-8 text encodes back to them)
            self.path_of(name)
            return hashlib.sha256(self.files[name].encode("utf-8")).hexdigest()
        return hashlib.sha256(self.path_of(name).read_bytes()).hexdigest()

    def render(self, template_name: str, **values: Any) -> str:
        """A prompt or grammar template (autoescaped only if its name ends in .html/.html.j2)."""
        return self._render(self.env, template_name, values)

    def render_layout(self, template_name: str, fmt: str, **values: Any) -> str:
        """An output layout, escaped for its format whatever the file is called.

        html: every value is HTML-escaped (autoescape on). md: every value has
        `<` and `[` replaced by entities, so a Markdown viewer shows raw HTML,
        links and images from a model as text. In every format, C0 and C1
        control characters other than newline and tab are dropped, so a record
        (they are shared) cannot drive the terminal that shows it.
        A layout may be the user's: any error in it is a one-line ConfigError.
        """
        env = {"html": self.html_env, "md": self.md_env}.get(fmt, self.text_env)
        return self._render(env, template_name, values)

    def compile_soon(self, template_names: list[str]) -> threading.Thread:
        """Compile these prompt templates on a thread of their own (1-12 ms each), for
        when the caller is about to wait (for models to load) and would compile them
        afterwards, one by one, at their first render. A broken one is left for that
        render to report."""

        def compile_all() -> None:
            for name in template_names:
                with contextlib.suppress(Exception):
                    self.env.get_template(name)

        thread = threading.Thread(target=compile_all, daemon=True, name="localtable-templates")
        thread.start()
        return thread

    def compile(self, template_name: str) -> None:
        """Load and compile a template, so a broken one fails before a long run."""
        try:
            self.html_env.get_template(template_name)
        except (jinja2.TemplateError, UnicodeDecodeError) as exc:
            raise self._error(template_name, exc) from None

    def _render(self, env: jinja2.Environment, name: str, values: dict[str, Any]) -> str:
        """Any error in a template (the user's may replace ours) is one ConfigError line:
        1 // 0, "a" + 1, a huge range, a loop without end."""
        try:
            return env.get_template(name).render(**values)
        except LocaltableError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(name, exc) from None

    def _error(self, name: str, exc: Exception) -> ConfigError:
        """One line naming the template file and line, from the template's own traceback."""
        if isinstance(exc, UnicodeDecodeError):  # raised while loading, before any line
            return ConfigError(
                f"{self._where(name)}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                f"offset {exc.start}); save the template as UTF-8"
            )
        if isinstance(exc, jinja2.TemplateSyntaxError):
            where = exc.filename or self._where(name)
            return ConfigError(f"{where}:{exc.lineno}: template syntax error: {exc.message}")
        frame = template_frame(exc)
        where = f"{frame[0]}:{frame[1]}" if frame else self._where(name)
        if isinstance(exc, jinja2.TemplateNotFound):
            dirs = ", ".join(map(str, self.dirs))
            return ConfigError(f"{where}: template {exc.name!r} not found in {dirs}")
        return ConfigError(f"{where}: template error: {error_reason(exc)}")

    def _where(self, name: str) -> str:
        try:
            return str(self.path_of(name))
        except ConfigError:
            return name


def template_frame(exc: BaseException) -> tuple[str, int] | None:
    """The innermost (file, line) of a template in the traceback Jinja rewrote for it."""
    found = None
    for entry in traceback.extract_tb(exc.__traceback__):
        name = entry.filename
        if name and not name.endswith(".py") and not name.startswith("<") and entry.lineno:
            found = (entry.filename, entry.lineno)
    return found


def markdown_value(value: Any) -> Any:
    """Neutralise raw HTML, autolinks, links, images and terminal control characters in a
    value printed into Markdown.

    Entities, not backslashes: the replacement contains neither `<` nor `[`, so
    escaping twice (a macro's output printed again) changes nothing.
    """
    if isinstance(value, str):
        return text_value(value).replace("<", "&lt;").replace("[", "&#91;")
    return value


_CONTROL = dict.fromkeys(c for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in (9, 10))


def text_value(value: Any) -> Any:
    """Drop terminal control characters (ANSI escapes, carriage returns) from a value.

    A Markup value stays Markup (markupsafe's translate keeps the type)."""
    if isinstance(value, str):
        return value.translate(_CONTROL)
    return value


@cache
def builtin() -> TemplateSet:
    return TemplateSet()


def user_templates(path: Path | None) -> tuple[TemplateSet, str | None]:
    """--template: the built-in templates, or a user folder over them, or one user
    layout file (its folder over the built-ins, and its name as the layout)."""
    if path is None:
        return TemplateSet(), None
    if path.is_dir():
        return TemplateSet(path), None
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: not a regular file; give a template file or folder")
        raise ConfigError(f"{path}: template file does not exist")
    return TemplateSet(path.parent), path.name
