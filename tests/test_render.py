"""Renderers: the view of a record, escaping in every format, user templates, errors."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.cli import cli
from localtable.debate.protocol import Debate
from localtable.record import (
    ModelRecord,
    RunRecord,
    SummaryRecord,
    read_record,
    transcript_sha256,
)
from localtable.report.render import (
    ChartCell,
    ChartRow,
    GenerationRow,
    PositionView,
    RoundtableView,
    StanceChart,
    TurnView,
    build_view,
    render,
)
from localtable.templates import TemplateSet, builtin
from tests.fakes import FakeSpeaker, Reply, crash, make_record, sampling

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "report.md"

R1 = "Reasoning: {r}\nAnswer: {a}"
R2 = "Reasoning: {r}\nInfluenced by: {i}\nDecision: {d}\nPosition: {p}\nAnswer: {a}"

# Text a model (or a user's question, or a config) could hold to break out of the page.
SCRIPT = "<script>window.pwned=1</script>"
CLOSE = "</div></section></svg></title><script>window.pwned=1</script>"
ATTR = '"><img src=x onerror="window.pwned=1">'
QUOTE = "' onmouseover='window.pwned=1' x='"
JS_LINK = '[click](javascript:window.pwned=1) <a href="javascript:window.pwned=1">go</a>'
IMAGE = '![x](http://example.com/track.png) <img src="http://example.com/t.png">'
PAYLOADS = [SCRIPT, CLOSE, ATTR, QUOTE, JS_LINK, IMAGE]


def fixture_record() -> RunRecord:
    return read_record(DATA)  # a version 3 record (answer first), read as version 4


def run_fake(record: RunRecord, replies: dict[str, list[str | Exception]]) -> RunRecord:
    return Debate(record, FakeSpeaker(replies), builtin(), lambda r: None, lambda e: None).run()


def hostile_record() -> RunRecord:
    """A complete record with hostile text in every field a person or a model writes."""
    names = [SCRIPT, "A \"quoted\" 'name' </div>", "Plain"]
    # the labeller's positions (words of their own, not only the question's), the new one
    # of round 2, and the summary
    labels = "\n".join(
        [f"Position A: Keep {CLOSE}", f"Position B: Drop {JS_LINK}"]
        + [f"{names[0]}: A", f"{names[1]}: B", f"{names[2]}: A"]
    )
    new_label = f"Position C: Tolls {IMAGE} {SCRIPT}\n{names[1]}: C"
    summary = "\n".join(
        [
            # words of its own: not a restatement of the question
            f"Summary: {JS_LINK} {CLOSE}",
            f"Counterpoint: {QUOTE} {IMAGE}",
            f"Answer: Verdict: keep the walls up {SCRIPT} {ATTR}",
        ]
    )
    replies: dict[str, list[str | Exception]] = {
        names[0]: [
            R1.format(a=f"Yes {SCRIPT}", r=ATTR),
            labels,
            R2.format(d="maintained", a=f"Yes {CLOSE}", i="nobody", p="A", r=JS_LINK),
            new_label,
            summary,
        ],
        names[1]: [
            R1.format(a=f"No {QUOTE}", r=IMAGE),
            # the answer runs to the end of the output: a line break in it is kept
            R2.format(
                d="changed",
                a=f"Maybe {SCRIPT}\n{QUOTE}",
                i=names[0],
                p="new",
                r=f"{JS_LINK} {CLOSE}",
            ),  # fmt: skip
        ],
        names[2]: [R1.format(a="<b>!</b>", r="x"), crash()],  # markup, then a failed turn
    }
    record = make_record(names, question=f"{SCRIPT}\n{CLOSE}\n{ATTR} {QUOTE} {JS_LINK} {IMAGE}")
    record = run_fake(record, replies)
    record.models = [
        ModelRecord(
            name=f"m {SCRIPT}",
            backend=IMAGE,
            source=JS_LINK,
            sha256=ATTR,
            size=1,
            architecture=QUOTE,
            chat_mode="template",
            n_ctx=1,
            settings={"path": CLOSE, SCRIPT: SCRIPT, "threads": 1},
        )
    ]
    record.panelists = [
        p.model_copy(update={"model": f"{QUOTE}{ATTR}", "persona": CLOSE}) for p in record.panelists
    ]
    record.panel, record.run_id, record.config_path = SCRIPT, ATTR, JS_LINK
    record.status, record.error = "failed", CLOSE
    record.transcript_sha256 = transcript_sha256(record)
    return record


def benign_twin(record: RunRecord) -> RunRecord:
    """The same record with every hostile string replaced by harmless text."""
    text = record.model_dump_json()
    for i, payload in enumerate(PAYLOADS):
        text = text.replace(json.dumps(payload)[1:-1], f"payload{i}")
    for old, new in (("A \\\"quoted\\\" 'name' </div>", "Quoted"), ("<b>!</b>", "bang")):
        text = text.replace(old, new)
    return RunRecord.model_validate_json(text)


class Page(HTMLParser):
    """Tags, attributes and text of an HTML page, as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        self.tags.append("/" + tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def html(record: RunRecord) -> str:
    return render(record, "html", TemplateSet())


# -- the view -----------------------------------------------------------------


def test_view_marks_positions_and_failures() -> None:
    v = build_view(fixture_record())
    assert v.consensus == "2 of 4 agreed" and v.consensus_kind == "majority"
    assert [(p.letter, p.members) for p in v.positions] == [
        ("A", ["Llama 3.2 3B", "Qwen 2.5 3B"]),
        ("B", ["Gemma 3 4B"]),
    ]
    finals = {t.name: t for t in v.finals}
    assert finals["Qwen 2.5 3B"].position == "A" and finals["Gemma 3 4B"].slot == 1
    phi = finals["Phi-4 mini"]
    assert not phi.ok and phi.position == "" and phi.mark == "failed" and "SIGSEGV" in phi.error
    marks = {row.name: [c.mark for c in row.cells] for row in v.chart.rows}
    assert marks == {
        "Llama 3.2 3B": ["held", "held", "held"],
        "Qwen 2.5 3B": ["held", "stated", "held"],
        "Gemma 3 4B": ["held", "answer", "held"],
        "Phi-4 mini": ["failed", "stated", "failed"],
    }
    qwen = v.chart.rows[1].cells
    assert qwen[1].tooltip.startswith("Round 2 · Qwen 2.5 3B (changed mind): Yes, a phased ban")
    assert [c.position for c in qwen] == ["", "", "A"]
    assert v.chart.rows[3].cells[0].tooltip.startswith("Round 1 · Phi-4 mini: failed: unusable")
    assert [r for r, _ in v.earlier_rounds] == [1, 2]
    assert [g.stage for g in v.generations][-1] == "Summary" and len(v.generations) == 13


def test_view_of_an_unfinished_run() -> None:
    record = fixture_record()
    record.turns = [t for t in record.turns if t.round == 1]
    record.summary, record.status, record.error = None, "interrupted", "interrupted by the user"
    v = build_view(record)
    assert not v.summary_ok and v.positions == [] and v.headline == ""
    assert v.summary_error == "the run ended before the summary"
    assert [c.mark for c in v.chart.rows[0].cells] == ["held", "missing", "missing"]
    assert all(t.position == "" for t in v.finals)
    page = html(record)
    assert "This run is interrupted: interrupted by the user" in page
    assert "No summary: the run ended before the summary" in page


def test_failed_summary_is_never_agreement() -> None:
    record = fixture_record()
    assert record.summary is not None
    record.summary = SummaryRecord(
        status="failed",
        summarizer="Llama 3.2 3B",
        error="unusable summary: no 'Position A:' line",
        consensus=record.summary.consensus.model_copy(
            update={"kind": "none", "agreeing": 0, "line": "No consensus"}
        ),
    )
    v = build_view(record)
    assert v.positions == [] and all(t.position == "" for t in v.finals)
    page = html(record)
    assert "No summary: unusable summary: no &#39;Position A:&#39; line" in page
    assert "consensus-none" in page and "Position A</span>" not in page


# -- HTML -----------------------------------------------------------------------


def test_html_keeps_hostile_text_as_text() -> None:
    record = hostile_record()
    page = html(record)
    parsed = Page(page)
    twin = Page(html(benign_twin(record)))
    # the hostile page has exactly the elements of the same page with harmless text
    assert parsed.tags == twin.tags
    assert "script" not in parsed.tags and "img" not in parsed.tags and "a" not in parsed.tags
    assert not [k for k, _ in parsed.attrs if k.startswith("on")]
    assert not [v for _, v in parsed.attrs if "javascript:" in v.lower()]
    assert sorted({k for k, _ in parsed.attrs}) == sorted({k for k, _ in twin.attrs})
    # ... and the hostile strings are there, as text a reader sees
    text = "".join(parsed.text)
    for payload in PAYLOADS:
        assert payload in text, payload
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    # in the chart too: tooltips, names, position letters
    chart = page[page.index('<svg class="chart"') : page.index("</svg>", page.index("chart-title"))]
    assert "&lt;/title&gt;&lt;script&gt;" in chart and "<script" not in chart
    assert "&#34;&gt;&lt;img src=x onerror=&#34;" in page  # double quotes in text and attributes
    assert "&#39; onmouseover=&#39;" in page


def test_html_user_template_is_autoescaped_whatever_its_name(tmp_path: Path) -> None:
    layout = tmp_path / "mine.j2"  # not .html: the format decides the escaping
    layout.write_text(
        '<p title="{{ v.record.question }}">{{ v.finals[0].answer }}</p>\n', encoding="utf-8"
    )
    out = render(hostile_record(), "html", TemplateSet(tmp_path), "mine.j2")
    assert "<script" not in out and "&lt;script&gt;" in out and 'title="&lt;script&gt;' in out


def test_html_is_self_contained() -> None:
    page = html(fixture_record())
    assert page.startswith("<!doctype html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    parsed = Page(page)
    assert not [k for k, _ in parsed.attrs if k in ("src", "href", "srcset", "action")]
    assert "url(" not in page and "@import" not in page and "<link" not in page
    # the only URL is the SVG namespace, which is a name, not a request
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]
    for part in ('<details class="round"', "@media print", "@media (max-width", "<svg"):
        assert part in page


def test_html_shows_the_roundtable_parts() -> None:
    record = fixture_record()
    page = html(record)
    text = "".join(Page(page).text)
    for part in [
        "Should cities ban private cars from their centres?",
        "Most of the panel backs a phased ban",
        "2 of 4 agreed",
        "Counterpoint",
        "Model Responses",
        "Changed mind",
        "Answer changed",
        "engine process died with SIGSEGV",
        "Earlier Rounds",
        "Final Summary",
        "Failed turn",  # legend
        "a phased ban with exemptions for disabled drivers and deliveries",
        "0.3.36",  # llama-cpp-python
        "CPU : SSE3 = 1",
        "0" * 64,  # a model's sha256
        "hf:example/llama-3.2-3b-GGUF@0123456789ab/llama-3.2-3b-q4_k_m.gguf",
        "1508443778",  # a turn seed
        str(record.transcript_sha256),
    ]:
        assert part in text, part


# -- Markdown and text ------------------------------------------------------------


def test_markdown_snapshot() -> None:
    """The Markdown of the fixture record, byte for byte (UPDATE_SNAPSHOTS=1 rewrites it)."""
    out = render(fixture_record(), "md", TemplateSet())
    expected = DATA / "record.md"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        expected.write_text(out, encoding="utf-8")
    assert out == expected.read_text(encoding="utf-8")


def test_markdown_shows_raw_html_and_links_as_text() -> None:
    out = render(hostile_record(), "md", TemplateSet())
    # the layout writes no `<` or `[` itself, so none may come from the record
    assert "<" not in out and "[" not in out
    assert "&lt;script>window.pwned=1&lt;/script>" in out
    assert "&#91;click](javascript:" in out  # no link: a viewer shows the text
    assert "!&#91;x](http://example.com/track.png)" in out  # no image, no request
    assert "> &lt;script>window.pwned=1&lt;/script>\n> &lt;/div>" in out  # quoted lines


def test_text_drops_terminal_control_characters() -> None:
    record = fixture_record()
    turn = record.turns[0]
    assert turn.parsed is not None
    evil = "Yes\x1b[2J\x1b]8;;http://x\x07 really\r\n\tok\x9b31m"
    record.turns[0] = turn.model_copy(
        update={"parsed": turn.parsed.model_copy(update={"answer": evil})}
    )
    out = render(record, "text", TemplateSet())
    assert "Yes[2J]8;;http://x really\n\tok31m" in out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)


