"""How to start llama-server for localtable: the flags that keep its numbers fixed.

README.md prints these flags; the tests and `make bench` start servers with them.
Each one pins something llama-server would otherwise choose, and that changes
the numbers (measured or read in the vendored llama.cpp source):

- `-np 1`: one slot, so no other request shares a batch with ours.
- `-b 512 -ub 128`: the in-process engine's batch sizes (backends/llamacpp/backend.py).
- `-fa off`: flash attention changes the numbers; `auto` may turn it on.
- `--swa-full`: a full-size sliding-window cache, as llama-cpp-python's contexts
  have; without it a sliding-window model (Gemma 3) keeps a smaller cache whose
  layout differs.
- `--ctx-checkpoints 0`: with checkpoints on, llama-server cuts a prompt's last 4
  tokens into a step of their own for a sliding-window model, and steps under 8
  tokens give other logits (backends/llamacpp/kvslots.py).
- `--cache-ram 0`, `--no-cache-prompt`: no saved prompt state is restored into a
  request (requests also send cache_prompt false).
- `-fit off`: no automatic change of the context or batch to fit memory.
"""

from __future__ import annotations

from pathlib import Path

DETERMINISTIC_FLAGS = [
    "-np", "1", "-b", "512", "-ub", "128", "-fa", "off", "--swa-full",
    "--ctx-checkpoints", "0", "--cache-ram", "0", "--no-cache-prompt", "-fit", "off",
]  # fmt: skip


def server_command(
    binary: Path, model: Path, *, port: int, n_ctx: int, threads: int, host: str = "127.0.0.1"
) -> list[str]:
    """The command line of a llama-server serving one GGUF file for localtable."""
    return [
        str(binary), "-m", str(model), "--host", host, "--port", str(port), "-c", str(n_ctx),
        "-t", str(threads), "-tb", str(threads), *DETERMINISTIC_FLAGS, "--no-webui",
    ]  # fmt: skip


def declared_flags() -> str:
    """DETERMINISTIC_FLAGS as a models.toml `flags` string."""
    return " ".join(DETERMINISTIC_FLAGS)
