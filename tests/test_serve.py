"""`localtable serve` without a model: start-up time, the runs list, what it refuses,
and the terminal's streamed text (cli_output.StreamPrinter)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from localtable.debate.protocol import ProgressEvent, TextEvent
from tests.conftest import REPO, subprocess_env
from tests.servehelp import Served, serve

DATA = REPO / "tests" / "data"
HOSTILE = '<script>window.pwned=1</script> & <img src=x onerror="alert(1)">'


def runs_folder(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    run = runs / "20260101-120000-fixture"
    run.mkdir(parents=True)
    shutil.copy(DATA / "record.json", run / "record.json")
    hostile = runs / "20260102-120000-hostile"
    hostile.mkdir()
    raw = json.loads((DATA / "record.json").read_text(encoding="utf-8"))
    raw["question"], raw["run_id"] = HOSTILE, hostile.name
    (hostile / "record.json").write_text(json.dumps(raw), encoding="utf-8")
    outside = tmp_path / "secret"
    outside.mkdir()
    shutil.copy(DATA / "record.json", outside / "record.json")
    (runs / "linked").symlink_to(outside)  # a link in the runs folder is never followed
    return runs


@pytest.fixture
def served(tmp_path: Path, isolated_cache: Path) -> Iterator[Served]:
    app = serve(runs_folder(tmp_path), subprocess_env(isolated_cache))
    yield app
    app.stop()


def test_serve_starts_fast_and_lists_the_runs(served: Served) -> None:
    assert served.started_in < 2.0, f"started in {served.started_in:.2f} s"
    status, html = served.get("/")
    assert status == 200
    assert "20260101-120000-fixture" in html and "Should cities ban private cars" in html
    status, html = served.get("/?q=PRIVATE+cars&status=complete")
    assert "20260101-120000-fixture" in html and "20260102-120000-hostile" not in html
    status, html = served.get("/?panel=nobody")
    assert "20260101-120000-fixture" not in html and "No runs match" in html
    status, html = served.get("/runs/20260101-120000-fixture")
    assert status == 200 and 'id="stance-chart"' in html


def test_a_question_with_html_and_script_stays_text(served: Served) -> None:
    for path in ("/", "/runs/20260102-120000-hostile"):
        status, html = served.get(path)
        assert status == 200
        assert "<script>window.pwned" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html


@pytest.mark.parametrize(
    "path",
    [
        "/runs/linked",  # a symbolic link to a folder outside
        "/runs/..%2Fsecret",
        "/runs/%2E%2E/secret",
        "/runs/20260101-120000-fixture/../../secret",
        "/runs/.hidden",
        "/batches/linked",
        "/batches/..",
        "/live/..%2Fsecret",
    ],
)
def test_a_path_outside_the_runs_folder_is_refused(served: Served, path: str) -> None:
    status, body = served.get(path)
    assert status in (303, 404), (status, body)
    if status == 303:  # the live page sends a run that is not the server's to its report
        status, body = served.get(body.removeprefix(served.url))
        assert status == 404
    assert "Should cities ban" not in body


def test_requests_from_elsewhere_are_refused(served: Served) -> None:
    assert served.get("/", {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    status, _ = served.post("/debates", "question=hi&panel=tiny&rounds=1&seed=1")
    assert status == 403  # no form secret
    _, page = served.get("/")
    secret = page.split('name="secret" value="')[1].split('"')[0]
    body = f"secret={secret}&question=hi&panel=tiny&rounds=1&seed=1"
    assert served.post("/debates", body, {"Origin": "http://evil.example"})[0] == 403
    status, html = served.post("/debates", body.replace("panel=tiny", "panel=nope"))
    assert status == 400 and "nope" in html  # a bad panel, one line, nothing started


def test_a_token_is_required_when_set(tmp_path: Path, isolated_cache: Path) -> None:
    env = subprocess_env(isolated_cache)
    app = serve(runs_folder(tmp_path), env, "--host", "0.0.0.0")  # made and printed
    try:
        assert app.token
        status, body = app.get("/")
        assert status == 401 and "token" in body
        assert app.get("/runs/20260101-120000-fixture")[0] == 401
        assert app.get("/", {"Authorization": "Bearer wrong"})[0] == 401
        assert app.get("/", {"Authorization": f"Bearer {app.token}"})[0] == 200
        status, where = app.get(f"/?token={app.token}")
        assert status == 303 and where == "/"  # the cookie is set, the token leaves the URL
    finally:
        app.stop()
    env["LOCALTABLE_TOKEN"] = "chosen-token"
    app = serve(runs_folder(tmp_path / "again"), env)
    try:
        assert app.get("/")[0] == 401
        assert app.get("/", {"Authorization": "Bearer chosen-token"})[0] == 200
    finally:
        app.stop()


# -- streaming on the terminal ------------------------------------------------------


def event(status: str, panelist: str, done: int = 0) -> ProgressEvent:
    return ProgressEvent(stage="turn", round=1, rounds=1, panelist=panelist, done=done,
                         total=4, status=status)  # fmt: skip


def text(panelist: str, piece: str) -> TextEvent:
    return TextEvent(stage="turn", round=1, panelist=panelist, text=piece)


def test_streamed_text_escapes_control_characters_and_never_interleaves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from localtable.cli_output import StreamPrinter

    printer = StreamPrinter(sys.stderr.write)
    printer(event("generating", "A"))
    printer(event("generating", "B"))  # at the same time (--parallel-turns)
    printer.text(text("A", "Yes \x1b[31mred\x1b[0m\r"))
    printer.text(text("B", "No, "))
    printer.text(text("A", "\nAnswer: yes"))
    printer.text(text("B", "because"))
    printer(event("ok", "B", 0))  # B ends first: it waits for A
    printer(event("ok", "A", 1))
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    assert "Yes \\x1b[31mred\\x1b[0m\\x0d\nAnswer: yes\n→ ok" in err
    a, b = err.index("· A ──"), err.index("· B ──")
    assert a < err.index("Answer: yes") < b < err.index("No, because\n→ ok")


def test_debate_streams_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """--quiet and a pipe keep the progress lines of today (no text events asked)."""
    from click.testing import CliRunner

    from localtable import cli, cli_output
    from localtable.errors import ConfigError

    seen: dict[str, object] = {}

    def fake_run(req: object, loaded: object, templates: object, progress: object,
                 **kwargs: object) -> object:  # fmt: skip
        seen["progress"], seen["text"] = progress, kwargs.get("text")
        raise ConfigError("stop here")

    monkeypatch.setattr("localtable.session.run.run_debate", fake_run)
    result = CliRunner().invoke(cli.cli, ["debate", "q", "--panel", "tiny"])
    assert result.exit_code == 2 and seen["text"] is None  # not a terminal
    assert isinstance(seen["progress"], cli_output.ProgressPrinter)


def test_one_debate_at_a_time_the_next_waits_with_a_message(
    tmp_path: Path, isolated_cache: Path
) -> None:
    """Two debates from the form: the second waits for the first and says so; a debate
    that cannot start ends with its one-line reason on its page's events."""
    config = tmp_path / "models.toml"
    config.write_text(
        '[debate]\npanel = "gone"\n\n[models.gone]\nsource = { kind = "path", path = '
        f'"{tmp_path}/missing.gguf" }}\n\n[panels.gone]\n'
        '[[panels.gone.panelists]]\nname = "A"\nmodel = "gone"\n'
        '[[panels.gone.panelists]]\nname = "B"\nmodel = "gone"\n',
        encoding="utf-8",
    )
    app = serve(runs_folder(tmp_path), subprocess_env(isolated_cache), config=config)
    try:
        _, page = app.get("/")
        secret = page.split('name="secret" value="')[1].split('"')[0]
        body = f"secret={secret}&question=Why%3F&panel=gone&rounds=1&seed=3"
        status, first = app.post("/debates", body)
        assert status == 303 and first.startswith("/live/")
        status, second = app.post("/debates", body)
        assert status == 303 and second != first
        # the events of each debate, to its end (the stream closes after it)
        events = [
            [json.loads(line[6:]) for line in app.get(f"{live}/events")[1].splitlines()
             if line.startswith("data: ")]
            for live in (first, second)
        ]  # fmt: skip
        first_id = first.removeprefix("/live/")
        assert {"kind": "queued", "position": 1, "ahead": first_id} in events[1]
        for ended in events:
            end = ended[-1]
            assert end["kind"] == "end" and end["status"] == "error", end
            assert "missing.gguf" in end["error"] and "\n" not in end["error"]
        _, html = app.get(second)
        assert "One debate runs at a time" not in html  # the page, not the form
        assert app.get("/live/nonexistent-run/events")[0] == 404
    finally:
        app.stop()


