"""The plain bugs issue #27's hostile probe found on the way, each kept fixed: the
HTML report of a llama-server panel, a report written over its own record, an
--output checked only after the run, a batch whose every debate failed, a
missing model found once per debate, and sampling numbers without a bound.

The debates here run on a stand-in llama-server (tests/fakeserver.py): no model
is loaded, and the server counts every /completion, so a test shows that a check
came before the first turn.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localtable.batch.run import BatchStalled, read_index, run_batch
from localtable.cli import cli
from localtable.config import load_config
from localtable.errors import ConfigError, ModelFileError
from localtable.record import RECORD_FILE, RunRecord, read_record, write_record
from localtable.report.render import render
from localtable.session.run import DebateRequest
from localtable.templates import TemplateSet
from tests.fakeserver import FakeLlamaServer
from tests.hostile import RECORD, no_models_config
from tests.test_batch import FakeRunner, request

QUESTION = "Should cities ban cars from their centres?"


def server_config(url: str) -> str:
    return f"""
[debate]
panel = "duo"
rounds = 1
seed = 7

[models.big]
source = {{ kind = "server", url = "{url}", model = "fake-7b.Q4_K_M.gguf" }}
chat = "template"

[panels.duo]
panelists = [{{ name = "Ada", model = "big" }}, {{ name = "Bob", model = "big" }}]
"""


@pytest.fixture
def server() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer() as s:
        yield s


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def debate(server: FakeLlamaServer, tmp_path: Path, *more: str) -> Result:
    cfg = tmp_path / "models.toml"
    cfg.write_text(server_config(server.url))
    runs = str(tmp_path / "runs")
    return run("debate", QUESTION, "--config", str(cfg), "--runs-dir", runs, "-q", *more)


def one_line(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def only_run(runs: Path) -> Path:
    (run_dir,) = runs.iterdir()
    return run_dir


# -- the HTML report of a server panel ----------------------------------------------


def test_the_html_report_renders_for_a_server_panel_run(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    page = tmp_path / "page.html"
    result = debate(server, tmp_path, "--format", "html", "--output", str(page))
    assert result.exit_code == 0, result.output
    html = page.read_text()
    # each server's own line: what it reported, as plain text
    assert f"<dt>server servers {server.url}</dt>" in html
    assert "build_info=b1-fake" in html and "n_ctx=4096" in html
    again = tmp_path / "again.html"
    run_dir = only_run(tmp_path / "runs")
    rendered = run("render", str(run_dir), "--format", "html", "--output", str(again))
    assert rendered.exit_code == 0, rendered.output
    assert again.read_text() == html


def test_backend_facts_of_any_shape_render_as_text() -> None:
    """A shared record may hold anything under `backends`: a number where a hash was,
    a list, a table in a table. The page shows it; it never fails on it."""
    record = read_record(Path(RECORD).parent)
    record.backends = {
        "llamacpp": {"library_sha256": {"libllama.so": "ab" * 32, "libggml.so": 7}},
        "other": {"servers": {"http://h:1": {"deep": {"a": [1, 2]}}}, "list": [1, "x"]},
    }
    html = render(record, "html", TemplateSet())
    assert "<dt>llamacpp library_sha256 libggml.so</dt><dd><code>7</code>" in html
    assert f"<dt>llamacpp library_sha256 libllama.so</dt><dd><code>{'ab' * 32}<" in html
    assert "<dt>other servers http://h:1</dt><dd><code>deep={&#34;a&#34;: [1, 2]}" in html
    assert "<dt>other list</dt><dd><code>[1, &#34;x&#34;]</code>" in html
    record.backends = {"llamacpp": {"library_sha256": {"libllama.so": "ab" * 32}}}
    html = render(record, "html", TemplateSet())  # hashes: the first 12 digits tell builds apart
    assert "<dt>llamacpp library_sha256</dt><dd><code>libllama.so abababababab</code>" in html


def test_a_layout_that_cannot_render_the_panel_fails_before_the_first_turn(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    layout = tmp_path / "mine.html.j2"  # compiles; fails only on a server panel's record
    layout.write_text(
        "{% for url, s in v.record.backends.server.servers | dictsort %}"
        "{{ s.n_ctx // 0 }}{% endfor %}"
    )
    result = debate(server, tmp_path, "--format", "html", "--template", str(layout))
    one_line(result, 2, "mine.html.j2")
    assert server.completions == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- a report written over the record -----------------------------------------------


def a_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "20260101-120000-fixture"
    run_dir.mkdir(parents=True)
    shutil.copy(RECORD, run_dir / RECORD_FILE)
    (run_dir / ".lock").write_text("")
    return run_dir


@pytest.mark.parametrize("target", ["record.json", "hard link", ".lock", "batch.json"])
def test_render_never_writes_over_a_record_or_a_lock(target: str, tmp_path: Path) -> None:
    run_dir = a_run(tmp_path)
    output = run_dir / target
    if target == "hard link":
        output = tmp_path / "copy.json"
        os.link(run_dir / RECORD_FILE, output)
    elif target == "batch.json":
        output = tmp_path / "runs" / "batch.json"
        output.write_text('{"version": 2}')
    before = {p: p.read_bytes() for p in (run_dir / RECORD_FILE, output)}
    result = run("render", str(run_dir), "--format", "md", "--output", str(output))
    one_line(result, 2, f"--output {output}", "give another file name")
    assert {p: p.read_bytes() for p in before} == before
    read_record(run_dir)  # still whole


@pytest.mark.parametrize("name", ["batch.json", "record.json", ".lock"])
def test_render_never_writes_a_new_file_that_would_pass_for_localtables_own(
    name: str, tmp_path: Path
) -> None:
    """A report called batch.json in a run folder would make `score` read the folder as
    a batch (and record.json elsewhere as a run): refused even when no such file exists."""
    run_dir = a_run(tmp_path)
    output = tmp_path / "elsewhere" / name
    output.parent.mkdir()
    if name == ".lock":
        output = tmp_path / "elsewhere" / ".lock"
    result = run("render", str(run_dir), "--format", "md", "--output", str(output))
    one_line(result, 2, f"--output {output}", "give another file name")
    assert not output.exists()


# -- --output checked before the run ------------------------------------------------


def test_an_output_in_a_missing_folder_is_refused_before_the_run(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    page = tmp_path / "nowhere" / "page.html"
    result = debate(server, tmp_path, "--format", "html", "--output", str(page))
    one_line(result, 2, f"--output {page}", "does not exist")
    assert server.completions == [] and not (tmp_path / "runs").exists()


def test_an_output_that_is_a_symbolic_link_is_refused_and_not_followed(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    page = tmp_path / "page.html"
    page.symlink_to(victim)
    result = debate(server, tmp_path, "--output", str(page))
    one_line(result, 2, f"--output {page}", "symbolic link")
    assert victim.read_text() == "keep me" and server.completions == []


def test_resume_checks_its_output_before_it_loads_anything(tmp_path: Path) -> None:
    run_dir = a_run(tmp_path)
    record = read_record(run_dir)
    record.status, record.summary = "interrupted", None  # the fixture's models are not here
    write_record(run_dir, record)
    page = tmp_path / "nowhere" / "page.md"
    result = run("resume", str(run_dir), "--format", "md", "--output", str(page), "-q")
    one_line(result, 2, f"--output {page}", "does not exist")
    assert read_record(run_dir) == record


def test_a_report_that_cannot_be_written_after_the_run_says_how_to_render_it(
    server: FakeLlamaServer, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    page = folder / "page.html"

    def remove_the_folder(s: FakeLlamaServer) -> None:
        if len(s.completions) == 1:  # the check before the run passed; now it is gone
            shutil.rmtree(folder, ignore_errors=True)

    server.on_completion.append(remove_the_folder)
    result = debate(server, tmp_path, "--format", "html", "--output", str(page))
    assert result.exit_code == 2, result.output
    run_dir = only_run(tmp_path / "runs")
    record = read_record(run_dir)
    assert record.status == "complete"
    assert f"Run record: {run_dir / RECORD_FILE}" in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and record.run_id in error
    hint = f"localtable render {run_dir} --format html --output {page}"
    assert hint in error, error
    folder.mkdir()
    again = run(*hint.split()[1:])
    assert again.exit_code == 0, again.output
    assert page.read_text() == render(record, "html", TemplateSet())


# -- batches ------------------------------------------------------------------------


def questions(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "q.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": f"{i}+{i}?", "kind": "number"})
             for i in range(n)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_batch_whose_every_debate_failed_says_so(server: FakeLlamaServer, tmp_path: Path) -> None:
    server.on_completion.append(lambda s: s.fail.append("500"))  # every turn: HTTP 500
    cfg = tmp_path / "models.toml"
    cfg.write_text(server_config(server.url))
    result = run(
        "batch", str(questions(tmp_path, 2)), "--config", str(cfg),
        "--runs-dir", str(tmp_path / "runs"), "-q",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: every debate of the batch failed (2 of 2)"), last
    assert "q0-s7" in last and "HTTP 500" in last
    assert "no runs to compare" not in result.stderr


def test_a_missing_model_is_one_line_before_any_debate_of_a_batch(tmp_path: Path) -> None:
    cfg = no_models_config(tmp_path)
    result = run(
        "batch", str(questions(tmp_path, 3)), "--config", str(cfg),
        "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    line = one_line(result, 1, "missing.gguf", "3 debates")
    assert "running" not in result.stderr, line
    index = read_index(tmp_path / "runs" / "q")
    assert {e.status for e in index.entries} == {"pending"}


class LosesItsModel(FakeRunner):
    """Its model file disappears after the first debate."""

    def run(self, req: DebateRequest) -> RunRecord:
        if self.calls:
            self.calls.append(("run", req.run_id or ""))
            raise ModelFileError("model 'm': file /models/m.gguf is missing; check models.toml")
        return super().run(req)


def test_a_model_lost_mid_batch_stops_the_batch_instead_of_failing_every_debate(
    tmp_path: Path,
) -> None:
    runner = LosesItsModel()
    with pytest.raises(BatchStalled, match="cannot run the 3 debates still to run: model 'm'"):
        run_batch(request(tmp_path), runner, lambda event: None)
    assert [c[1] for c in runner.calls] == ["cap-s1", "cap-s2"]  # not one try per debate
    index = read_index(tmp_path / "demo")
    assert [e.status for e in index.entries] == ["complete", "pending", "pending", "pending"]


# -- sampling and threads are bounded -----------------------------------------------

MINIMAL = """
[models.m]
source = { kind = "path", path = "m.gguf" }
threads = THREADS

