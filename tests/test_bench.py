"""The benchmark's arithmetic: which prompt tokens are new, and the side-by-side table."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from localtable.backends.llamacpp.bench import (
    BenchReport,
    ProcessUsage,
    RecordingEngine,
    Side,
    bare_calls,
    new_tokens,
    render,
    run_server,
    served_config,
)
from localtable.backends.llamacpp.bench import Call as BenchCall
from localtable.backends.llamacpp.messages import GenerateRequest, GenerateResult
from localtable.backends.promptpiece import PromptPiece
from localtable.backends.server.launch import declared_flags
from localtable.backends.server.source import ServerSource
from localtable.config import load_config
from localtable.debate.protocol import Debate
from localtable.record import Consensus, Generation, RunRecord, SummaryRecord, TurnRecord
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, Reply, make_record, sampling
from tests.fakeserver import FakeLlamaServer


def gen(prompt: str, tokens: int) -> Generation:
    return Generation(seed=1, sampling=sampling(), prompt=prompt, prompt_tokens=tokens,
                      prompt_sha256="0" * 64)  # fmt: skip


def turn(round_no: int, panelist: str, prompt: str, tokens: int) -> TurnRecord:
    return TurnRecord(round=round_no, panelist=panelist, status="ok",
                      generation=gen(prompt, tokens))  # fmt: skip


def test_new_tokens_counts_only_what_a_panelists_previous_prompt_lacked() -> None:
    record = make_record(["A", "B"], rounds=2)
    record.turns = [
        turn(1, "A", "sys q", 100),
        turn(1, "B", "sys q", 100),
        turn(2, "A", "sys q A1 B1", 160),  # extends its round-1 prompt: 60 new
        turn(2, "B", "other q B1", 150),  # does not: all 150 count
    ]
    record.summary = SummaryRecord(
        status="ok", summarizer="A", generation=gen("summary", 90),
        consensus=Consensus(kind="none", agreeing=1, total=2, line="1 of 2 agreed"),
    )  # fmt: skip
    assert new_tokens(record) == 100 + 100 + 60 + 150 + 90


def side(name: str, wall: float, texts: list[str], evaluated: int) -> Side:
    return Side(
        name=name, wall_seconds=wall, usage=ProcessUsage(peak_rss_bytes=900_000_000,
        cpu_seconds=2 * wall), texts=texts, prompt_tokens=1000, prompt_eval_tokens=evaluated,
        completion_tokens=200, generate_seconds=wall - 1, prompt_eval_seconds=wall / 4,
        decode_seconds=wall / 2, kv_caches=2, transcript_sha256="h" if name != "bare" else None,
    )  # fmt: skip


def report(bare_texts: list[str]) -> BenchReport:
    sides = [
        side("on", 50, ["x"], 400),
        side("off", 60, ["x"], 1000),
        side("bare", 80, bare_texts, 1000),
    ]
    return BenchReport(
        created_at=datetime(2026, 1, 1, tzinfo=UTC), machine="cpu", cores=2,
        llama_system_info="AVX2 = 1", rounds=3, seed=42, panel="tiny", sides=sides,
        new_tokens=400, memory_target_bytes={"on": 950_000_000, "off": 900_000_000,
        "bare": 900_000_000}, mismatches=[] if bare_texts == ["x"] else ["call 1"],
        prompt_mismatches=0,
    )  # fmt: skip


def test_the_table_gives_ratios_to_bare_and_flags_differing_texts() -> None:
    text = render(report(["x"]))
    ratios = next(line for line in text.splitlines() if line.strip().startswith("ratio to bare"))
    assert ratios.split()[3:] == ["0.62x", "0.75x", "1.00x"]
    evaluated = next(line for line in text.splitlines() if "evaluated / new" in line)
    assert "1.00x (400 new)" in evaluated and "2.50x" in evaluated
    assert "reuse on/off transcripts identical: yes" in text
    assert "bare texts identical to localtable's: yes" in text
    assert "not like for like" in render(report(["y"]))


def test_repetitions_give_medians_of_per_repetition_ratios_with_their_range() -> None:
    """A slow repetition (the machine got busy) moves every side of it, not the ratio."""
    rep = report(["x"])
    rep.repeats = [
        [side("on", on, ["x"], 400), side("off", off, ["x"], 1000), side("bare", bare, ["x"], 1000)]
        for on, off, bare in ((50, 60, 80), (150, 180, 240), (52, 61, 78))
    ]
    text = render(rep)
    wall = next(line for line in text.splitlines() if line.startswith("wall time"))
    assert "52.0 s (50.0-150.0)" in wall and "80.0 s (78.0-240.0)" in wall
    ratios = next(line for line in text.splitlines() if line.strip().startswith("ratio to bare"))
    # on/bare per repetition: 0.625, 0.625, 0.667 -> median 0.62 (0.62-0.67)
    assert "0.62x (0.62-0.67x)" not in ratios and "0.62x (0.62-0.67)" in ratios
    assert "repetitions: 3, sides interleaved" in text


def with_server(rep: BenchReport, walls: list[float], transcript: str = "other") -> BenchReport:
    """The report with a llama-server side in each repetition (wall times `walls`)."""
    server = side("localtable -> llama-server", walls[0], ["z"], 1000).model_copy(
        update={
            "transcript_sha256": transcript, "completion_tokens": 230, "kv_caches": 2,
            "new_tokens": 500, "sampling_in_decode": True,
        }
    )  # fmt: skip
    runs = rep.repeats or [rep.sides]
    rep.repeats = [
        [*r, server.model_copy(update={"wall_seconds": w})]
        for r, w in zip(runs, walls, strict=True)
    ]
    rep.sides = rep.repeats[0]
    rep.memory_target_bytes[server.name] = 900_000_000
    rep.server_start_seconds = 2.5
    return rep


def test_a_server_column_gives_its_wall_time_over_in_process_and_what_differs() -> None:
    rep = report(["x"])
    rep.sides[0] = rep.sides[0].model_copy(update={"load_seconds": 0.8})
    text = render(with_server(rep, [55]))
    assert text.splitlines()[0].rstrip().endswith("localtable -> llama-server")
    wall = next(line for line in text.splitlines() if line.startswith("wall time"))
    assert wall.split()[-2:] == ["55.0", "s"]
    ratios = next(line for line in text.splitlines() if line.strip().startswith("ratio to bare"))
    assert ratios.split()[-1] == "0.69x"  # 55 / 80: the server side has a bare ratio too
    assert (
        "llama-server / in-process wall time: 1.10x against reuse on, 0.92x against reuse off "
        "(target: within 1.15x)" in text
    )
    assert "servers started in 2.5 s, before the timed debates; in-process, starting " in text
    assert "the models is 0.8 s of the wall time" in text
    assert "llama-server transcript identical to in-process: no (expected" in text
    assert "230 tokens generated, 200 in-process" in text
    assert "requests sent again" not in text
    # its own debate's new tokens (its prompts differ); its decode timer holds sampling
    evaluated = next(line for line in text.splitlines() if "evaluated / new" in line)
    assert evaluated.split()[-3:] == ["2.00x", "(500", "new)"]
    sampling_row = next(line for line in text.splitlines() if "sampling + grammar" in line)
    assert sampling_row.rstrip().endswith("in decode")
    same = render(with_server(report(["x"]), [50], transcript="h"))
    assert "llama-server transcript identical to in-process: yes" in same


def test_the_server_ratio_is_a_median_of_each_repetitions_ratio() -> None:
    rep = report(["x"])
    rep.repeats = [
        [side("on", on, ["x"], 400), side("off", off, ["x"], 1000), side("bare", 80, ["x"], 1000)]
        for on, off in ((50, 60), (100, 120), (50, 60))
    ]
    text = render(with_server(rep, [55, 130, 60]))
    # server/on per repetition: 1.10, 1.30, 1.20 -> 1.20 (1.10-1.30)
    assert "1.20x (1.10-1.30) against reuse on" in text


def test_without_a_server_the_report_says_why() -> None:
    rep = report(["x"])
    rep.server_note = "not built (make llama-server)"
    text = render(rep)
    assert "no llama-server column: not built" in text
    assert "llama-server / in-process" not in text
    assert len(text.splitlines()[0].split()) == 3  # on, off, bare


def test_served_config_points_each_served_model_at_its_server_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "models.toml"
    cfg.write_text(
        f"""
