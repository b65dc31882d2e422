"""The README stays true: every command and every models.toml key is documented."""

from __future__ import annotations

import re

from pydantic import BaseModel

from localtable import config
from localtable.backends.openai.source import OpenAISource
from localtable.backends.server.source import ServerSource
from localtable.cli import cli
from localtable.models import sources
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_every_command_is_documented() -> None:
    for name in cli.commands:
        assert f"localtable {name}" in README, f"`localtable {name}` is missing from README.md"


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
            assert re.search(rf"\b{re.escape(key)}\b", README), (
                f"models.toml key {table.__name__}.{key} is missing from README.md"
            )


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:600]
    assert "make demo" in head and "make test" in head
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_exit_codes_match_the_errors() -> None:
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
        assert re.search(rf"\| `{code}` \|[^\n]*{meaning}", README), (code, meaning)
    refused = [ConfigError, ModelFileError, RecordError, RunLocked, EngineChanged]
    assert {cls.exit_code for cls in refused} == {2}
    assert {cls.exit_code for cls in (LocaltableError, RunFailed, RecordWriteError)} == {1}
    assert RunInterrupted.exit_code == 130
