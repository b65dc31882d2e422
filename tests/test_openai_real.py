"""The OpenAI-compatible backend on a real server: the /v1/chat/completions of the
llama-server `make llama-server` builds (llama-cpp-python 0.3.36's llama.cpp), started
on 127.0.0.1 with the tiny panel's SmolLM2 GGUF and the flags of launch.py.

What these establish:
- llama-server's /v1 takes the seed (the same request gives the same answer, another
  seed another one, and its echo of the parameters it used says so) and turns the
  JSON schema of `response_format` into a grammar: the answer is JSON of the turn's
  fields, in the schema's order, and none of form.py's patterns falls back to "any
  string" (llama.cpp's converter logs that for a pattern it cannot read);
- a mixed panel (in-process, llama-server's native API, its /v1) debates, every
  OpenAI-compatible turn parses, and the debate replays identically;
- a server killed mid-debate and started again: resume ends equal to an
  uninterrupted run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.backends.openai import dialects
from localtable.backends.openai.client import OpenAIClient
from localtable.backends.openai.form import form_of
from localtable.backends.server.launch import declared_flags
from localtable.config import load_config
from localtable.models.files import resolve
from localtable.record import read_record
from localtable.templates import TemplateSet
from tests.conftest import MODELS_TOML, REPO, subprocess_env
from tests.fakes import sampling
from tests.llamaserver import LlamaServer, llama_server, llama_server_binary
from tests.realmodels import (
    SMOLLM2_SHA256,
    localtable,
    smollm2_path,
    tiny_models_block,
    tiny_panel,
)

pytestmark = pytest.mark.slow
QUESTION = "Should every city have free public transport?"
ALIAS = ("--alias", "smollm2")  # the model id /v1/models reports
# a mixed panel: in-process, llama-server's native API, and its /v1
PANEL = [("Gemma 3 270M", "gemma3-270m"), ("SmolLM2 OpenAI", "smollm2-openai"),
         ("SmolLM2", "smollm2-server")]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return subprocess_env(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    llama_server_binary()
    log = tmp_path_factory.mktemp("server") / "llama-server.log"
    with llama_server(smollm2_path(), log, extra=ALIAS) as running:
        yield running


def config(tmp: Path, url: str, *, rounds: int = 2, max_tokens: int = 48) -> Path:
    body = [
        "[debate]", 'panel = "p"', f"rounds = {rounds}", "seed = 42", "",
        tiny_models_block(),
        "[models.smollm2-server]",
        f'source = {{ kind = "server", url = "{url}", model = "SmolLM2-135M-Instruct.Q4_1.gguf",'
        f' flags = "{declared_flags()}" }}',
        f'sha256 = "{SMOLLM2_SHA256}"', 'chat = "template"', "",
        "[models.smollm2-openai]",
        f'source = {{ kind = "openai", url = "{url}/v1", model = "smollm2" }}',
        f'sha256 = "{SMOLLM2_SHA256}"', "",
        "[panels.p]",
    ]  # fmt: skip
    for (name, model), temp in zip(PANEL, [0.6, 0.7, 0.9], strict=True):
        sampled = f"sampling = {{ temperature = {temp}, max_tokens = {max_tokens} }}"
        body += ["[[panels.p.panelists]]", f'name = "{name}"', f'model = "{model}"', sampled, ""]
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


def test_llama_servers_v1_takes_the_seed_and_the_schema(server: LlamaServer) -> None:
    client = OpenAIClient(server.url + "/v1")
    (entry,) = client.models()
    assert (entry.id, entry.owned_by) == ("smollm2", "llamacpp")
    grammar = TemplateSet().render(
        "turn.gbnf.j2", fields=["reasoning", "answer"], peers=[], letters=[], allow_new=False,
        own_position="", reasoning_max=200, answer_max=128, multiline=False, kind="open",
        options=[],
    )  # fmt: skip
    form = form_of(grammar)
    messages = [
        {"role": "system", "content": "You are a careful analyst."},
        {"role": "user", "content": QUESTION + " Reason first, then answer."},
    ]

    def ask(seed: int) -> tuple[str, dict[str, object]]:
        body = dialects.request_body(
            kind="llama-server", structure="response_format", model="smollm2",
            fixed=dialects.fixed_request("llama-server", 4096), messages=messages, seed=seed,
            sampling=sampling(temperature=0.9, max_tokens=96), schema=form.json_schema(),
            continues=False,
        )  # fmt: skip
        reply = client.chat(body)
        assert reply.finish_reason in ("stop", "length")
        assert reply.applied is not None and dialects.not_applied(reply.applied, body) == []
        assert reply.system_fingerprint == client.llama_props().build_info
        return reply.content, reply.applied

    first, applied = ask(1234)
    assert applied["seed"] == 1234 and str(applied["grammar"]).strip()
    assert ask(1234)[0] == first  # the seed is applied: the same request, the same answer
    assert ask(99)[0] != first  # ... and another seed, another answer
    answer = json.loads(first)
    assert list(answer) == ["Reasoning", "Answer"]  # the schema's order: reasoning first
    assert form.text(first).startswith("Reasoning: ")
    log = server.log.read_text(errors="replace")
    assert "accepting any string" not in log  # no pattern fell back to any string


def test_a_mixed_panel_debates_replays_identically_and_resumes_after_the_server_dies(
    server: LlamaServer, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = config(tmp_path / "a", server.url)
    result, run_dir = debate(cfg, tmp_path / "a" / "runs", env)
    assert result.returncode in (0, 1), result.stderr
    reference = read_record(run_dir)
    assert reference.transcript_sha256
    assert [m.backend for m in reference.models] == ["llamacpp", "openai", "server"]
    model = reference.models[1]
    assert model.sha256 == SMOLLM2_SHA256 and model.settings["model"] == "smollm2"
    assert model.settings["server"] == "llama-server" and model.settings["deterministic"] is True
    assert model.settings["system_fingerprint"] == model.settings["server_version"]
    ours = [t for t in reference.turns if t.panelist == "SmolLM2 OpenAI"]
    assert len(ours) == 2 and all(t.status == "ok" and t.parsed for t in ours), [
        (t.status, t.error) for t in ours
    ]
    status = localtable("models", "--config", str(cfg), env=env)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith("smollm2-openai"))
    assert row.endswith("up") and "smollm2-openai: llama-server b" in status.stdout
    assert "model smollm2, n_ctx 4096" in status.stdout
    replay = localtable("replay", str(run_dir), "--runs-dir", str(tmp_path / "a" / "runs"), "-q",
                        "--config", str(cfg), env=env)  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.strip() == f"identical {reference.transcript_sha256}"

    # the same debate; the server dies while the /v1 turn generates
    killed = LlamaServer(smollm2_path(), tmp_path / "killed.log", extra=ALIAS).start()
    try:
        cfg = config(tmp_path / "b", killed.url)
        runs = tmp_path / "b" / "runs"
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
        killed.kill()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 1, stderr
        (line,) = stderr.strip().splitlines()
        assert line.startswith("Error: ") and killed.url in line and "localtable resume" in line
        (stopped_dir,) = [p for p in runs.iterdir() if p.is_dir()]
        stopped = read_record(stopped_dir)
        assert stopped.status == "failed"
        assert stopped.turns[-1].panelist == "SmolLM2 OpenAI"
        assert stopped.turns[-1].status == "interrupted"
        down = localtable("resume", str(stopped_dir), "--runs-dir", str(runs), "-q", "--config",
                          str(cfg), env=env)  # fmt: skip
        assert down.returncode == 1 and "connection refused" in down.stderr
        killed.start()
        resumed = localtable("resume", str(stopped_dir), "--runs-dir", str(runs), "-q",
                             "--config", str(cfg), env=env)  # fmt: skip
        assert resumed.returncode in (0, 1), resumed.stderr
    finally:
        killed.kill()
    record = read_record(stopped_dir)
    assert record.status == reference.status
    assert record.transcript_sha256 == reference.transcript_sha256


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    llama_server_binary()
    gemma = resolve("gemma3-270m", load_config(MODELS_TOML)).path
    log = tmp_path_factory.mktemp("gemma") / "llama-server.log"
    with llama_server(gemma, log, extra=("--alias", "gemma")) as running:
        yield running


def test_the_tiny_panel_on_v1_gets_its_labels(
    server: LlamaServer, gemma_server: LlamaServer, env: dict[str, str], tmp_path: Path
) -> None:
    # make bench's /v1 side, round 1: its labels fell back to yes/no grouping in every
    # repetition (a "No" answer placed under a position of no stance labelled "Yes, ...")
    panel = tiny_panel()
    body = ["[debate]", 'panel = "tiny"', "rounds = 1", "seed = 42", "",
            f'[models.smollm2-135m]\nsource = {{ kind = "openai", url = "{server.url}/v1", '
            'model = "smollm2" }',
            f'[models.gemma3-270m]\nsource = {{ kind = "openai", url = "{gemma_server.url}/v1", '
            'model = "gemma" }', "",
            f'[panels.tiny]\nsummarizer = "{panel["summarizer"]}"']  # fmt: skip
    for p in panel["panelists"]:
        sampled = ", ".join(f"{k} = {v}" for k, v in p["sampling"].items())
        body += ["[[panels.tiny.panelists]]", f'name = "{p["name"]}"', f'model = "{p["model"]}"',
                 f'persona = "{p["persona"]}"', f"sampling = {{ {sampled} }}", ""]  # fmt: skip
    cfg = tmp_path / "models.toml"
    cfg.write_text("\n".join(body))
    result, run_dir = debate(cfg, tmp_path / "runs", env)
    assert result.returncode in (0, 1), result.stderr
    record = read_record(run_dir)
    assert all(t.status == "ok" for t in record.turns), [(t.status, t.error) for t in record.turns]
    (labels,) = record.labelings
    assert labels.status == "ok", (labels.error, labels.rejected)
    assert labels.generation is not None and labels.generation.prompt.startswith("{")
    assert {t.panelist: t.position for t in record.turns} == labels.assigned