[debate]
panel = "p"
question = "Why?"

[models.a]
source = {{ kind = "path", path = "a.gguf" }}
sha256 = "{"a" * 64}"
n_ctx = 2048
chat = "completion"
threads = 1

[models.b]
source = {{ kind = "path", path = "b.gguf" }}

[panels.p]
panelists = [
  {{ name = "A", model = "a", sampling = {{ temperature = 0.3 }} }},
  {{ name = "B", model = "b" }},
]
"""
    )
    loaded = load_config(cfg)
    served = served_config(loaded, {"a": ("http://127.0.0.1:8123", tmp_path / "a.gguf")})
    a, b = served.config.models["a"], served.config.models["b"]
    assert isinstance(a.source, ServerSource)
    assert a.source.url == "http://127.0.0.1:8123" and a.source.model == str(tmp_path / "a.gguf")
    assert a.source.flags == declared_flags()
    assert (a.sha256, a.n_ctx, a.chat, a.threads) == ("a" * 64, 2048, "completion", 1)
    assert "n_ctx" in a.model_fields_set  # so the server's context is checked against it
    assert b == loaded.config.models["b"] and "n_ctx" not in b.model_fields_set
    assert served.config.panels == loaded.config.panels and served.path == loaded.path
    assert served.config.debate == loaded.config.debate


def test_the_server_side_measures_every_generation_of_the_debate(tmp_path: Path) -> None:
    """Through the stand-in llama-server: each turn, the labels and the summary give a
    TurnResult."""
    with FakeLlamaServer() as server:
        cfg = tmp_path / "models.toml"
        cfg.write_text(
            f"""
