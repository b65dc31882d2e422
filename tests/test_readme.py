"""The README and the manual in docs/ stay true: every command, every option and every
models.toml key is documented, and every `localtable` command line they show parses."""

from __future__ import annotations

import re
import shlex

import click
from pydantic import BaseModel

from localtable import config
from localtable.backends.openai.source import OpenAISource
from localtable.backends.server.source import ServerSource
from localtable.cli import cli
from localtable.models import sources
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = {path.name: path.read_text(encoding="utf-8") for path in sorted(REPO.glob("docs/*.md"))}
COMMANDS_PAGE = PAGES["commands.md"]
MODELS_PAGE = PAGES["models.md"]


def test_every_command_is_in_the_readme_table() -> None:
    for name in cli.commands:
        assert re.search(rf"^\| `localtable {name}\b", README, re.M), (
            f"`localtable {name}` is missing from README.md's table of commands"
        )


def command_section(name: str) -> str:
    """The section of docs/commands.md headed by `localtable NAME ...`."""
    match = re.search(rf"^## `localtable {name}\b.*?(?=^## |\Z)", COMMANDS_PAGE, re.M | re.S)
    assert match, f"docs/commands.md has no section `## \\`localtable {name}\\``"
    return match.group(0)


def test_every_option_of_every_command_is_in_its_section() -> None:
    for name, command in cli.commands.items():
        section = command_section(name)
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", section), (
                    f"option {opt} of `localtable {name}` is missing from its section "
                    "of docs/commands.md"
                )


def localtable_command_lines(text: str) -> list[str]:
    """Every command line in the page's code blocks that runs localtable (at the start of
    a line, after a `$ ` prompt or a pipe), with its line continuations joined; an indented
    line is output, not a command."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line[:1].isspace():
                continue
            for part in line.removeprefix("$ ").split("|"):
                if part.strip().startswith("localtable "):
                    lines.append(part.strip())
    return lines


def test_every_command_line_in_the_docs_parses() -> None:
    """Each `localtable ...` line of README.md and docs/*.md names a real command and
    options it takes, with values it accepts (parsed by click, not run)."""
    shown: set[str] = set()
    for page, text in {"README.md": README, **PAGES}.items():
        for line in localtable_command_lines(text):
            argv = shlex.split(line, comments=True)[1:]
            name = argv[0]
            assert name in cli.commands, f"{page}: `{line}` names no localtable command"
            try:
                cli.commands[name].make_context(name, argv[1:])
            except click.ClickException as exc:
                raise AssertionError(
                    f"{page}: `{line}` does not parse: {exc.format_message()}"
                ) from None
            shown.add(name)
    assert shown == set(cli.commands), f"no example of {set(cli.commands) - shown}"


def keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_every_models_toml_key_is_documented() -> None:
    tables: list[type[BaseModel]] = [
        config.DebateDefaults, config.ModelSpec, config.PanelSpec, config.PanelistSpec,
        config.Sampling, sources.PackageSource, sources.PathSource, sources.HubSource,
        sources.PackageFile, ServerSource, OpenAISource,
    ]  # fmt: skip
    for table in tables:
        for key in keys(table):
            assert re.search(rf"\b{re.escape(key)}\b", MODELS_PAGE), (
                f"models.toml key {table.__name__}.{key} is missing from docs/models.md"
            )


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:600]
    assert "make demo" in head and "make test" in head
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_exit_codes_match_the_errors() -> None:
    from localtable.errors import (
        ConfigError,
        LocaltableError,
        ModelFileError,
        RecordError,
        RecordWriteError,
    )
    from localtable.runlock import RunLocked
    from localtable.session.rerun import EngineChanged
    from localtable.session.run import RunFailed, RunInterrupted

    for code, meaning in [(0, "ok"), (1, "failed"), (2, "refused"), (130, "Ctrl-C"),
                          (143, "SIGTERM"), (129, "SIGHUP")]:  # fmt: skip
        assert re.search(rf"\| `{code}` \|[^\n]*{meaning}", COMMANDS_PAGE), (code, meaning)
    assert "0 ok, 1 the run failed" in README and "2 the input was refused" in README
    refused = [ConfigError, ModelFileError, RecordError, RunLocked, EngineChanged]
    assert {cls.exit_code for cls in refused} == {2}
    assert {cls.exit_code for cls in (LocaltableError, RunFailed, RecordWriteError)} == {1}
    assert RunInterrupted.exit_code == 130
