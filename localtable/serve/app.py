"""The web app's routes: pages from records (read-only) and debates started from the
form (jobs.py). Starlette: a small, established ASGI toolkit that sits well beside
pydantic; uvicorn serves it (server.py).

Security for a local app: every path is confined to --runs-dir (paths.py); every
value is HTML-escaped (templates autoescape, streamed text goes in as textContent);
the Host header must be this machine's (DNS rebinding); a POST must carry the
server's form secret and, when sent, an Origin of this server; with --token, every
request needs the token (a cookie set from ?token=, or a Bearer header).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from localtable.config import LoadedConfig
from localtable.errors import LocaltableError
from localtable.record import RECORD_FILE, RunListing, RunRecord, list_runs, read_record
from localtable.serve.job import DebateSpec
from localtable.serve.jobs import Job, Jobs, QueueFull
from localtable.serve.paths import OutsideRuns, confined
from localtable.templates import TemplateSet

COOKIE = "localtable_token"
MAX_FORM = 64 * 1024  # bytes of a form, at most (the question is at most 20,000 characters)
# pages: no inline script, nothing from elsewhere; the report's own inline styles allowed
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


@dataclass
class Settings:
    runs_dir: Path
    loaded: LoadedConfig
    host: str
    port: int = 0  # set once bound
    token: str | None = None
    form_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")


class Guard:
    """Every request: this machine's Host (when bound to loopback), the token (when
    set); every POST: the form secret and a same-origin Origin."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        s = self.settings
        host = request.headers.get("host", "")
        if s.loopback and host not in {
            f"{h}:{s.port}" for h in ("127.0.0.1", "localhost", "[::1]")
        }:
            await _refuse(403, f"Host {host!r} is not this server", scope, receive, send)
            return
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != host:
            await _refuse(403, "a form from another site", scope, receive, send)
            return
        if s.token is not None:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given, s.token):
                response = RedirectResponse(request.url.path, status_code=303)
                response.set_cookie(COOKIE, s.token, httponly=True, samesite="strict")
                await response(scope, receive, send)
                return
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            cookie = request.cookies.get(COOKIE, "")
            if not any(hmac.compare_digest(c, s.token) for c in (bearer, cookie) if c):
                await _refuse(401, "this server needs its token: open the URL it printed "
                              "(with ?token=...)", scope, receive, send)  # fmt: skip
                return
        await self.app(scope, receive, send)


