"""Prompt, grammar and layout templates: where they live, how they render, their hashes.

The templates are files in prompts/ (top level of a checkout, or
localtable/prompts inside an installed wheel). Every template a run uses is
hashed into the run record, so a changed prompt is visible.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localtable.errors import ConfigError


def builtin_dir() -> Path:
    installed = Path(__file__).parent / "prompts"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "prompts"


def gbnf_literal(text: str) -> str:
    """Quote text as a GBNF string literal; an invalid grammar would crash llama.cpp."""
    return json.dumps(text, ensure_ascii=True)


class TemplateSet:
    """A folder of templates (user overrides first, then the built-ins)."""

    def __init__(self, override_dir: Path | None = None) -> None:
        dirs = [str(builtin_dir())]
        if override_dir is not None:
            if not override_dir.is_dir():
                raise ConfigError(f"{override_dir}: templates folder does not exist")
            dirs.insert(0, str(override_dir))
        self.dirs = [Path(d) for d in dirs]
        # Sandboxed: user-supplied layout templates must not reach Python internals.
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(dirs),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        )
        self.env.filters["gbnf_literal"] = gbnf_literal

    def path_of(self, name: str) -> Path:
        for d in self.dirs:
            if (d / name).is_file():
                return d / name
        raise ConfigError(f"template {name!r} not found in {', '.join(map(str, self.dirs))}")

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.path_of(name).read_bytes()).hexdigest()

    def render(self, template_name: str, **values: Any) -> str:
        name = template_name
        try:
            template = self.env.get_template(name)
            return template.render(**values)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"{exc.filename or name}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"{self.path_of(name)}: template error: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{self.path_of(name)}: template error: {exc}") from None


@cache
def builtin() -> TemplateSet:
    return TemplateSet()
