from __future__ import annotations

from pathlib import Path

import pytest

from localtable.config import load_config
from localtable.errors import ConfigError
from tests.conftest import MODELS_TOML


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


MINIMAL = """
[models.m]
source = { kind = "path", path = "m.gguf" }

[panels.default]
[[panels.default.panelists]]
name = "A"
model = "m"
[[panels.default.panelists]]
name = "B"
model = "m"
"""


def test_bundled_config_is_valid() -> None:
    loaded = load_config(MODELS_TOML)
    panel = loaded.config.panel("tiny")
    assert len(panel.panelists) == 3
    models = {p.model for p in panel.panelists}
    assert models == {"smollm2-135m", "gemma3-270m"}
    # two panelists share one model file
    assert [p.model for p in panel.panelists].count("smollm2-135m") == 2
    assert loaded.config.debate.question


def test_minimal_config(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MINIMAL))
    assert loaded.config.debate.rounds == 2
    assert loaded.config.panel("default").summarizer_spec().name == "A"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models\nx = 1", "not valid TOML"),
        (
            MINIMAL.replace('name = "B"', 'name = "B"\ntemprature = 0.3'),
            "panels.default.panelists[1].temprature: unknown key",
        ),
        (MINIMAL.replace('model = "m"\n[[', 'model = "nope"\n[['), "unknown model 'nope'"),
        (MINIMAL.replace('kind = "path"', 'kind = "ftp"'), "models.m.source"),
        (
            MINIMAL.replace('path = "m.gguf"', 'path = "m.gguf", revision = "x"'),
            "models.m.source.revision: unknown key",
        ),
        (MINIMAL + "\n[debate]\nrounds = 0\n", "debate.rounds"),
        (MINIMAL + '\n[debate]\npanel = "other"\n', "unknown panel 'other'"),
        (MINIMAL.replace('name = "B"', 'name = "A"'), "panelist names must be unique"),
        (
            MINIMAL.replace("[panels.default]", '[panels.default]\nsummarizer = "Z"'),
            "summarizer 'Z' is not a panelist",
        ),
        (
            MINIMAL.replace(
                'source = { kind = "path", path = "m.gguf" }',
                'source = { kind = "package", package = "p", file = "f" }',
            ),
            "needs sha256",
        ),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_unknown_panel(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match="unknown panel 'x'.*default"):
        loaded.config.panel("x")


SERVER = MINIMAL.replace(
    'source = { kind = "path", path = "m.gguf" }',
    'source = { kind = "server", url = "URL" }',
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gpu-box:8080", "give the server as http://host:port"),
        ("ftp://gpu-box", "give the server as http://host:port"),
        ("http://gpu-box:80x", "the port is not a number"),
        ("http://gpu-box:8080/?key=1", "without ? or #"),
        ("http://me:pw@gpu-box:8080", "must not hold credentials"),
    ],
)
def test_a_server_url_is_plain_and_never_repeated_in_the_error(
    tmp_path: Path, url: str, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, SERVER.replace("URL", url)))
    assert message in str(exc.value) and "models.m.source.url" in str(exc.value)
    assert url not in str(exc.value)


def test_a_server_source_keeps_its_url_and_names_a_key_variable(tmp_path: Path) -> None:
    text = SERVER.replace('url = "URL"', 'url = "https://gpu-box/llama/", api_key_env = "BOX_KEY"')
    source = load_config(write(tmp_path, text)).config.models["m"].source
    assert source.kind == "server" and source.url == "https://gpu-box/llama"
    assert source.api_key_env == "BOX_KEY" and source.timeout == 600.0
    bad = SERVER.replace('url = "URL"', 'url = "http://h:1", api_key_env = "my key"')
    with pytest.raises(ConfigError, match="api_key_env"):
        load_config(write(tmp_path, bad))
