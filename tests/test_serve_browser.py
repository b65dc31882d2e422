"""`localtable serve` in headless Chromium with real tiny-model debates.

Start a debate from the form and watch its turns stream in, open the finished run
and a batch; a debate whose server is killed resumes to the same transcript. Every
wait is for an event: a page state, a record on disk, a process exit. Screenshots
go to test-output/serve-*.png.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.record import read_record
from tests.conftest import REPO, subprocess_env
from tests.realmodels import fast_config, localtable
from tests.servehelp import Served, serve
from tests.test_report_browser import Chromium, chromium_binary

pytestmark = pytest.mark.slow
OUTPUT = REPO / "test-output"
QUESTION = (
    'Should cities ban cars from their centres, <b>"Oslo"</b> <script>window.pwned=1</script>?'
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    chrome = Chromium(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"), 60.0)
    yield chrome
    chrome.close()


def open_page(browser: Chromium, url: str) -> None:
    browser.events.clear()
    browser.page("Page.navigate", {"url": url})
    browser.wait_event("Page.loadEventFired", 60)


def wait_for(browser: Chromium, expression: str, timeout: float) -> object:
    """Until the page's expression is truthy: the browser's own events pace the looks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.evaluate(expression)
        if value:
            return value
        browser.drain(0.25)  # returns as soon as the page sends something
    raise AssertionError(f"timed out waiting for {expression}")


REFERENCE: dict[int, str] = {}  # rounds -> the CLI's transcript sha256 (same config, seed)


def cli_transcript(tmp_path: Path, config: Path, env: dict[str, str], rounds: int) -> str:
    if rounds in REFERENCE:
        return REFERENCE[rounds]
    runs = tmp_path / "cli-runs"
    result = localtable("debate", QUESTION, "--config", str(config), "--rounds", str(rounds),
                        "--seed", "7", "--runs-dir", str(runs), "-q", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs.iterdir()
    sha = read_record(run_dir).transcript_sha256
    assert sha
    REFERENCE[rounds] = sha
    return sha


def start_from_form(browser: Chromium, app: Served, rounds: int) -> str:
    open_page(browser, app.url + "/")
    browser.evaluate(
        f"document.getElementById('question').value = {json.dumps(QUESTION)};"
        f"document.getElementById('rounds').value = '{rounds}';"
        "document.getElementById('seed').value = '7';"
        "document.getElementById('start').requestSubmit(); true"
    )
    browser.wait_event("Page.loadEventFired", 60)
    run_id = str(wait_for(browser, "document.getElementById('run-id')?.textContent", 30))
    return run_id


def test_a_debate_from_the_form_streams_and_matches_the_cli(
    browser: Chromium, tmp_path: Path, isolated_cache: Path
) -> None:
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path, max_tokens=64)
    runs = tmp_path / "runs"
    app = serve(runs, env, config=config)
    try:
        run_id = start_from_form(browser, app, rounds=2)
        # two turns' text arrives while the debate still runs
        wait_for(browser, "[...document.querySelectorAll('.turn[data-stage=turn][data-done] pre')]"
                 ".filter(p => p.textContent.length > 0).length >= 2", 600)  # fmt: skip
        assert not browser.evaluate("document.getElementById('state').dataset.ended")
        browser.screenshot(OUTPUT / "serve-live-running.png", 1000)
        ended = wait_for(browser, "document.getElementById('state').dataset.ended", 900)
        assert ended == "complete", browser.evaluate("document.getElementById('state').textContent")
        wait_for(browser, "document.getElementById('chart').shadowRoot"
                 ".querySelectorAll('g.cell').length >= 6", 60)  # fmt: skip
        browser.screenshot(OUTPUT / "serve-live.png", 1000)
        assert browser.evaluate("typeof window.pwned") == "undefined"
        assert browser.evaluate("document.getElementById('question').textContent") == QUESTION
        streamed = browser.evaluate(
            "[...document.querySelectorAll('.turn[data-stage=turn] pre')].map(p => p.textContent)"
        )
        record = read_record(runs / run_id)
        raw = [t.generation.raw_output for t in record.turns if t.generation and not t.continuation]
        assert all(text in streamed for text in raw)  # the same generation, streamed

        # the finished run's page, and the record equals a CLI run with the same seed
        browser.evaluate("document.getElementById('report-link').click(); true")
        browser.wait_event("Page.loadEventFired", 60)
        assert (
            browser.evaluate("document.querySelector('h1.question').textContent.trim()") == QUESTION
        )
        browser.screenshot(OUTPUT / "serve-run.png", 1000)
        assert record.status == "complete"
        assert record.transcript_sha256 == cli_transcript(tmp_path, config, env, rounds=2)

        # a batch, run by the CLI into the same folder, on its page
        batch = localtable("batch", "--task", "arithmetic", "--limit", "2", "--seeds", "1",
                           "--rounds", "1", "--config", str(config), "--runs-dir", str(runs),
                           "--name", "arith", "-q", env=env)  # fmt: skip
        assert batch.returncode == 0, batch.stderr
        open_page(browser, app.url + "/")
        assert browser.evaluate("document.querySelector('#batches a').textContent") == "arith"
        open_page(browser, app.url + "/batches/arith")
        assert "2 of 2 finished" in browser.evaluate(
            "document.getElementById('progress').textContent"
        )
        assert "Accuracy" in browser.evaluate("document.getElementById('score').textContent")
        assert browser.evaluate("document.querySelectorAll('#entries a').length") == 2
        browser.screenshot(OUTPUT / "serve-batch.png", 1000)
        browser.evaluate("document.querySelector('#entries a').click(); true")
        browser.wait_event("Page.loadEventFired", 60)
        assert browser.evaluate("document.querySelectorAll('#stance-chart').length") == 1
    finally:
        app.stop()


