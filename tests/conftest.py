"""Shared fixtures: an isolated cache, the repo's models.toml, a fake speaker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS_TOML = REPO / "models.toml"


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("localtable-cache")


@pytest.fixture(autouse=True)
def isolated_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's ~/.cache/localtable (hash cache, joined model files)."""
    monkeypatch.setenv("LOCALTABLE_CACHE", str(session_cache))
    monkeypatch.delenv("LOCALTABLE_CONFIG", raising=False)
    return session_cache


def subprocess_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LOCALTABLE_CACHE"] = str(cache)
    env["PYTHONPATH"] = str(REPO)
    return env


def default_stop_signals() -> None:
    """Popen's preexec_fn for a test that sends SIGINT or SIGHUP: a suite started under
    nohup passes SIGHUP ignored on to every process it starts, and one started in the
    background of a non-interactive shell (`make test &`) passes SIGINT ignored;
    localtable, like Python itself, keeps an ignored signal ignored, as the shell asked
    (stopsignals.py). The child starts with both at their default, so the test sees
    what Ctrl-C or a terminal's hangup does to localtable."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