[debate]
panel = "p"
question = "Should cities ban cars?"

[models.big]
source = {{ kind = "server", url = "{server.url}" }}
chat = "template"

[panels.p]
panelists = [{{ name = "Ada", model = "big" }}, {{ name = "Bob", model = "big" }}]
"""
        )
        served = load_config(cfg)
        side_, record = run_server(served, "p", 2, 7, tmp_path / "runs", [os.getpid()])
    assert record.status == "complete"
    # in the order they ran: round 1, its labels (an open question), round 2, the summary
    (labels,) = record.labelings  # round 2 claimed no new position
    turns = [t.generation for t in record.turns]
    generations = [*turns[:2], labels.generation, *turns[2:], record.summary.generation]  # type: ignore[union-attr]
    assert server.calls["/completion"] == len(generations) == 6
    assert side_.texts == [g.raw_output for g in generations if g is not None]
    assert side_.completion_tokens == sum(g.completion_tokens for g in generations if g)
    assert side_.prompt_tokens == sum(g.prompt_tokens for g in generations if g)
    assert side_.transcript_sha256 == record.transcript_sha256 and side_.kv_caches == 1
    assert side_.name == "localtable -> llama-server" and side_.retries == 0
    assert side_.new_tokens == new_tokens(record) and side_.rejected_summaries == 0
    assert side_.usage.cpu_seconds >= 0 and side_.usage.peak_rss_bytes > 0


def recorded_generations(record: RunRecord) -> list[Generation]:
    """Every generation the record holds: turns and their continuations, the labels of
    each round (rejected attempts too), the summary (rejected attempts too)."""
    out = [g for t in record.turns for g in (t.generation, t.continuation) if g is not None]
    for x in record.labelings:
        out += [*x.rejected_generations, *([x.generation] if x.generation else [])]
    s = record.summary
    if s is not None:
        out += [*s.rejected_generations, *([s.generation] if s.generation else [])]
    return out


def test_bare_calls_replay_every_generation_of_an_open_debate() -> None:
    """An open debate also generates labels after round 1 (here one rejected attempt,
    then a kept one) and continues a turn that max_tokens cut off: the bare side must
    replay those calls too, each matched to its generation in the record."""
    r1 = "Reasoning: r.\nAnswer: {a}"
    speaker = FakeSpeaker(
        {
            "A": [Reply("Reasoning: long and", finish_reason="length"), "Answer: Yes, it helps.",
                  "Position A: ...\nA: A\nB: A", "Position A: Yes\nA: A\nB: A",
                  "Summary: s\nCounterpoint: c\nAnswer: Yes, they agreed."],
            "B": [r1.format(a="Yes! It helps.")],
        }
    )  # fmt: skip
    record = make_record(["A", "B"], rounds=1)
    record = Debate(record, speaker, builtin(), lambda r: None, lambda e: None).run()
    generations = recorded_generations(record)
    assert len(generations) == len(speaker.calls) == 6
    engine = RecordingEngine()
    for g in generations:  # what the engine was asked, as the bench's run recorded it
        req = GenerateRequest(
            model_key="m",
            pieces=[PromptPiece(text=g.prompt, special=False)],
            grammar="root ::= x",
            seed=g.seed,
            sampling=g.sampling,
        )
        res = GenerateResult(text=g.raw_output, finish_reason=g.finish_reason or "stop",
                             prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens,
                             prompt_eval_tokens=g.prompt_tokens, prompt_sha256=g.prompt_sha256,
                             seconds=0.0)  # fmt: skip
        engine.calls.append(BenchCall(request=req, result=res))
    calls = bare_calls(record, engine)
    assert [c.seed for c in calls] == [g.seed for g in generations]
    # and their prompts are new tokens too: the labels' prompt once (as the summary's)
    labels = record.labelings[0].generation
    assert labels is not None
    base = new_tokens(record.model_copy(update={"labelings": []}))
    assert new_tokens(record) == base + labels.prompt_tokens
    # ... and a continuation's prompt is its turn's with the kept part of the reply after it
    turn = record.turns[0]
    assert turn.generation and turn.continuation
    cont = turn.continuation.model_copy(
        update={"prompt": turn.generation.prompt + turn.continuation.prefill,
                "prompt_tokens": turn.generation.prompt_tokens + 5}
    )  # fmt: skip
    record.turns[0] = turn.model_copy(update={"continuation": cont})
    assert new_tokens(record) == base + labels.prompt_tokens + 5


def test_an_openai_column_gives_its_wall_time_over_the_native_server_column() -> None:
    from localtable.backends.llamacpp.bench import OPENAI_LABEL as LABEL

    rep = report(["x"])
    rep.repeats = [
        [side("on", 50, ["x"], 400), side("off", 60, ["x"], 1000), side("bare", 80, ["x"], 1000)]
        for _ in range(2)
    ]
    rep = with_server(rep, [50, 60])
    v1 = side(LABEL, 55, ["j"], 1000).model_copy(update={"completion_tokens": 250})
    rep.repeats = [[*r, v1.model_copy(update={"wall_seconds": w})] for r, w in
                   zip(rep.repeats, [55, 63], strict=True)]  # fmt: skip
    rep.sides = rep.repeats[0]
    rep.memory_target_bytes[LABEL] = 900_000_000
    text = render(rep)
    assert text.splitlines()[0].rstrip().endswith(LABEL)
    # /v1 over native per repetition: 1.10, 1.05: their median and range
    line = next(x for x in text.splitlines() if x.startswith("llama-server /v1"))
    assert line.startswith("llama-server /v1 (OpenAI-compatible) / native llama-server wall")
    assert line.endswith("x (1.05-1.10) (target: within 1.15x)")
    assert "/v1 generated 250 tokens, native 230" in text


def test_the_openai_side_measures_every_generation_on_the_servers_v1(tmp_path: Path) -> None:
    """Through the stand-in's llama-server /v1: each turn, the labels and the summary."""
    from localtable.backends.llamacpp.bench import OPENAI_LABEL as LABEL
    from localtable.backends.llamacpp.bench import RecordingOpenAIBackend, openai_config
    from localtable.backends.openai.source import OpenAISource
    from tests.fakeopenai import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        cfg = tmp_path / "models.toml"
        cfg.write_text(
            """
[debate]
panel = "p"
question = "Should cities ban cars?"

[models.big]
source = { kind = "path", path = "big.gguf" }
chat = "template"

[panels.p]
panelists = [{ name = "Ada", model = "big" }, { name = "Bob", model = "big" }]
"""
        )
        served = openai_config(load_config(cfg), {"big": server.url})
        source = served.config.models["big"].source
        assert isinstance(source, OpenAISource)
        assert (source.url, source.model) == (f"{server.url}/v1", "fake-7b")
        side_, record = run_server(served, "p", 2, 7, tmp_path / "runs", [os.getpid()],
                                   RecordingOpenAIBackend(), LABEL)  # fmt: skip
    assert record.status == "complete" and side_.name == LABEL
    assert len(server.chats) == len(side_.texts) == 6
    assert side_.transcript_sha256 == record.transcript_sha256 and side_.retries == 0