async def _refuse(status: int, why: str, scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse(f"{status}: {why}\n", status_code=status)(scope, receive, send)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form, at most MAX_FORM bytes (a larger one reads as empty)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def page(templates: TemplateSet, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = templates.render_layout(f"serve/{template}", "html", **values)
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": POLICY})


def build_app(settings: Settings) -> Starlette:
    templates = TemplateSet()
    jobs = Jobs()
    s = settings

    def error(status: int, message: str) -> HTMLResponse:
        return page(templates, "error.html.j2", status, message=message)

    def record_of(names: list[str]) -> RunRecord:
        if not 1 <= len(names) <= 2:
            raise OutsideRuns("a run is RUN or BATCH/RUN")
        run_dir = confined(s.runs_dir, *names)
        path = run_dir / RECORD_FILE
        if path.is_symlink() or not path.is_file():
            raise OutsideRuns(f"no run record in {'/'.join(names)!r}")
        return read_record(run_dir)

    def batches() -> list[str]:
        if not s.runs_dir.is_dir():
            return []
        return sorted(
            p.name for p in s.runs_dir.iterdir()
            if not p.is_symlink() and p.is_dir() and (p / "batch.json").is_file()
        )  # fmt: skip

    async def runs_page(request: Request) -> Response:
        q = request.query_params
        status, panel, text = q.get("status", ""), q.get("panel", ""), q.get("q", "").lower()
        listing: list[RunListing] = await asyncio.to_thread(list_runs, s.runs_dir)
        rows: list[dict[str, object]] = []
        for item in reversed(listing):
            r = item.record
            if status and item.status != status:
                continue
            if r is None:
                if not (panel or text):
                    rows.append({"id": item.run_dir.name, "status": item.status,
                                 "problem": item.problem or ""})  # fmt: skip
                continue
            if (panel and r.panel != panel) or (text and text not in r.question.lower()):
                continue
            rows.append({
                "id": r.run_id, "status": item.status, "panel": r.panel, "rounds": r.rounds,
                "seed": r.seed, "date": f"{r.created_at:%Y-%m-%d %H:%M}", "question": r.question,
                "live": r.run_id in jobs.jobs,
            })  # fmt: skip
        waiting = [
            {"id": j.spec.run_id, "question": j.spec.question, "state": j.state}
            for j in jobs.jobs.values() if j.state in ("queued", "running")
        ]  # fmt: skip
        config = s.loaded.config
        return page(
            templates, "runs.html.j2", rows=rows, batches=batches(), waiting=waiting,
            panels=sorted(config.panels), default_panel=config.debate.panel,
            rounds=config.debate.rounds, seed=config.debate.seed, secret=s.form_secret,
            filters={"status": status, "panel": panel, "q": q.get("q", "")},
            runs_dir=str(s.runs_dir),
        )  # fmt: skip

    async def run_page(request: Request) -> Response:
        from localtable.report.render import render

        names = request.path_params["path"].split("/")
        try:
            record = await asyncio.to_thread(record_of, names)
        except OutsideRuns as exc:
            return error(404, str(exc))
        except LocaltableError as exc:
            return error(422, str(exc))
        html = await asyncio.to_thread(render, record, "html", templates)
        return HTMLResponse(html, headers={"Content-Security-Policy": POLICY})

    async def start(request: Request) -> Response:
        from localtable.session.run import check_question, new_run_id

        body = (
            await request.body()
            if int(request.headers.get("content-length") or 0) <= MAX_FORM
            else b""
        )
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if not hmac.compare_digest(form.get("secret", ""), s.form_secret):
            return error(403, "the form is not this server's: reload the page and try again")
        try:
            question = check_question(form.get("question", ""))
            panel = form.get("panel", "")
            s.loaded.config.panel(panel)
            rounds, seed = int(form.get("rounds", "")), int(form.get("seed", ""))
        except ValueError:
            return error(400, "rounds and seed must be whole numbers")
        except LocaltableError as exc:
            return error(400, str(exc))
        if not (1 <= rounds <= 10 and 0 <= seed < 2**31):
            return error(400, "rounds must be 1 to 10 and seed 0 to 2147483647")
        spec = DebateSpec(
            run_id=new_run_id(datetime.now(UTC)), question=question, panel=panel, rounds=rounds,
            seed=seed, runs_dir=s.runs_dir, config=s.loaded.path,
        )  # fmt: skip
        try:
            jobs.submit(spec)
        except QueueFull as exc:
            return error(503, str(exc))
        return RedirectResponse(f"/live/{spec.run_id}", status_code=303)

    def job_or_none(run_id: str) -> Job | None:
        return jobs.jobs.get(run_id)

    async def live_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        job = job_or_none(run_id)
        if job is None:
            try:
                confined(s.runs_dir, run_id)
            except OutsideRuns as exc:
                return error(404, str(exc))
            return RedirectResponse(f"/runs/{run_id}", status_code=303)
        return page(templates, "live.html.j2", run_id=run_id, question=job.spec.question,
                    panel=job.spec.panel, rounds=job.spec.rounds, seed=job.spec.seed,
                    secret=s.form_secret)  # fmt: skip

    async def events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if job_or_none(run_id) is None:
            return PlainTextResponse("no such debate on this server\n", status_code=404)
        past, queue = jobs.listen(run_id)

        async def stream() -> AsyncIterator[str]:
            try:
                for event in past:
                    yield f"data: {json.dumps(event)}\n\n"
                    if event.get("kind") == "end":
                        return
                while True:
                    event = await queue.get()
                    yield f"data: {json.dumps(event)}\n\n"
                    if event.get("kind") == "end":
                        return
            finally:
                jobs.forget(run_id, queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    async def stop(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        body = (
            await request.body()
            if int(request.headers.get("content-length") or 0) <= MAX_FORM
            else b""
        )
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if not hmac.compare_digest(form.get("secret", ""), s.form_secret):
            return error(403, "the form is not this server's: reload the page and try again")
        if not jobs.stop(run_id):
            return error(404, "no such debate running or waiting on this server")
        return RedirectResponse(f"/live/{run_id}", status_code=303)

    async def status(request: Request) -> Response:
        return Response(
            json.dumps(
                {
                    run_id: {"state": j.state, "pid": j.proc.pid if j.proc else None}
                    for run_id, j in jobs.jobs.items()
                }
            ),  # fmt: skip
            media_type="application/json",
        )

    async def batch_page(request: Request) -> Response:
        from localtable.research.batchindex import is_batch, read_index

        name = request.path_params["name"]
        try:
            batch_dir = confined(s.runs_dir, name)
            if not is_batch(batch_dir) or (batch_dir / "batch.json").is_symlink():
                raise OutsideRuns(f"{name!r} is not a batch")
            index = await asyncio.to_thread(read_index, batch_dir)
        except OutsideRuns as exc:
            return error(404, str(exc))
        except LocaltableError as exc:
            return error(422, str(exc))
        score_text, compare_text = await asyncio.to_thread(_tables, batch_dir, s.runs_dir)
        counts: dict[str, int] = {}
        for e in index.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        entries = [
            {"question_id": e.question_id, "seed": e.seed, "status": e.status,
             "run": e.run_dir, "sha": (e.transcript_sha256 or "")[:12], "error": e.error or "",
             "link": e.status in ("complete", "failed")}
            for e in index.entries
        ]  # fmt: skip
        done = sum(counts.get(k, 0) for k in ("complete", "failed"))
        return page(templates, "batch.html.j2", name=name, index=index, counts=counts,
                    entries=entries, done=done, total=len(index.entries),
                    score=score_text, compare=compare_text)  # fmt: skip

    async def script(request: Request) -> Response:
        js = (templates.path_of("serve/live.js")).read_text(encoding="utf-8")
        return Response(js, media_type="text/javascript", headers={"Cache-Control": "no-store"})

    async def style(request: Request) -> Response:
        css = (templates.path_of("serve/serve.css")).read_text(encoding="utf-8")
        return Response(css, media_type="text/css")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(jobs.close)  # the debate running stops, its record kept

    app = Starlette(
        routes=[
            Route("/", runs_page),
            Route("/runs/{path:path}", run_page),
            Route("/debates", start, methods=["POST"]),
            Route("/live/{run_id}", live_page),
            Route("/live/{run_id}/events", events),
            Route("/live/{run_id}/stop", stop, methods=["POST"]),
            Route("/batches/{name}", batch_page),
            Route("/api/jobs", status),
            Route("/static/live.js", script),
            Route("/static/serve.css", style),
        ],
        lifespan=lifespan,
        middleware=[Middleware(Guard, settings=settings)],
    )
    app.state.jobs = jobs
    return app


def _tables(batch_dir: Path, runs_dir: Path) -> tuple[str, str]:
    """The batch's `score` and `compare` tables as the CLI prints them (text)."""
    from localtable.research.compare import collect, compare
    from localtable.research.render import render_comparison
    from localtable.research.scoreview import render_score
    from localtable.research.scoring import score

    templates = TemplateSet()
    try:
        records, skipped = collect([str(batch_dir)], runs_dir)
    except LocaltableError as exc:
        return str(exc), str(exc)
    try:
        score_text = render_score(score(records), "text", templates, f"Accuracy: {batch_dir.name}")
    except LocaltableError as exc:
        score_text = str(exc)
    try:
        compare_text = render_comparison(compare(records, skipped), "text", templates)
    except LocaltableError as exc:
        compare_text = str(exc)
    return score_text, compare_text