def test_json_is_the_record() -> None:
    record = fixture_record()
    assert RunRecord.model_validate_json(render(record, "json", TemplateSet())) == record


# -- templates from the command line ------------------------------------------------


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def record_path() -> str:
    return str(DATA / "record.json")


@pytest.mark.parametrize("fmt", ["text", "md", "json", "html"])
def test_render_command_formats(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"page.{fmt}"
    code, _, err = invoke("render", record_path(), "--format", fmt, "--output", str(out))
    assert code == 0, err
    assert out.read_text(encoding="utf-8") == render(fixture_record(), fmt, TemplateSet())


def test_template_folder_overrides_one_builtin(tmp_path: Path) -> None:
    (tmp_path / "layout.md.j2").write_text("# {{ v.consensus }}\n", encoding="utf-8")
    code, out, _ = invoke("render", record_path(), "--format", "md", "--template", str(tmp_path))
    assert code == 0 and out == "# 2 of 4 agreed\n"
    code, out, _ = invoke("render", record_path(), "--template", str(tmp_path))  # text: built-in
    assert code == 0 and out.startswith("AI Roundtable Open Debate · 4 models\n")


def test_template_file_replaces_the_layout_and_can_import_builtins(tmp_path: Path) -> None:
    layout = tmp_path / "page.j2"
    layout.write_text(
        '{% extends "layout.html.j2" %}\n', encoding="utf-8"
    )  # a user page built on the built-in one
    code, out, _ = invoke("render", record_path(), "--format", "html", "--template", str(layout))
    assert code == 0 and out == render(fixture_record(), "html", TemplateSet())


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("ok\n{% for t in v.finals %}\n{{ t.name }\n{% endfor %}\n", 3, "template syntax error"),
        ("ok\n\n{{ v.no_such_field }}\n", 3, "has no attribute 'no_such_field'"),
        ("{% for t in v.finals %}\n{{ t.name }}\n{{ 1 // 0 }}\n{% endfor %}\n", 3, "division"),
        ("line one\n{{ v.__class__.__mro__ }}\n", 2, "unsafe"),
        ("{{ v.title }}\n{% include 'missing.j2' %}\n", 2, "'missing.j2' not found"),
        ("{{ v.title }}\n{{ v.title + 1 }}\n", 2, "TypeError: can only concatenate str"),
    ],
)
def test_broken_template_is_one_line_with_file_and_line(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    layout = tmp_path / "broken.html.j2"
    layout.write_text(body, encoding="utf-8")
    code, out, err = invoke("render", record_path(), "--format", "html", "--template", str(layout))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"Error: {layout}:{line}: ") and message in err, err