[panels.default]
[[panels.default.panelists]]
name = "A"
model = "m"
sampling = SAMPLING
[[panels.default.panelists]]
name = "B"
model = "m"
"""


@pytest.mark.parametrize(
    ("threads", "sampling", "where"),
    [
        ("100000", "{}", "models.m.threads"),
        ("0", "{ top_k = 5000000 }", "sampling.top_k"),
        ("0", "{ top_k = 4294967296 }", "sampling.top_k"),
        ("0", "{ repeat_penalty = 1e9 }", "sampling.repeat_penalty"),
        ("0", "{ repeat_penalty = inf }", "sampling.repeat_penalty"),
    ],
)
def test_sampling_numbers_and_threads_have_an_upper_bound(
    threads: str, sampling: str, where: str, tmp_path: Path
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(MINIMAL.replace("THREADS", threads).replace("SAMPLING", sampling))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert where in message and "less than or equal" in message and "\n" not in message


def test_the_bounds_leave_every_sensible_value(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    sampling = "{ top_k = 262144, repeat_penalty = 1.3 }"  # Gemma 3's whole vocabulary
    path.write_text(MINIMAL.replace("THREADS", "512").replace("SAMPLING", sampling))
    panelist = load_config(path).config.panel("default").panelists[0]
    assert panelist.sampling.top_k == 262144 and panelist.sampling.repeat_penalty == 1.3