def test_a_debate_from_the_page_takes_the_config_defaults_the_cli_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """models.toml's [debate] decode and parallel_turns reach a debate started from the
    page, as they reach `localtable debate`."""
    from localtable.serve import job

    config = tmp_path / "models.toml"
    config.write_text(
        '[debate]\npanel = "p"\ndecode = "batched"\nparallel_turns = 2\n\n'
        '[models.m]\nsource = { kind = "path", path = "m.gguf" }\n\n'
        '[panels.p]\npanelists = [{ name = "A", model = "m" }, { name = "B", model = "m" }]\n',
        encoding="utf-8",
    )
    seen = {}

    def fake_run(req: object, *args: object, **kwargs: object) -> tuple[None, object]:
        seen["req"] = req
        return None, SimpleNamespace(status="complete", error=None, transcript_sha256="-")

    monkeypatch.setattr("localtable.session.run.run_debate", fake_run)
    spec = job.DebateSpec(
        run_id="r", question="Q?", panel="p", rounds=1, seed=1, runs_dir=tmp_path, config=config
    )
    job.run(spec, lambda kind, **fields: None)  # type: ignore[arg-type]
    req = seen["req"]
    assert (req.decode, req.parallel_turns) == ("batched", 2)  # type: ignore[attr-defined]
