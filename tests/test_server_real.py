"""The server backend on a real llama-server: the binary `make llama-server` builds from
the llama-cpp-python 0.3.36 source package (the same llama.cpp commit and CPU flags as
the in-process engine), started on 127.0.0.1 with the tiny panel's SmolLM2 GGUF.

What these establish (figures in docs/benchmarks.md):
- the server tokenizes the prompts exactly as in-process (the same prompt sha256), and
  without a grammar and repeat penalty it samples exactly the in-process tokens for the
  same seed: the model's numbers agree;
- with a grammar or a repeat penalty the tokens differ, for a reason measured here:
  llama-server checks the grammar after sampling (it resamples only a rejected token)
  and puts the prompt's last 64 tokens in the penalty window, where llama-cpp-python
  applies the grammar first and penalizes only generated tokens;
- a debate on the server replays identically against it;
- a mixed panel (in-process and server) whose server is killed mid-debate, restarted
  and resumed ends equal to an uninterrupted run;
- refused, 401 and timeout on the real server each give one line naming the URL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from localtable.backends.base import ChatMessage
from localtable.backends.chatformat import format_prompt
from localtable.backends.llamacpp.backend import N_BATCH, N_UBATCH
from localtable.backends.llamacpp.engine import Engine
from localtable.backends.llamacpp.messages import GenerateRequest, LoadRequest
from localtable.backends.server.backend import fixed_request, server_model_info
from localtable.backends.server.client import ServerClient
from localtable.backends.server.launch import declared_flags
from localtable.machine import available_cores
from localtable.record import RunRecord, read_record
from localtable.templates import TemplateSet
from tests.conftest import REPO, subprocess_env
from tests.fakes import sampling
from tests.llamaserver import LlamaServer, free_port, llama_server, llama_server_binary
from tests.realmodels import SMOLLM2_SHA256, localtable, smollm2_path, tiny_models_block

pytestmark = pytest.mark.slow
QUESTION = "Should every city have free public transport?"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return subprocess_env(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    llama_server_binary()  # skip (or fail under CI) before anything else
    log = tmp_path_factory.mktemp("server") / "llama-server.log"
    with llama_server(smollm2_path(), log) as running:
        yield running


def config(
    tmp: Path,
    url: str,
    panel: list[tuple[str, str]],
    *,
    rounds: int = 1,
    max_tokens: int = 48,
    source_extra: str = "",
) -> Path:
    """The tiny panel's models in-process, SmolLM2 on the server as `smollm2-server`, a
    panel of (name, model); each panelist with the tiny panel's temperatures."""
    body = [
        "[debate]",
        'panel = "p"',
        f"rounds = {rounds}",
        "seed = 42",
        "",
        tiny_models_block(),
        "[models.smollm2-server]",
        f'source = {{ kind = "server", url = "{url}", model = "SmolLM2-135M-Instruct.Q4_1.gguf",'
        f' flags = "{declared_flags()}"{source_extra} }}',
        f'sha256 = "{SMOLLM2_SHA256}"',
        'chat = "template"',
        "",
        "[panels.p]",
    ]
    temps = [0.6, 0.7, 0.9]
    for (name, model), temp in zip(panel, temps, strict=False):
        body += [
            "[[panels.p.panelists]]",
            f'name = "{name}"',
            f'model = "{model}"',
            f"sampling = {{ temperature = {temp}, max_tokens = {max_tokens} }}",
            "",
        ]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "models.toml"
    path.write_text("\n".join(body))
    return path