def wait_exit(pid: int, timeout: float) -> None:
    fd = os.pidfd_open(pid)
    try:
        assert select.select([fd], [], [], timeout)[0], f"process {pid} did not end"
    finally:
        os.close(fd)


def test_killing_the_server_leaves_a_record_that_resumes_identically(
    browser: Chromium, tmp_path: Path, isolated_cache: Path
) -> None:
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path, max_tokens=64)
    runs = tmp_path / "runs"
    app = serve(runs, env, config=config)
    run_id = start_from_form(browser, app, rounds=1)
    wait_for(browser, "document.querySelectorAll('.turn[data-done]').length >= 1", 600)
    status, jobs = app.get("/api/jobs")
    worker = json.loads(jobs)[run_id]["pid"]
    app.proc.send_signal(signal.SIGKILL)  # no shutdown of its own: the worker notices
    app.proc.wait()
    wait_exit(worker, 120)
    record = read_record(runs / run_id)
    assert record.status == "interrupted", record.status
    assert record.transcript_sha256 is None
    resumed = localtable("resume", run_id, "--runs-dir", str(runs), "--config", str(config),
                         "-q", env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    sha = read_record(runs / run_id).transcript_sha256
    assert sha == cli_transcript(tmp_path, config, env, rounds=1)


def test_the_stop_button_leaves_a_record_that_resumes_identically(
    browser: Chromium, tmp_path: Path, isolated_cache: Path
) -> None:
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path, max_tokens=64)
    runs = tmp_path / "runs"
    app = serve(runs, env, config=config)
    try:
        run_id = start_from_form(browser, app, rounds=1)
        wait_for(browser, "document.querySelectorAll('.turn[data-done]').length >= 1", 600)
        browser.evaluate("document.getElementById('stop').requestSubmit(); true")
        browser.wait_event("Page.loadEventFired", 60)
        ended = wait_for(browser, "document.getElementById('state').dataset.ended", 300)
        assert ended == "interrupted"
        browser.screenshot(OUTPUT / "serve-stopped.png", 1000)
        record = read_record(runs / run_id)
        assert record.status == "interrupted" and "localtable resume" in (record.error or "")
    finally:
        app.stop()
    resumed = localtable("resume", run_id, "--runs-dir", str(runs), "--config", str(config),
                         "-q", env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    sha = read_record(runs / run_id).transcript_sha256
    assert sha == cli_transcript(tmp_path, config, env, rounds=1)
