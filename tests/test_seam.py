"""The seam as docs/architecture.md says it: a backend is one package and one line.

tests/fakebackend.py is such a backend, with a source kind of its own (`scripted`)
that nothing in localtable/ names: every command that lists, runs or reruns models
works on it. A package installed beside localtable adds one through an entry point,
and a second registration of a name or a kind is refused.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localtable import backends
from localtable.cli import cli
from localtable.config import load_config
from localtable.errors import ConfigError
from localtable.record import read_record, write_record
from tests import fakebackend
from tests.conftest import REPO, subprocess_env

CONFIG = """
[debate]
panel = "duo"
rounds = 2

[models.alpha]
source = { kind = "scripted", voice = "holds that yes" }
[models.beta]
source = { kind = "scripted" }
[models.onfile]
source = { kind = "path", path = "nowhere.gguf" }

[panels.duo]
panelists = [
  { name = "Ada", model = "alpha" },
  { name = "Bob", model = "beta" },
]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as it is now, put back after the test."""
    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))
    monkeypatch.setattr(backends, "_KINDS", dict(backends._KINDS))
    monkeypatch.setattr(backends, "_plugins_loaded", backends._plugins_loaded)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_models_lists_a_scripted_model_from_its_backend(config: Path) -> None:
    result = run("models", "--config", str(config))
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line}
    assert re.search(r"scripted \(holds that yes\)\s.*unchecked$", rows["alpha"])
    assert rows["beta"].endswith("unchecked") and "scripted (says yes)" in rows["beta"]
    assert "path nowhere.gguf" in rows["onfile"] and rows["onfile"].endswith("missing")


def test_debate_resume_and_replay_run_a_scripted_panel(config: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fakebackend.LOADS.clear()
    done = run("debate", "Is one line enough?", "--config", str(config), "--runs-dir",
               str(runs), "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    (run_dir,) = list(runs.iterdir())
    whole = read_record(run_dir)
    assert whole.status == "complete" and [m.backend for m in whole.models] == ["fake", "fake"]
    assert [m.source for m in whole.models] == ["scripted (holds that yes)", "scripted (says yes)"]
    first = next(t for t in whole.turns if t.panelist == "Ada")
    assert first.generation is not None and "Ada holds that yes" in first.generation.raw_output
    assert fakebackend.LOADS == {"alpha": 1, "beta": 1}

    cut = whole.model_copy(deep=True)
    cut.turns = [t for t in cut.turns if t.round == 1]
    cut.summary, cut.status = None, "interrupted"  # the labels after round 2 are stale
    write_record(run_dir, cut)
    resumed = run("resume", str(run_dir), "--config", str(config), "--runs-dir", str(runs), "-q")
    assert resumed.exit_code == 0, resumed.output
    again = read_record(run_dir)
    assert again.status == "complete" and again.transcript_sha256 == whole.transcript_sha256

    # replay opens what the record says (its voices), not what models.toml says today
    config.write_text(CONFIG.replace("holds that yes", "says no"))
    replayed = run("replay", str(run_dir), "--config", str(config), "--runs-dir", str(runs), "-q")
    assert replayed.exit_code == 0, replayed.output
    assert replayed.stdout.strip() == f"identical {whole.transcript_sha256}"


def test_no_file_of_localtable_knows_the_scripted_kind() -> None:
    """The test backend's kind is its own: naming it anywhere in the package would mean
    the package knows a backend it should only reach through the registry."""
    named = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "localtable").rglob("*"))
        if path.is_file() and re.search(rb"scripted", path.read_bytes(), re.IGNORECASE)
    ]
    assert named == []


@pytest.mark.usefixtures("registry")
def test_a_second_registration_of_a_name_or_a_kind_is_refused() -> None:
    before = (backends.registrations(), sorted(backends._KINDS))
    with pytest.raises(ConfigError, match="backend 'fake' is registered twice"):
        backends.register("fake", "tests.fakebackend:FakeBackend", sources={"other": "m:S"})
    with pytest.raises(ConfigError, match="source kind 'scripted' is registered twice"):
        backends.register("fake2", "tests.fakebackend:FakeBackend", sources={"scripted": "m:S"})
    with pytest.raises(ConfigError, match="source kind 'server' is registered twice"):
        backends.register("myserver", "my.backend:Mine", sources={"server": "my.source:S"})
    with pytest.raises(ConfigError, match="'nowhere' is not 'package.module:Name'"):
        backends.register("odd", "nowhere", sources={"odd": "m:S"})
    assert (backends.registrations(), sorted(backends._KINDS)) == before  # nothing half-added
    # the very same registration again (a module imported after a restore) changes nothing
    backends.register(
        "fake", "tests.fakebackend:FakeBackend",
        sources={"scripted": "tests.fakebackend:ScriptedSource"},
    )  # fmt: skip
    assert (backends.registrations(), sorted(backends._KINDS)) == before


@pytest.mark.usefixtures("registry")
def test_a_registered_model_that_cannot_be_imported_is_one_line(config: Path) -> None:
    backends.register("ghost", "tests.nothere:Ghost", sources={"ghost": "tests.nothere:Src"})
    config.write_text(CONFIG.replace('kind = "path"', 'kind = "ghost"'))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "models.onfile.source: tests.nothere:Src, registered for a backend, cannot be " in (
        str(err.value)
    )


def test_an_unknown_source_kind_names_the_kinds_there_are(config: Path) -> None:
    config.write_text(CONFIG.replace('kind = "path"', 'kind = "ftp"'))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert "models.onfile.source: unknown source kind 'ftp'" in message
    assert re.search(r"runs hf, (openai, )?package, path, .*server", message), message
    config.write_text(CONFIG.replace('{ kind = "path", ', "{ "))
    with pytest.raises(ConfigError, match="the source has no kind; give kind = one of hf,"):
        load_config(config)


PLUGIN = '''
"""A backend package as a third party would write it: one module, one line."""
from typing import Literal

from localtable import backends
from localtable.config import Source
from tests.fakebackend import FakeBackend


class EchoSource(Source):
    kind: Literal["echo"]
    phrase: str

    def label(self) -> str:
        return f"echo {self.phrase}"


class EchoBackend(FakeBackend):
    name = "echo"


backends.register("echo", "lt_echo:EchoBackend", sources={"echo": "lt_echo:EchoSource"})
'''


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: None) -> Iterator[Path]:
    """A distribution on sys.path whose entry point names a module (the test writes it)."""
    site = tmp_path / "site"
    info = site / "lt_echo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lt-echo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{backends.ENTRY_POINTS}]\necho = lt_echo\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(backends, "_plugins_loaded", False)
    yield site
    sys.modules.pop("lt_echo", None)


def test_an_installed_package_adds_a_backend_through_its_entry_point(
    installed: Path, config: Path
) -> None:
    (installed / "lt_echo.py").write_text(PLUGIN)
    assert "lt_echo" not in sys.modules
    config.write_text(CONFIG + '[models.gamma]\nsource = { kind = "echo", phrase = "hi" }\n')
    source = load_config(config).config.models["gamma"].source  # loaded on the first miss
    assert type(source).__name__ == "EchoSource" and source.label() == "echo hi"
    assert "echo" in backends.names() and "echo" in backends.kinds()
    result = run("models", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert re.search(r"^gamma\s+echo hi\s.*unchecked$", result.output, re.MULTILINE)


def test_a_broken_plugin_is_one_line_naming_it(installed: Path, config: Path) -> None:
    (installed / "lt_echo.py").write_text("import no_such_module_here\n")
    config.write_text(CONFIG.replace('kind = "path"', 'kind = "echo"'))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert "backend plugin 'echo' (lt_echo) failed to load (ModuleNotFoundError" in message
    assert "uninstall the package" in message and "\n" not in message


def test_a_plugin_that_takes_a_built_in_kind_is_refused(installed: Path, config: Path) -> None:
    (installed / "lt_echo.py").write_text(PLUGIN.replace('sources={"echo"', 'sources={"server"'))
    config.write_text(CONFIG.replace('kind = "path"', 'kind = "echo"'))
    with pytest.raises(ConfigError, match="backend plugin 'echo': source kind 'server' is"):
        load_config(config)


CHILD = """
import sys
from click.testing import CliRunner
import tests.fakebackend  # the `scripted` kind, as a plugin registers it
from localtable.cli import cli

