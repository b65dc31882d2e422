"""Debate protocols as data (issue #25): a folder of templates and a protocol.toml.

The built-in roundtable keeps every transcript and prompt of the tree before
protocols; du2023 is Du et al. 2023's arithmetic protocol, quoted; a folder of the
user's runs, is named in the record, and a changed file refuses resume and replay;
a broken folder is one line before any model loads; vote mode's samples are drawn,
recorded, hidden from peers, resumed and replayed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localtable.cli import cli
from localtable.debate.protocol import Debate
from localtable.debate.seeds import Seeds
from localtable.errors import ConfigError
from localtable.protocols import (
    BUILT_IN,
    builtin_names,
    builtin_protocol,
    builtin_protocols,
    load_protocol,
    recorded_protocol,
)
from localtable.record import (
    RunRecord,
    SeedScheme,
    read_record,
    transcript_sha256,
    write_record,
)
from localtable.templates import TemplateSet
from tests import fakebackend
from tests.fakes import FakeSpeaker, Reply, make_record

# -- roundtable: today's transcripts and prompts ------------------------------------

R1 = "Reasoning: because {a}\nAnswer: {a}"
R2 = "Reasoning: I thought again.\nInfluenced by: {i}\nDecision: {d}\nPosition: {p}\nAnswer: {a}"
R2N = "Reasoning: I checked.\nInfluenced by: {i}\nDecision: {d}\nAnswer: {a}"
SUMMARY = "Summary: They talked.\nCounterpoint: Safety risks.\nAnswer: Yes, open source wins."

# Computed on main before protocols existed (4e0ccd0), with the debates below: the
# transcript's sha256, and the sha256 of every request the speaker got (messages,
# grammar, seed, sampling, prefill, conversation). Issue #26's summary grammar (lines
# end at a sentence end, the headline opens with the largest position's yes or no)
# and the summary prompt's "starts with Yes" changed every request hash; the open
# debate's summary now answers "Yes, ..." as its all-yes panel did (main gives its
# transcript hash with that headline too). Those seeds are the "run" scheme's, which
# records up to version 4 keep; version 5's seeds depend on the question too
# ("question"), and change nothing else: the same debates, computed when it came.
# The label grammar's text (a stance-less position's label opens with neither yes nor
# no, issue #26 item 3) changed the open debates' request hashes; their transcripts,
# and every other request, are the same.
GOLDEN = {
    ("open", "run"): (
        "2af1fbe62aedacb631f131e78b1607d5a64ea7077c8a14b0e69e4b813cab7108",
        "2f3b3dbbacb1583624775269d668322a70e051def168c60e97c1ff45258d7e7e",
    ),
    ("number", "run"): (
        "072f184a9481d76a73e15cd997f036cd8bf73d3dac5ac52d1dea5bc3ed0cd2e6",
        "999924dc14dae0139aa67ddc375b9a014c4d838d9e8bc0aa9039208709b32f7d",
    ),
    ("open", "question"): (
        "3c45b71e699a9643a2883afaceb3dc9542a27b2f7311643bc96f07591509b0ff",
        "c9855391e0bdf580d8a9bc2e61b0008e370c27bb82a99053cc308835bff073e6",
    ),
    ("number", "question"): (
        "b3532a718d7551fbf0bc2278d23279f037a45770db12ce8e589c0edd1f14621b",
        "d1487af799875a34149fa11abc9b3920cef30d0bfb0e8ca8b664daf11deb2596",
    ),
}
# The same for `localtable debate` on the scripted panel below (seed 5): the
# transcript's sha256, and that of every generation's prompt, grammar and seed (the
# summary's grammar changed with issue #26; the transcript did not). Until version 5's
# seeds (which depend on the question) it was f8a6cc8c... and 0cbcac4e..., which the
# "run" scheme still gives: the seeds are all that changed. The label grammar's text
# (issue #26 item 3) changed the second hash again; the transcript did not change.
GOLDEN_CLI = (
    "e1cb3a2356c9bcc4c755ed139202b5a3310d86fb77886020bb35042016df082e",
    "8aa3307d2b1d62d1be55734dcb3e4dbcd648ffa085e99ea4bc9a333376bb016c",
)


def open_debate() -> tuple[RunRecord, FakeSpeaker]:
    speaker = FakeSpeaker({
        "A1": [R1.format(a="Yes, open it."),
               "Position A: Open it\nPosition B: Keep it closed\nA1: A\nB2: B\nC3: A",
               R2.format(d="maintained", a="Yes, open it.", i="nobody", p="A"), SUMMARY],
        "B2": [R1.format(a="No, keep closed."),
               R2.format(d="changed", a="Yes, open it.", i="A1", p="A")],
        "C3": [Reply("Reasoning: it helps a lot and", "length"), "Answer: Yes, it helps.",
               R2.format(d="maintained", a="Yes, mostly so.", i="A1, B2", p="A")],
    })  # fmt: skip
    return make_record(["A1", "B2", "C3"]), speaker


def number_debate() -> tuple[RunRecord, FakeSpeaker]:
    speaker = FakeSpeaker({
        "A1": [R1.format(a="12"), R2N.format(d="maintained", a="12", i="nobody"),
               "Summary: They counted.\nCounterpoint: none was raised.\nAnswer: Twelve."],
        "B2": [R1.format(a="13"), R2N.format(d="changed", a="12", i="Panelist A")],
        "C3": [R1.format(a="12.0"),
               R2N.format(d="maintained", a="12", i="Panelist A, Panelist B")],
    })  # fmt: skip
    record = make_record(["A1", "B2", "C3"], anonymous=True, question="What is 3*4?")
    return record.model_copy(update={"question_kind": "number", "answer_key": "12"}), speaker


def calls_sha(speaker: FakeSpeaker) -> str:
    calls = [
        [c.panelist, [[m.role, m.content] for m in c.messages], c.grammar, c.seed,
         c.sampling.model_dump(), c.prefill, c.conversation]
        for c in speaker.calls
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(calls, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", ["open", "number"])
@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("scheme", ["run", "question"])
def test_roundtable_keeps_the_transcripts_and_prompts_of_the_tree_before_protocols(
    name: str, recorded: bool, scheme: SeedScheme
) -> None:
    """As a new run records it (the protocol in the record, its templates from the
    protocol's files) and as an older record reads (no protocol: roundtable), under
    either seed scheme."""
    record, speaker = {"open": open_debate, "number": number_debate}[name]()
    record = record.model_copy(update={"seed_scheme": scheme})
    protocol = builtin_protocol("roundtable")
    if recorded:
        record = record.model_copy(update={"protocol": protocol.record()})
    templates = protocol.templates() if recorded else TemplateSet()
    done = Debate(record, speaker, templates, lambda r: None, lambda e: None).run()
    assert done.summary is not None and done.summary.status == "ok"
    assert all(t.status == "ok" for t in done.turns)
    assert (transcript_sha256(done), calls_sha(speaker)) == GOLDEN[name, scheme]


TRIO = """
[debate]
panel = "trio"
rounds = 2
seed = 5
[models.alpha]
source = { kind = "scripted", voice = "holds that yes" }
[models.beta]
source = { kind = "scripted" }
[panels.trio]
panelists = [
  { name = "Ada", model = "alpha", persona = "You are careful." },
  { name = "Bob", model = "beta" },
  { name = "Cy", model = "beta" },
]
"""

# Three seats that answer in numbers (free text: "Thinking it through, Ada says 7").
NUMBERS = """
[debate]
panel = "trio"
rounds = 2
seed = 5
[models.seven]
source = { kind = "scripted", voice = "says 7" }
[models.eight]
source = { kind = "scripted", voice = "says 8" }
[panels.trio]
panelists = [
  { name = "Ada", model = "seven" },
  { name = "Bob", model = "eight" },
  { name = "Cy", model = "seven" },
]
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def trio(tmp_path: Path) -> Path:
    fakebackend.LOADS.clear()
    path = tmp_path / "models.toml"
    path.write_text(TRIO)
    return path


def the_run(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if "-replay-" not in p.name]
    return run_dir


def test_a_roundtable_debate_from_the_cli_keeps_its_transcript_and_prompts(
    trio: Path, tmp_path: Path
) -> None:
    done = run("debate", "Is one line enough?", "--config", str(trio), "--runs-dir",
               str(tmp_path / "runs"), "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    record = read_record(the_run(tmp_path / "runs"))
    gens = [t.generation for t in record.turns] + [x.generation for x in record.labelings]
    gens.append(record.summary.generation if record.summary else None)
    prompts = [[g.prompt, g.grammar_sha256, g.seed] for g in gens if g is not None]
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
    assert (record.transcript_sha256, digest) == GOLDEN_CLI
    assert record.protocol is not None and record.protocol.name == "roundtable"
    assert record.protocol.source == BUILT_IN
    roundtable = builtin_protocols() / "roundtable"
    for name in ("protocol.toml", "round1.j2", "turn.gbnf.j2"):
        expected = hashlib.sha256((roundtable / name).read_bytes()).hexdigest()
        assert record.templates[name] == expected


# -- du2023: the paper's words and parser ---------------------------------------------


# fmt: off
def du_construct_message(
    agents: list[list[dict[str, str]]], question: str, idx: int
) -> dict[str, str]:
    """Du et al. 2023, math/gen_math.py (composable-models/llm_multiagent_debate), as
    published: the reference the du2023 protocol's round_later.j2 must render."""
    if len(agents) == 0:
        return {"role": "user", "content": "Can you verify that your answer is correct. Please reiterate your answer, making sure to state your answer at the end of the response."}  # noqa: E501

    prefix_string = "These are the recent/updated opinions from other agents: "

    for agent in agents:
        agent_response = agent[idx]["content"]
        response = "\n\n One agent response: ```{}```".format(agent_response)  # noqa: UP032

        prefix_string = prefix_string + response

    prefix_string = prefix_string + "\n\n Use these opinions carefully as additional advice, can you provide an updated answer? Make sure to state your answer at the end of the response.".format(question)  # noqa: E501, F523, UP032
    return {"role": "user", "content": prefix_string}
# fmt: on


def du_parse_answer(sentence: str) -> float | None:
    """Du et al. 2023, math/gen_math.py, as published (their evaluation first replaces
    "," with "."): the reference of the answer rule last_number."""
    parts = sentence.split(" ")

    for part in parts[::-1]:
        try:
            answer = float(part)
            return answer
        except:  # noqa: E722
            continue
    return None


def test_du2023_renders_the_papers_messages_and_no_system_prompt() -> None:
    protocol = builtin_protocol("du2023")
    question = "What is the result of 1+2*3+4-5*6? Make sure to state your answer at the end of the response."  # noqa: E501
    replies = {
        "A1": ["Let's see: 1 + 6 + 4 - 30 = -19.\nThe answer is -19.", "Still -19."],
        "B2": ["I get 11", "Fine: -19"],
        "C3": ["No idea at all.", "-19"],
    }
    record = make_record(["A1", "B2", "C3"], anonymous=True, question=question)
    record = record.model_copy(update={"question_kind": "number", "answer_key": "-19",
                                       "protocol": protocol.record()})  # fmt: skip
    speaker = FakeSpeaker({k: list(v) for k, v in replies.items()})
    done = Debate(record, speaker, protocol.templates(), lambda r: None, lambda e: None).run()
    contexts = {
        name: [{"role": "user", "content": question}, {"role": "assistant", "content": r[0]}]
        for name, r in replies.items()
    }
    for call in speaker.calls:
        assert call.grammar == "" and call.sampling.max_tokens == 1024
        if len(call.messages) == 1:  # round 1: the question alone, as its only message
            assert [(m.role, m.content) for m in call.messages] == [("user", question)]
            continue
        others = [c for name, c in contexts.items() if name != call.panelist]
        expected = [*contexts[call.panelist], du_construct_message(others, question, 1)]
        assert [{"role": m.role, "content": m.content} for m in call.messages] == expected
    assert len(speaker.calls) == 6 and done.summary is None and done.labelings == []
    # the reply with no number failed, and its peers were still shown it (as in the paper)
    c3 = done.turn(1, "C3")
    assert c3 is not None and c3.status == "failed" and "reads no number" in (c3.error or "")
    assert [(t.panelist, t.parsed.answer if t.parsed else None) for t in done.turns] == [
        ("A1", "-19"), ("B2", "11"), ("C3", None), ("A1", "-19"), ("B2", "-19"), ("C3", "-19"),
    ]  # fmt: skip
    b2 = done.turn(2, "B2")
    assert b2 is not None and b2.answer_changed is True and b2.generation is not None
    assert b2.generation.grammar_sha256 is None  # no grammar


# Hand-written replies of the kinds small models give, and the traps of a parser that
# splits at spaces only: trailing punctuation, markdown, LaTeX, commas, words glued to
# numbers by a newline, scientific notation, inf and nan.
REPLIES = [
    "The answer is 550.",
    "The answer is 550",
    "1 + 2 * 3 = 7. So the result is 7",
    "Result: **550**",
    "The result is $550$.",
    "So we get 12+28*19+6 = 550. Therefore the answer is 550.",
    "The final answer is \\boxed{-19}",
    "Step 1: 3*4 = 12\nStep 2: 12 + 5 = 17\nAnswer: 17",
    "I computed 1,234 as the sum",
    "The value is 1,234.",
    "-19",
    "My answer: -19.0",
    "It is (42)",
    "The answer is 42!",
    "We have 6 - 30 = -24\n\nThus the answer is -24",
    "The result of the expression is:\n\n550",
    "approximately 3.14159 units",
    "The result is 1e3",
    "The answer is inf",
    "the answer is nan",
    "It comes to 12345678901234567890",
    "Answer: 0.0000001",
    "No number here at all.",
    "",
    "  550  ",
    "The answer is +7",
    "The answer is 7 apples",
    "The answer is ٤٢",  # Arabic-Indic digits: Python's float reads them too
    "Therefore, 7 + 3 = 10, and the answer is 10",
    "1_000 is the answer",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_the_answer_rule_reads_what_the_papers_parser_reads(reply: str) -> None:
    from decimal import Decimal

    from localtable.debate.answers import NUMBER_PATTERN, last_number

    theirs = du_parse_answer(reply.replace(",", "."))
    ours = last_number(reply)
    if ours is not None:
        assert theirs is not None and Decimal(ours) == Decimal(repr(theirs))
        return
    # none read, or a value no answer key can equal (never right in either)
    assert (
        theirs is None
        or theirs != theirs  # nan
        or abs(theirs) == float("inf")
        or not NUMBER_PATTERN.match(format(Decimal(repr(theirs)).normalize(), "f"))
    ), (reply, theirs)


def test_the_answer_rule_reads_these_replies_as_the_paper_does() -> None:
    from localtable.debate.answers import last_number

    read = {r: last_number(r) for r in REPLIES}
    assert read["The answer is 550."] == "550"
    assert read["Result: **550**"] is None
    assert read["I computed 1,234 as the sum"] == "1.234"
    assert read["We have 6 - 30 = -24\n\nThus the answer is -24"] == "-24"
    assert read["The answer is 7 apples"] == "7"
    assert read["The answer is ٤٢"] == "42"
    assert read["The answer is inf"] is None and read["It comes to 12345678901234567890"] is None
    assert sum(du_parse_answer(r.replace(",", ".")) is not None for r in REPLIES) >= 20


# -- a folder of the user's ------------------------------------------------------------


def copy_of(name: str, where: Path) -> Path:
    folder = where / f"my-{name}"
    shutil.copytree(builtin_protocols() / name, folder)
    return folder


def test_an_edited_copy_of_a_builtin_runs_and_the_record_names_it(
    trio: Path, tmp_path: Path
) -> None:
    folder = copy_of("roundtable", tmp_path)
    round1 = folder / "round1.j2"
    round1.write_text(round1.read_text() + "Think of the children.\n")
    runs = tmp_path / "runs"
    done = run("debate", "Is one line enough?", "--config", str(trio), "--runs-dir", str(runs),
               "--protocol", f"{folder}/", "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    record = read_record(the_run(runs))
    assert record.status == "complete" and record.protocol is not None
    assert record.protocol.name == "my-roundtable"
    assert record.protocol.source == str(folder.resolve())
    assert record.templates["round1.j2"] == hashlib.sha256(round1.read_bytes()).hexdigest()
    first = record.turns[0].generation
    assert first is not None and "Think of the children." in first.prompt
    # replay reads the folder again: identical while it is the same
    replayed = run("replay", str(the_run(runs)), "--config", str(trio), "--runs-dir", str(runs))
    assert replayed.exit_code == 0 and "identical" in replayed.output, replayed.output


@pytest.mark.parametrize("changed", ["round1.j2", "protocol.toml"])
def test_a_changed_protocol_file_refuses_replay_and_resume(
    trio: Path, tmp_path: Path, changed: str
) -> None:
    folder = copy_of("roundtable", tmp_path)
    runs = tmp_path / "runs"
    args = ["--config", str(trio), "--runs-dir", str(runs)]
    done = run("debate", "Is one line enough?", *args, "--protocol", f"{folder}/", "-q")
    assert done.exit_code == 0, done.output
    run_dir = the_run(runs)
    path = folder / changed
    path.write_text(path.read_text() + "\n# edited\n")
    refused = [run("replay", str(run_dir), *args)]
    record = read_record(run_dir)
    record.turns = [t for t in record.turns if t.round == 1]
    record.summary, record.status = None, "interrupted"
    write_record(run_dir, record)
    refused.append(run("resume", str(run_dir), *args))
    for result in refused:
        assert result.exit_code == 2, result.output
        assert f"{changed} changed since run {record.run_id}" in result.output
        assert "restore it to rerun this run" in result.output
    assert read_record(run_dir).turns == record.turns  # nothing ran
    assert [p.name for p in runs.iterdir()] == [run_dir.name]  # no replay folder


def test_a_rerun_of_a_record_before_protocols_reads_it_as_roundtable() -> None:
    record = make_record(["A1", "B2"])
    builtins = TemplateSet()
    names = ["system.j2", "round1.j2", "round_later.j2", "turn.gbnf.j2", "completion.j2"]
    record.templates = {n: builtins.sha256(n) for n in names}
    assert record.protocol is None
    from localtable.session.rerun import check_templates

    assert check_templates(record, builtins).name == "roundtable"
    record.templates["round1.j2"] = "0" * 64
    with pytest.raises(ConfigError, match="round1.j2 changed since run test"):
        check_templates(record, builtins)


def test_models_toml_names_a_protocol_folder_relative_to_itself(
    trio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_of("roundtable", tmp_path)
    trio.write_text(TRIO.replace("seed = 5", 'seed = 5\nprotocol = "my-roundtable/"'))
    monkeypatch.chdir(tmp_path.parent)  # not where models.toml is
    runs = tmp_path / "runs"
    done = run("debate", "Is one line enough?", "--config", str(trio), "--runs-dir", str(runs),
               "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    protocol = read_record(the_run(runs)).protocol
    assert protocol is not None and protocol.source == str((tmp_path / "my-roundtable").resolve())


BROKEN = {
    "bad toml": ("protocol.toml", "summary = \n", "not valid TOML"),
    "unknown key": ("protocol.toml", "sumary = true\n", "sumary: unknown key"),
    "free without a rule": (
        "protocol.toml",
        'output = "free"\nsummary = false\nlabels = false\n',
        "needs an answer_rule",
    ),  # fmt: skip
    "personas without a system prompt": (
        "protocol.toml",
        "system_prompt = false\n",
        "personas are part of the system prompt",
    ),  # fmt: skip
    "a bad max_tokens": ("protocol.toml", "max_tokens = [8]\n", "max_tokens[0]"),
    "a template that does not compile": ("round1.j2", "{% if %}", "round1.j2:1: template syntax"),
    "a template that is not UTF-8": ("round_later.j2", b"\xff\xfe", "not UTF-8 text"),
    "a missing template": ("turn.gbnf.j2", None, "no turn.gbnf.j2: protocol my-roundtable "),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_protocol_folder_is_one_line_before_any_model_loads(
    trio: Path, tmp_path: Path, case: str
) -> None:
    name, content, message = BROKEN[case]
    folder = copy_of("roundtable", tmp_path)
    path = folder / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)  # a protocol.toml: the rest at their defaults
    runs = tmp_path / "runs"
    calls = sum(fakebackend.CALLS.values())
    for command in (["debate", "Is one line enough?"], ["batch", "--task", "arithmetic"]):
        result = run(*command, "--config", str(trio), "--runs-dir", str(runs), "--protocol",
                     f"{folder}/", "-q")  # fmt: skip
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert fakebackend.LOADS == {} and sum(fakebackend.CALLS.values()) == calls
    assert not runs.exists()


def test_an_unknown_protocol_name_or_folder_is_one_line() -> None:
    with pytest.raises(
        ConfigError, match="unknown protocol 'du2024': the built-in ones are du2023, roundtable"
    ):  # noqa: E501
        load_protocol("du2024", Path.cwd())
    with pytest.raises(ConfigError, match="no such protocol folder"):
        load_protocol("./nowhere/", Path.cwd())
    assert builtin_names() == ["du2023", "roundtable"]


def test_du2023_runs_number_questions_only(trio: Path, tmp_path: Path) -> None:
    result = run("debate", "Is one line enough?", "--config", str(trio), "--runs-dir",
                 str(tmp_path / "runs"), "--protocol", "du2023", "-q")  # fmt: skip
    assert result.exit_code == 2 and "runs number questions only" in result.output
    assert fakebackend.LOADS == {}


# -- vote mode ---------------------------------------------------------------------------


@pytest.fixture
def numbers(tmp_path: Path) -> tuple[Path, Path]:
    """models.toml of three seats that answer in numbers, and a questions file."""
    fakebackend.LOADS.clear()
    config = tmp_path / "models.toml"
    config.write_text(NUMBERS)
    questions = tmp_path / "sums.jsonl"
    lines = [{"id": f"q{i}", "question": f"What is {i}+7?", "kind": "number", "answer": 7 + i}
             for i in range(2)]  # fmt: skip
    questions.write_text("\n".join(json.dumps(x) for x in lines))
    return config, questions


def test_vote_samples_are_drawn_recorded_hidden_resumed_and_replayed(
    numbers: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = numbers
    runs = tmp_path / "runs"
    args = ["--config", str(config), "--runs-dir", str(runs)]
    done = run("batch", str(questions), *args, "--protocol", "du2023", "--vote", "9", "-q")
    assert done.exit_code == 0, done.output
    assert "SC@6: majority of 6 independent answers" in done.output  # 3 seats x 2 rounds
    run_dir = runs / "sums" / "q0-s5"
    record = read_record(run_dir)
    assert record.vote == 9 and record.protocol and record.protocol.name == "du2023"
    # 2 samples a seat, in seat order, each with a seed of its own
    seeds = {p.name: p.index for p in record.panelists}
    assert [(s.panelist, s.generation.seed if s.generation else None) for s in record.samples] == [
        (name, Seeds.of(record).sample(n, seeds[name]))
        for name in ("Ada", "Bob", "Cy")
        for n in (1, 2)
    ]
    assert all(s.round == 1 and s.status == "ok" for s in record.samples)
    assert {s.parsed.answer for s in record.samples if s.parsed} == {"7", "8"}
    round1 = record.turn(1, "Ada")
    assert round1 and round1.generation and round1.generation.seed == Seeds.of(record).turn(1, 0)
    first = record.samples[0].generation
    assert first is not None and first.prompt == round1.generation.prompt  # the same prompt
    # no peer sees a sample: round 2 shows each peer's round-1 turn only
    for t in record.turns:
        if t.round == 2 and t.generation is not None:
            assert t.generation.prompt.count("One agent response") == 2
    # resume redoes only what is missing, and ends with the whole run's transcript
    whole = record.transcript_sha256
    cut = record.model_copy(update={
        "samples": record.samples[:3], "status": "interrupted", "transcript_sha256": None,
    })  # fmt: skip
    write_record(run_dir, cut)
    calls = sum(fakebackend.CALLS.values())
    resumed = run("resume", str(run_dir), *args, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert sum(fakebackend.CALLS.values()) == calls + 3
    assert read_record(run_dir).transcript_sha256 == whole
    replayed = run("replay", str(run_dir), *args)
    assert replayed.exit_code == 0 and f"identical {whole}" in replayed.output, replayed.output


def test_a_vote_that_is_no_multiple_of_the_seats_is_one_line(
    numbers: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = numbers
    for command in (["batch", str(questions), "--protocol", "du2023"], ["debate", "Why?"]):
        result = run(*command, "--config", str(config), "--runs-dir", str(tmp_path / "runs"),
                     "--vote", "5", "-q")  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "--vote 5: give a multiple of the panel's 3 seats above 3" in result.output
    assert fakebackend.LOADS == {} and not (tmp_path / "runs").exists()


def test_a_batch_found_again_under_another_protocol_or_vote_is_refused(
    numbers: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = numbers
    args = [str(questions), "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"]
    assert run("batch", *args, "--protocol", "du2023").exit_code == 0
    for other in (["--protocol", "du2023", "--vote", "6"], ["--protocol", "roundtable"]):
        refused = run("batch", *args, *other)
        assert (
            refused.exit_code == 2
            and "another question, panel, round count, protocol or vote" in refused.output
        )  # noqa: E501


def test_recorded_protocol_names_what_is_not_here() -> None:
    record = make_record(["A1", "B2"])
    protocol = builtin_protocol("du2023")
    record.protocol = protocol.record().model_copy(update={"source": "/nowhere/my-proto"})
    with pytest.raises(
        ConfigError, match="ran the protocol folder /nowhere/my-proto, which is not here"
    ):  # noqa: E501
        recorded_protocol(record)
    record.protocol = protocol.record().model_copy(update={"name": "du2099"})
    with pytest.raises(
        ConfigError, match="ran the protocol 'du2099', which this localtable does not have"
    ):  # noqa: E501
        recorded_protocol(record)


def test_the_settings_shape_what_a_turn_is_asked() -> None:
    """peers' answers only, no personas, max_tokens per round, no labels or summary:
    a roundtable copy whose protocol.toml says so."""
    folder_protocol = builtin_protocol("roundtable")
    settings = folder_protocol.settings.model_copy(
        update={"peer_view": "answer", "personas": False, "max_tokens": [64, 96],
                "summary": False, "labels": False}
    )  # fmt: skip
    record = make_record(["A1", "B2"], rounds=3)
    record.panelists = [
        p.model_copy(update={"persona": f"You are {p.name}."}) for p in record.panelists
    ]
    record.protocol = folder_protocol.record().model_copy(update={"settings": settings})
    r2 = "Reasoning: secret {n}.\nInfluenced by: nobody\nDecision: maintained\nAnswer: Yes, it is."
    speaker = FakeSpeaker({
        name: [R1.format(a="Yes, it is.").replace("because", f"secret {name}"),
               r2.format(n=name), r2.format(n=name)]
        for name in ("A1", "B2")
    })  # fmt: skip
    done = Debate(
        record, speaker, folder_protocol.templates(), lambda r: None, lambda e: None
    ).run()
    assert done.status == "running" and done.summary is None and done.labelings == []
    assert [c.sampling.max_tokens for c in speaker.calls] == [64, 64, 96, 96, 96, 96]
    for call in speaker.calls:
        system = call.messages[0]
        assert system.role == "system" and "You are A1." not in system.content
        assert "You are a thoughtful expert." in system.content  # system.j2 without a persona
        peer = "B2" if call.panelist == "A1" else "A1"
        later = [m.content for m in call.messages if m.role == "user"][1:]
        assert all(f"secret {peer}" not in text for text in later)  # its answer only
        assert all("Answer: Yes, it is." in text for text in later)
    assert sum(len(c.messages) > 2 for c in speaker.calls) == 4  # rounds 2 and 3 read peers
