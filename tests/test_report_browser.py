"""The HTML page in a real browser: headless Chromium driven over the DevTools protocol.

The page must load with no console error, no script, no network request, show
its key parts, and keep hostile text inert. Screenshots go to test-output/ for
people to look at. The DevTools protocol runs over Chromium's
--remote-debugging-pipe (file descriptors 3 and 4, NUL-separated JSON): no
port, no websocket, nothing beyond the standard library.

Chromium is Debian's `chromium` package (`make test` installs it). Without it
these tests skip locally and fail under CI (CI=true).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localtable.record import RunRecord, read_record
from localtable.report.render import render
from localtable.templates import TemplateSet
from tests.conftest import REPO, subprocess_env
from tests.realmodels import fast_config, localtable

OUTPUT = REPO / "test-output"
DATA = Path(__file__).parent / "data"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "Chromium not found: `make test` installs Debian's chromium package"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def high_fd(fd: int) -> int:
    """The same open file on a descriptor >= 10 (close-on-exec), closing the original."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class CdpError(RuntimeError):
    pass


@dataclass
class PageLoad:
    """What a page did while it loaded."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


class Chromium:
    """A headless Chromium with one page, driven by DevTools protocol calls."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        self.buffer = b""
        self.session = ""
        self.log_path = profile / "chromium.log"
        self.log = self.log_path.open("wb")
        # Pipe ends moved to fds >= 10, so the child's dup2 onto 3 and 4 never
        # targets its own source (dup2(3, 3) would keep close-on-exec set).
        to_child_r, self.to_child = (high_fd(fd) for fd in os.pipe())
        self.from_child, from_child_w = (high_fd(fd) for fd in os.pipe())

        def wire_pipes() -> None:  # in the child: Chromium talks on fds 3 (in) and 4 (out)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=wire_pipes,
            close_fds=False,  # Python's own fds are close-on-exec; 3 and 4 are not
        )
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.page(f"{domain}.enable")

    # -- protocol -----------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_child, json.dumps(message).encode() + b"\0")
        return self.next_id

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.from_child], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                log = self.log_path.read_text(errors="replace")[-2000:]
                raise CdpError(f"Chromium closed the DevTools pipe; its log ends:\n{log}")
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        call_id = self._send(method, params or {}, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read(deadline)
            if message is None:
                raise CdpError(f"{method}: no answer from Chromium in {self.timeout:.0f} s")
            if message.get("id") == call_id:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        if message["method"] == "Page.javascriptDialogOpening":
            # a dialog blocks the page (and its load event) until it is answered
            self._send("Page.handleJavaScriptDialog", {"accept": True}, self.session)

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call(method, params, self.session)

    def wait_event(self, method: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            message = self._read(deadline)
            if message is None:
                raise CdpError(f"no {method} event in {timeout:.0f} s")
            if "method" in message:
                self._event(message)

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive in the next few moments."""
        deadline = time.monotonic() + seconds
        while (message := self._read(deadline)) is not None:
            if "method" in message:
                self._event(message)

    # -- page helpers ---------------------------------------------------------

    def load(self, path: Path) -> PageLoad:
        self.events.clear()
        self.page("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_event("Page.loadEventFired", self.timeout)
        self.drain(0.5)
        seen = PageLoad()
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = params.get("args", [])
                seen.console_errors.append(" ".join(str(a.get("value", a)) for a in args))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                seen.console_errors.append(f"uncaught: {text}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                seen.console_errors.append(f"{entry.get('source')}: {entry.get('text')}")
            elif method == "Network.requestWillBeSent":
                seen.requests.append(params["request"]["url"])
            elif method == "Page.javascriptDialogOpening":
                seen.dialogs.append(params.get("message", ""))
        return seen

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, out: Path, width: int, mobile: bool = False) -> None:
        """A full-page PNG at this viewport width."""
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
        self.page("Emulation.setDeviceMetricsOverride", metrics)
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        shot = self.page(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(CdpError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_child)
        os.close(self.from_child)
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    chrome = Chromium(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


def fixture_record() -> RunRecord:
    return read_record(DATA)  # a version 3 record, read as version 4


def write_page(record: RunRecord, path: Path) -> Path:
    path.write_text(render(record, "html", TemplateSet()), encoding="utf-8")
    return path


# -- the harness catches what it must -------------------------------------------


def test_harness_catches_script_errors_and_requests(browser: Chromium, tmp_path: Path) -> None:
    """A deliberately broken page: without this, a silent harness would pass anything."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><title>broken</title>"
        '<img src="http://example.com/x.png" alt="">'
        "<script>console.error('boom'); undefinedFunction();</script>",
        encoding="utf-8",
    )
    seen = browser.load(page)
    assert any("http://example.com/x.png" in url for url in seen.requests), seen
    assert any("boom" in e for e in seen.console_errors), seen
    assert any("undefinedFunction" in e for e in seen.console_errors), seen


def test_harness_catches_dialogs(browser: Chromium, tmp_path: Path) -> None:
    page = tmp_path / "alert.html"
    page.write_text("<!doctype html><script>alert('xss')</script>", encoding="utf-8")
    assert browser.load(page).dialogs == ["xss"]


# -- the page -------------------------------------------------------------------


def assert_clean_load(seen: PageLoad, page: Path) -> None:
    assert seen.console_errors == []
    assert seen.dialogs == []
    assert seen.requests == [page.resolve().as_uri()]  # the file itself, nothing else


KEY_ELEMENTS = """(() => {
  const q = s => document.querySelectorAll(s).length;
  return {
    h1: document.querySelector("h1.question").textContent.trim(),
    consensus: document.querySelector("#consensus").textContent.trim(),
    cards: q(".responses article.card"),
    chartRows: q("#stance-chart g.row"),
    chartCells: q("#stance-chart g.cell"),
    chartTitles: q("#stance-chart g.cell > title"),
    rounds: q("details.round"),
    changedBadges: q(".badge-changed"),
    failed: q(".responses .card-failed"),
    details: q("details#details"),
    transcript: document.querySelector("#transcript-sha256").textContent.trim(),
    scripts: q("script"),
    overflowX: document.documentElement.scrollWidth > window.innerWidth,
  };
})()"""


def test_fixture_page_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    record = fixture_record()
    page = write_page(record, tmp_path / "report.html")
    seen = browser.load(page)
    assert_clean_load(seen, page)
    found = browser.evaluate(KEY_ELEMENTS)
    assert found["h1"] == record.question.strip()
    assert record.summary is not None
    assert found["consensus"] == record.summary.consensus.line
    n = len(record.panelists)
    assert found["cards"] == n and found["chartRows"] == n
    assert found["chartCells"] == n * record.rounds == found["chartTitles"]
    assert found["rounds"] == record.rounds - 1
    assert found["changedBadges"] >= 1 and found["failed"] >= 1
    assert found["details"] == 1 and found["transcript"] == record.transcript_sha256
    assert found["scripts"] == 0

    # wide screen and phone: no sideways scrolling of the page itself
    for width, mobile, name in ((1280, False, "fixture"), (390, True, "fixture-phone")):
        browser.screenshot(OUTPUT / f"report-{name}.png", width, mobile)
        assert browser.evaluate(KEY_ELEMENTS)["overflowX"] is False, name

    # printed: the earlier rounds and the details are expanded
    browser.page("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        printed = browser.evaluate(
            "[...document.querySelectorAll('details > .cards, details#details > dl')]"
            ".map(e => e.checkVisibility())"
        )
        background = browser.evaluate("getComputedStyle(document.body).backgroundColor")
    finally:
        browser.page("Emulation.setEmulatedMedia", {"media": ""})
    assert printed and all(printed), printed
    assert background == "rgb(255, 255, 255)"
    closed = browser.evaluate(
        "[...document.querySelectorAll('details > .cards')].map(e => e.checkVisibility())"
    )
    assert closed and not any(closed)  # on screen they start closed


def test_hostile_text_stays_text_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    from tests.test_render import hostile_record

    page = write_page(hostile_record(), tmp_path / "hostile.html")
    seen = browser.load(page)
    assert_clean_load(seen, page)
    assert browser.evaluate("typeof window.pwned") == "undefined"
    assert browser.evaluate("document.querySelectorAll('script, a, iframe, img').length") == 0
    # every hostile string shows up as text, in the question, cards, chart and summary
    text = browser.evaluate("document.body.innerText")
    assert "<script>window.pwned=1</script>" in text
    tooltips = browser.evaluate(
        "[...document.querySelectorAll('#stance-chart title')].map(t => t.textContent).join('|')"
    )
    assert "</title><script>" in tooltips


REAL_QUESTION = 'Should cities ban cars from their centres, in "Oslo" <b>&</b> elsewhere?'


@pytest.mark.slow
def test_real_run_page_in_chromium(browser: Chromium, tmp_path: Path, isolated_cache: Path) -> None:
    """A real two-round debate on the tiny models, rendered by `debate --format html`.

    The tiny panel's models and shape, with short answers (fast_config) to
    keep the suite's time down.
    """
    runs, page = tmp_path / "runs", tmp_path / "report.html"
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path, max_tokens=96)
    args = ["--config", str(config), "--rounds", "2", "--runs-dir", str(runs), "-q"]
    args += ["--format", "html", "--output", str(page)]
    result = localtable("debate", REAL_QUESTION, *args, env=env)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    record = read_record(run_dir)
    # `render` from the stored record gives the same page
    again = localtable("render", str(run_dir), "--format", "html", env=env)
    assert again.returncode == 0 and again.stdout == page.read_text(encoding="utf-8")

    seen = browser.load(page)
    assert_clean_load(seen, page)
    found = browser.evaluate(KEY_ELEMENTS)
    assert found["h1"] == record.question.strip()
    assert found["cards"] == 3 and found["chartRows"] == 3 and found["chartCells"] == 6
    assert found["rounds"] == 1 and found["details"] == 1
    assert found["transcript"] == record.transcript_sha256
    assert found["scripts"] == 0
    browser.screenshot(OUTPUT / "report.png", 1280)
    browser.screenshot(OUTPUT / "report-phone.png", 390, mobile=True)
    assert browser.evaluate(KEY_ELEMENTS)["overflowX"] is False
