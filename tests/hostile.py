"""Helpers for tests of hostile and careless input (issue #13).

Nothing here loads a model: with no_models_config, any run that gets past the
checks under test fails at once with a model-file error, so a test also shows
that its check came first, and a test run on code without the check stays cheap.
"""

from __future__ import annotations

import json
import re
import resource
import struct
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from localtable.cli import cli
from tests.conftest import REPO, subprocess_env

NO_MODELS = """\
[debate]
panel = "p"

[models.m]
source = { kind = "path", path = "missing.gguf" }

[panels.p]
[[panels.p.panelists]]
name = "A"
model = "m"
[[panels.p.panelists]]
name = "B"
model = "m"
"""
MEMORY_LIMIT = 2 << 30  # a child that reads or builds without bound dies here, not the machine
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 but newline and tab
RECORD = str(Path(__file__).parent / "data" / "record.json")


def no_models_config(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(NO_MODELS)
    return path


def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "one", "question": "2+2?", "kind": "number"}) + "\n")
    return path


def localtable(
    *args: str | bytes,
    cache: Path,
    stdin: int | None = None,
    input: bytes | None = None,
    module: str = "localtable",
    timeout: float = 300,
    memory: int = MEMORY_LIMIT,
) -> subprocess.CompletedProcess[str]:
    """The CLI (or another module) in its own process, with its memory capped."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=subprocess_env(cache),
        stdin=stdin, input=input, capture_output=True, timeout=timeout, preexec_fn=cap,
    )  # fmt: skip
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def gguf_with_template(path: Path, template: str) -> Path:
    """A GGUF file (version 3, a header and no tensors) whose chat template is `template`."""

    def text(value: str) -> bytes:
        raw = value.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    string_type = 8
    pairs = {"general.architecture": "llama", "tokenizer.chat_template": template}
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    for key, value in pairs.items():
        header += text(key) + struct.pack("<I", string_type) + text(value)
    path.write_bytes(header)
    return path


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output