def test_error_in_an_imported_template_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "layout.md.j2").write_text(
        '{% import "cards.j2" as cards %}\n{{ cards.card(v.finals[0]) }}\n', encoding="utf-8"
    )
    (tmp_path / "cards.j2").write_text(
        "{% macro card(t) %}\n{{ t.name }}\n{{ t.nope }}\n{% endmacro %}\n", encoding="utf-8"
    )
    code, _, err = invoke("render", record_path(), "--format", "md", "--template", str(tmp_path))
    assert code == 2 and err.startswith(f"Error: {tmp_path / 'cards.j2'}:3: template error: ")


def test_debate_checks_the_template_before_running(tmp_path: Path) -> None:
    layout = tmp_path / "broken.j2"
    layout.write_text("{% if %}\n", encoding="utf-8")
    runs = tmp_path / "runs"
    code, _, err = invoke(
        "debate", "Q?", "--format", "md", "--template", str(layout), "--runs-dir", str(runs)
    )
    assert code == 2 and err.startswith(f"Error: {layout}:1: template syntax error")
    assert not runs.exists()  # no model was loaded, no run was started


# -- documentation -------------------------------------------------------------------


def test_every_layout_variable_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    sections = {
        RoundtableView: "#### `RoundtableView`",
        TurnView: "#### `TurnView`",
        PositionView: "#### `PositionView`",
        StanceChart: "#### `StanceChart`",
        ChartRow: "#### `StanceChart`",
        ChartCell: "#### `StanceChart`",
        GenerationRow: "#### `GenerationRow`",
    }
    for model, heading in sections.items():
        section = docs.split(heading, 1)[1].split("\n#", 1)[0]
        for name in model.model_fields:
            assert f"| `{name}` |" in section, f"{model.__name__}.{name} is not in {DOCS}"