def debate(
    cfg: Path, runs: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    result = localtable("debate", QUESTION, "--config", str(cfg), "--runs-dir", str(runs), "-q",
                        env=env)  # fmt: skip
    found = [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []
    return result, found[0] if found else runs


def outputs(record: RunRecord) -> list[tuple[object, ...]]:
    turns: list[tuple[object, ...]] = [
        (t.round, t.panelist, t.status, t.generation.token_ids if t.generation else None)
        for t in record.turns
    ]
    s = record.summary
    turns.append(
        ("summary", s.status if s else None, s.generation.token_ids if s and s.generation else None)
    )
    return turns


# -- in-process and server: what agrees, what does not, and why ---------------------


def test_the_server_computes_like_in_process_and_samples_grammars_its_own_way(
    server: LlamaServer,
) -> None:
    """The same prompt tokens and seed in-process and on the server, four ways: without a
    grammar and with repeat_penalty 1 the tokens are the same (the model's numbers agree);
    a grammar or a repeat penalty makes them differ, for the sampler reasons above."""
    client = ServerClient(server.url)
    props = client.props()
    engine = Engine()
    try:
        info = engine.load(LoadRequest(model_key="m", path=smollm2_path(), n_ctx=4096,
                                       n_batch=N_BATCH, n_ubatch=N_UBATCH,
                                       threads=available_cores()))  # fmt: skip
        assert props.chat_template == info.chat_template
        bos = server_model_info(client, props, props.chat_template, "smollm2").bos_id
        grammar = TemplateSet().render("turn.gbnf.j2", fields=["reasoning", "answer"], peers=[],
                                       letters=[], allow_new=False, own_position="",
                                       reasoning_max=200, answer_max=128, multiline=False,
                                       kind="open", options=[])  # fmt: skip
        messages = [
            ChatMessage(role="system", content="You are a careful analyst. <|im_end|>"),
            ChatMessage(role="user", content=QUESTION),
        ]
        prompt = format_prompt(
            "template",
            info,
            messages,
            date(2026, 12, 1),
            TemplateSet(),
            source="the server's chat template",
        )
        ids = [bos] if prompt.add_bos and bos is not None else []
        for piece in prompt.pieces:
            ids += client.tokenize(piece.text, special=piece.special)
        same: dict[tuple[bool, float], bool] = {}
        for with_grammar, penalty in ((False, 1.0), (False, 1.1), (True, 1.0), (True, 1.1)):
            s = sampling(temperature=0.9, max_tokens=64, repeat_penalty=penalty)
            local = engine.generate(GenerateRequest(
                model_key="m", pieces=prompt.pieces, add_bos=prompt.add_bos,
                grammar=grammar if with_grammar else None, seed=1234, sampling=s, stop=[],
            ))  # fmt: skip
            body = {
                **fixed_request(), "prompt": ids, "n_predict": s.max_tokens, "seed": 1234,
                "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                "min_p": s.min_p, "typical_p": s.typical_p, "repeat_penalty": penalty,
                "frequency_penalty": 0.0, "presence_penalty": 0.0,
                "grammar": grammar if with_grammar else "", "stop": [],
            }  # fmt: skip
            remote = client.completion(body)
            same[(with_grammar, penalty)] = local.token_ids == remote.tokens
            if same[(with_grammar, penalty)]:
                assert local.text == remote.content
        assert same[(False, 1.0)], "no grammar, no penalty: the server must sample the same tokens"
        # the measured reasons the two backends' transcripts differ (docs/benchmarks.md):
        # the penalty window (the prompt's last 64 tokens on the server), and the grammar
        # (checked after sampling on the server, before top_k in-process)
        assert not same[(False, 1.1)] and not same[(True, 1.0)] and not same[(True, 1.1)]
    finally:
        engine.close()


def test_a_debate_on_the_server_has_in_process_prompts_and_replays_identically(
    server: LlamaServer, env: dict[str, str], tmp_path: Path
) -> None:
    panel_in = [("SmolLM2", "smollm2-135m"), ("SmolLM2 Skeptic", "smollm2-135m")]
    panel_srv = [("SmolLM2", "smollm2-server"), ("SmolLM2 Skeptic", "smollm2-server")]
    result, in_dir = debate(config(tmp_path / "a", server.url, panel_in), tmp_path / "a" / "runs",
                            env)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    srv_cfg = config(tmp_path / "b", server.url, panel_srv)
    result, srv_dir = debate(srv_cfg, tmp_path / "b" / "runs", env)
    assert result.returncode in (0, 1), result.stderr
    local, remote = read_record(in_dir), read_record(srv_dir)
    assert remote.status in ("complete", "failed") and remote.transcript_sha256
    (model,) = remote.models
    assert model.backend == "server" and model.sha256 == SMOLLM2_SHA256
    assert model.settings["build_info"] == "b1-0c1e570"
    assert model.settings["declared_flags"] == declared_flags()
    # round 1 reads nothing else: the same prompts, token for token
    for a, b in zip(local.turns, remote.turns, strict=True):
        assert a.generation and b.generation and b.generation.token_ids
        assert a.generation.prompt_sha256 == b.generation.prompt_sha256
    replay = localtable("replay", str(srv_dir), "--runs-dir", str(tmp_path / "b" / "runs"), "-q",
                        "--config", str(srv_cfg), env=env)  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.strip() == f"identical {remote.transcript_sha256}"


# -- a mixed panel, a server killed mid-debate ------------------------------------------


def test_a_mixed_panel_resumed_after_its_server_was_killed_equals_an_uninterrupted_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    llama_server_binary()
    panel = [("Gemma 3 270M", "gemma3-270m"), ("SmolLM2", "smollm2-server"),
             ("SmolLM2 Skeptic", "smollm2-server")]  # fmt: skip
    uninterrupted = tmp_path / "one-go"
    with llama_server(smollm2_path(), tmp_path / "one-go.log") as running:
        cfg = config(tmp_path, running.url, panel, rounds=2)
        result, one_go = debate(cfg, uninterrupted, env)
        assert result.returncode in (0, 1), result.stderr
    reference = read_record(one_go)
    assert reference.transcript_sha256
    assert [m.backend for m in reference.models] == ["llamacpp", "server"]
    assert [(t.round, t.panelist) for t in reference.turns] == [
        (r, name) for r in (1, 2) for name, _ in panel
    ]

    # the same debate; the server dies while the first server turn generates
    server = LlamaServer(smollm2_path(), tmp_path / "killed.log").start()
    try:
        cfg = config(tmp_path, server.url, panel, rounds=2)
        runs = tmp_path / "killed"
        proc = subprocess.Popen(
            [sys.executable, "-m", "localtable", "debate", QUESTION, "--config", str(cfg),
             "--runs-dir", str(runs), "-q"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and proc.poll() is None:  # Gemma's turn is saved
            records = list(runs.glob("*/record.json"))
            try:
                if records and json.loads(records[0].read_text())["turns"]:
                    break
            except ValueError:
                pass
            time.sleep(0.05)
        server.kill()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 1
        (line,) = stderr.strip().splitlines()
        assert line.startswith("Error: ") and server.url in line and "localtable resume" in line
        (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
        stopped = read_record(run_dir)
        assert stopped.status == "failed" and server.url in (stopped.error or "")
        assert stopped.turns[0].status == "ok" and stopped.turns[0].panelist == "Gemma 3 270M"
        assert stopped.turns[-1].status == "interrupted" and server.url in (
            stopped.turns[-1].error or ""
        )
        # resume refuses while the server is down, then continues once it is back
        down = localtable("resume", str(run_dir), "--runs-dir", str(runs), "-q", "--config",
                          str(cfg), env=env)  # fmt: skip
        assert down.returncode == 1 and "connection refused" in down.stderr
        server.start()
        resumed = localtable("resume", str(run_dir), "--runs-dir", str(runs), "-q", "--config",
                             str(cfg), env=env)  # fmt: skip
        assert resumed.returncode in (0, 1), resumed.stderr
    finally:
        server.kill()
    record = read_record(run_dir)
    assert record.status == reference.status
    assert record.transcript_sha256 == reference.transcript_sha256
    assert outputs(record) == outputs(reference)


# -- failures on the real server -------------------------------------------------------


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


def test_refused_unauthorized_and_timed_out_servers_each_give_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    llama_server_binary()
    panel = [("SmolLM2", "smollm2-server"), ("SmolLM2 Skeptic", "smollm2-server")]
    nobody = f"http://127.0.0.1:{free_port()}"
    line = one_line(debate(config(tmp_path / "r", nobody, panel), tmp_path / "r" / "runs", env)[0])
    assert nobody in line and "connection refused" in line
    with llama_server(smollm2_path(), tmp_path / "key.log", extra=("--api-key", "k-123")) as keyed:
        cfg = config(tmp_path / "k", keyed.url, panel, source_extra=', api_key_env = "LT_KEY"')
        wrong = {**env, "LT_KEY": "wrong"}
        line = one_line(debate(cfg, tmp_path / "k" / "runs", wrong)[0])
        assert keyed.url in line and "HTTP 401" in line
        result, run_dir = debate(cfg, tmp_path / "k" / "ok", {**env, "LT_KEY": "k-123"})
        assert result.returncode in (0, 1), result.stderr
        assert "k-123" not in (run_dir / "record.json").read_text()
    with llama_server(smollm2_path(), tmp_path / "slow.log") as slow:
        cfg = config(
            tmp_path / "t", slow.url, panel, max_tokens=160, source_extra=", timeout = 0.2"
        )
        result, run_dir = debate(cfg, tmp_path / "t" / "runs", env)
        line = one_line(result)
        assert slow.url in line and "no answer within 0.2 s" in line
        assert read_record(run_dir).turns[0].status == "interrupted"