result = CliRunner().invoke(cli, ["models", "--config", sys.argv[1]], catch_exceptions=False)
assert result.exit_code == 0, result.output
engines = ("llama_cpp", "localtable.backends.llamacpp", "localtable.backends.server")
print("loaded:", sorted(m for m in sys.modules if m.startswith(engines)))
"""


def test_models_imports_no_engine_for_file_and_plugin_kinds(
    config: Path, session_cache: Path
) -> None:
    """Listing file models asks models/status.py (registered by the llama.cpp backend),
    and the scripted ones their own backend: llama.cpp and the server backend stay out."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(config)],
        cwd=REPO, env=subprocess_env(session_cache), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout, proc.stdout


WORKER = """
import sys
from localtable.batch.workers import WorkerSpec

spec = WorkerSpec.model_validate_json(sys.stdin.read())
print(type(spec.loaded.config.models["alpha"].source).__name__)
"""


def test_a_worker_reads_a_plugin_kind_of_its_coordinators_config(
    config: Path, session_cache: Path
) -> None:
    """A Ray actor gets its spec as JSON, in a process where nothing registered the
    test backend: the spec registers the coordinator's backends before its config
    is validated, and importing the source's module then registers nothing new."""
    from localtable.batch.workers import WorkerSpec
    from localtable.session.session import BackendRegistry

    spec = WorkerSpec(loaded=load_config(config), panel="duo", registry=BackendRegistry.here())
    proc = subprocess.run(
        [sys.executable, "-c", WORKER], input=spec.model_dump_json(), cwd=REPO,
        env=subprocess_env(session_cache), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ScriptedSource"