def test_sampling_is_shown() -> None:
    record = make_record(["A1"])
    record.panelists = [
        record.panelists[0].model_copy(update={"sampling": sampling(temperature=1.25)})
    ]
    assert '<td class="num">1.25</td>' in html(record)


def test_text_cut_by_a_length_cap_ends_at_its_last_whole_sentence() -> None:
    from localtable.report.render import whole_sentences

    cut_answer = "Open it. Keep the weights for a year. But then the"
    assert whole_sentences(cut_answer, cut=True) == "Open it. Keep the weights for a year."
    assert whole_sentences(cut_answer, cut=False) == cut_answer  # not cut: shown as written
    assert whole_sentences("Yes. Then a long stretch without any end at all", True) == (
        "Yes. Then a long stretch without any end at all…"  # the last sentence is most of it
    )
    assert whole_sentences('He said "go." Then', True) == 'He said "go."'
    assert whole_sentences("Complete as it is.", True) == "Complete as it is."


def test_the_view_trims_answers_the_grammar_cut_and_leaves_others() -> None:
    # longer than max_tokens 64 lets the grammar write (128 characters)
    cut = "Open the weights. Keep the training code public. " + "and then " * 10
    record = run_fake(
        make_record(["A1", "B2"], rounds=1),
        {
            "A1": [R1.format(a=cut, r="Why."), "Position A: Open.\nA1: A\nB2: A",
                   "Summary: Brief.\nCounterpoint: Risks.\nAnswer: Open up."],
            "B2": [R1.format(a="Closed weights, no end mark", r="Why.")],
        },
    )  # fmt: skip
    finals = {t.name: t.answer for t in build_view(record).finals}
    # ended at its last full sentence and marked, as a cut reasoning is (issue #26)
    assert finals == {
        "A1": "Open the weights. Keep the training code public. …",
        "B2": "Closed weights, no end mark",
    }


