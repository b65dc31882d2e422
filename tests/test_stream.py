"""Streaming on the terminal: each turn's text shows as it is generated, and the
report on stdout and the record are byte for byte those of a run without it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from localtable.cli import shown
from localtable.record import read_record
from tests.conftest import REPO, subprocess_env
from tests.realmodels import fast_config

QUESTION = "Should cities ban cars from their centres?"


def debate(config: Path, runs: Path, env: dict[str, str], terminal: bool) -> tuple[str, str]:
    """(stdout, stderr) of `localtable debate`; with terminal, stderr is a pty."""
    args = [sys.executable, "-m", "localtable", "debate", QUESTION, "--config", str(config)]
    args += ["--rounds", "2", "--seed", "11", "--runs-dir", str(runs)]
    if not terminal:
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=1800)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    main, child = pty.openpty()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=child)
    os.close(child)
    seen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child's end closed: EIO
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = proc.communicate(timeout=1800)
    reader.join(timeout=60)
    os.close(main)
    assert proc.returncode == 0, b"".join(seen).decode(errors="replace")
    return out.decode(), b"".join(seen).decode().replace("\r\n", "\n")


@pytest.mark.slow
def test_a_terminal_sees_each_turn_as_it_is_written_and_nothing_else_changes(
    tmp_path: Path, isolated_cache: Path
) -> None:
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path, max_tokens=64)
    plain_out, plain_err = debate(config, tmp_path / "plain", env, terminal=False)
    live_out, live_err = debate(config, tmp_path / "live", env, terminal=True)
    assert live_out == plain_out  # the report on stdout, byte for byte
    (plain,) = (tmp_path / "plain").iterdir()
    (live,) = (tmp_path / "live").iterdir()
    a, b = read_record(plain), read_record(live)
    assert a.transcript_sha256 == b.transcript_sha256 and a.transcript_sha256
    assert [t.generation.raw_output for t in a.turns if t.generation] == [
        t.generation.raw_output for t in b.turns if t.generation
    ]
    # a pipe gets today's progress lines; the terminal each turn's text under its header
    assert "── " not in plain_err and "[1/7] round 1/2 · " in plain_err
    for turn in b.turns:
        header = f"round {turn.round}/2 · {turn.panelist} ──"
        assert header in live_err
        if turn.generation is not None and turn.continuation is None:
            after = live_err[live_err.index(header) :]
            assert after.split("\n", 1)[1].startswith(shown(turn.generation.raw_output))
    assert "summary · " in live_err


@pytest.mark.slow
def test_llama_server_streams_the_same_generation(tmp_path: Path) -> None:
    """A real llama-server's /completion, streamed and not: the same text and token ids
    (with a grammar, and with a stop word), the pieces in order."""
    from localtable.backends.server.client import ServerClient
    from tests.llamaserver import llama_server, llama_server_binary
    from tests.realmodels import smollm2_path

    llama_server_binary()  # skip (or fail under CI) before anything else
    with llama_server(smollm2_path(), tmp_path / "llama-server.log") as server:
        client = ServerClient(server.url)
        prompt = client.tokenize(
            "<|im_start|>user\nShould cities ban cars?<|im_end|>\n<|im_start|>assistant\n",
            special=True,
        )
        for stop in ([], ["car"]):
            body = {**completion_body(prompt), "stop": stop}
            pieces: list[str] = []
            streamed = client.completion(body, pieces.append)
            plain = client.completion(body)
            assert (streamed.content, streamed.tokens) == (plain.content, plain.tokens)
            assert streamed.stop_type == plain.stop_type and "".join(pieces) == plain.content


def completion_body(prompt: list[int]) -> dict[str, object]:
    from localtable.backends.server.backend import fixed_request

    return {
        **fixed_request(), "prompt": prompt, "n_predict": 24, "seed": 9, "temperature": 0.7,
        "top_k": 40, "top_p": 0.9, "min_p": 0.05, "typical_p": 1.0, "repeat_penalty": 1.1,
        "grammar": 'root ::= "Answer: " [a-z ,]+', "stop": [],
    }  # fmt: skip


def test_a_streamed_completion_is_the_unstreamed_one_and_a_cut_stream_is_down() -> None:
    from localtable.backends.server.client import ServerClient, ServerDown
    from tests.fakeserver import FakeLlamaServer

    with FakeLlamaServer() as server:
        client = ServerClient(server.url)
        body = completion_body([3, 101, 102])
        pieces: list[str] = []
        streamed = client.completion(body, pieces.append)
        plain = client.completion(body)
        assert streamed == plain and len(pieces) > 2
        assert "".join(pieces) == plain.content
        assert server.completions[0]["stream"] is True and server.completions[1]["stream"] is False
        server.fail = ["stream-cut"]
        with pytest.raises(ServerDown, match="stream ended before the generation did"):
            client.completion(body, pieces.append)