def test_a_line_at_the_grammars_limit_counts_as_cut_even_without_its_last_space() -> None:
    from localtable.report.render import at_limit

    assert at_limit("x" * 160, 160) and at_limit("x" * 159, 160)  # "…to have " stripped
    assert not at_limit("x" * 158, 160)


def test_generations_list_continuations_and_labels_in_the_order_they_ran() -> None:
    cut = Reply("Reasoning: Open code can be checked by", finish_reason="length")
    record = run_fake(
        make_record(["A1", "B2"], rounds=1),
        {
            "A1": [cut, "Answer: Open it.", "Position A: ...\nA1: A\nB2: A",
                   "Position A: Open it\nA1: A\nB2: A",
                   "Summary: Brief.\nCounterpoint: Risks.\nAnswer: Open up."],
            "B2": [R1.format(a="Open it too.", r="Why.")],
        },
    )  # fmt: skip
    rows = [(g.stage, g.name, g.status, g.finish_reason) for g in build_view(record).generations]
    assert rows == [
        ("Round 1", "A1", "ok", "length"),
        ("Round 1, continued", "A1", "ok", "stop"),
        ("Round 1", "B2", "ok", "stop"),
        ("Labels 1", "A1", "rejected", "stop"),  # a label with no word, thrown away
        ("Labels 1", "A1", "ok", "stop"),
        ("Summary", "A1", "ok", "stop"),
    ]
    final = {t.name: t for t in build_view(record).finals}["A1"]
    assert final.reasoning == "Open code can be checked by…" and final.answer == "Open it."
    assert final.position == "A"
