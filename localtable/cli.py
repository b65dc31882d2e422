"""The command line: parse options, call one library function, print, exit.

Only this module knows about click. A LocaltableError becomes one line on
stderr and its exit code (1 run failed, 2 usage or config error, 130
interrupted, 143/129 stopped by SIGTERM/SIGHUP); any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from localtable.config import LoadedConfig, load_config
from localtable.errors import ConfigError, LocaltableError, describe_write_error
from localtable.record import (
    RECORD_FILE,
    RunRecord,
    find_run,
    list_runs,
    read_record,
    transcript_mismatch,
)
from localtable.report.render import check_layout, render
from localtable.research.batchindex import INDEX_FILE
from localtable.runlock import LOCK_FILE, RunLocked
from localtable.stopsignals import exit_status, stop_on_signals
from localtable.templates import TemplateSet, text_value

if TYPE_CHECKING:  # not imported at start: `serve` and `runs` start faster without them
    from localtable.debate.protocol import ProgressEvent, TextEvent
    from localtable.research.batch import BatchEvent, BatchProgress, BatchResult

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ["text", "md", "json", "html"]


def default_config() -> Path:
    env = os.environ.get("LOCALTABLE_CONFIG")
    if env:
        return Path(env)
    here = Path("models.toml")
    if here.is_file():
        return here
    bundled = Path(__file__).parent / "models.toml"
    return bundled if bundled.is_file() else Path(__file__).resolve().parent.parent / "models.toml"


# C0 and C1 control characters: what a terminal acts on (escape sequences, carriage
# returns, backspaces). Text from records, servers and GGUFs may hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str, *, one_line: bool = False) -> str:
    """Text as the terminal gets it: every control character written out as \\xNN (so a
    server's or a record's escape sequence is seen, never obeyed); one_line: line breaks
    and tabs too."""
    pattern = _CONTROL_OR_BREAK if one_line else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """click.echo of text that may hold someone else's words: control characters escaped."""
    click.echo(shown(text), err=err, nl=nl)


def _say(text: str) -> None:
    """One line on stderr; after SIGHUP the terminal may be gone, and the exit code matters more."""
    with contextlib.suppress(OSError):
        click.echo(shown(text, one_line=True), err=True)


def user_errors(fn: F) -> F:
    """Turn LocaltableError into a one-line message and its exit code; stop on SIGTERM and
    SIGHUP as on Ctrl-C (see localtable/stopsignals.py), exiting 128 + the signal."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stop_on_signals() as received:
            try:
                return fn(*args, **kwargs)
            except LocaltableError as exc:
                _say(f"Error: {exc}")
                sys.exit(exit_status(received) or exc.exit_code)
            except KeyboardInterrupt as exc:
                why = str(exc) or "interrupted"  # "stopped by SIGTERM" (stopsignals.py)
                _say(f"{why[0].upper()}{why[1:]}.")
                sys.exit(exit_status(received) or 130)

    return wrapper  # type: ignore[return-value]


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="models.toml to use (default: ./models.toml, else the bundled one).",
)
runs_dir_option = click.option(
    "--runs-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("runs"),
    show_default=True,
    help="Where run records are written and looked up.",
)
memory_budget_option = click.option(
    "--memory-budget",
    metavar="SIZE",
    help="Memory the models may use, e.g. 2GB (default: 85% of MemAvailable). Models that "
    "do not fit together are loaded one at a time.",
)
allow_url_option = click.option(
    "--allow-url",
    "allow_urls",
    metavar="URL",
    multiple=True,
    help="Reach this llama-server although models.toml does not name it (repeatable). "
    "Records are shared: by default a run's servers are reached only if models.toml has "
    "them, and an API key is sent only if models.toml names it for that server.",
)
template_option = click.option(
    "--template",
    "template_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A layout template file, or a folder of templates overriding the built-ins.",
)


def _config(path: Path | None) -> LoadedConfig:
    return load_config(path or default_config())


def _allowed_urls(urls: tuple[str, ...]) -> frozenset[str]:
    """--allow-url values, checked as models.toml's server URLs are, as records show them."""
    from localtable.backends.urls import plain_server_url, public_url

    allowed = set()
    for url in urls:
        try:
            allowed.add(public_url(plain_server_url(url)))
        except ValueError as exc:
            raise ConfigError(f"--allow-url {url!r}: {exc}") from None
    return frozenset(allowed)


def _templates(path: Path | None) -> tuple[TemplateSet, str | None]:
    """Built-in templates, or a user folder over them, or one user layout file."""
    if path is None:
        return TemplateSet(), None
    if path.is_dir():
        return TemplateSet(path), None
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: not a regular file; give a template file or folder")
        raise ConfigError(f"{path}: template file does not exist")
    return TemplateSet(path.parent), path.name


# localtable's own files: a report written over one destroys a run, a batch or a lock
OWN_FILES = frozenset({RECORD_FILE, INDEX_FILE, LOCK_FILE})


def _check_output(output: Path | None, *records: Path) -> None:
    """Refuse an --output that cannot be written, or that is one of localtable's own
    files (a run record, the one rendered included under any name, a batch index, a
    lock): a debate checks it before it runs, so the run is never lost to a bad path."""
    if output is None:
        return
    if output.is_symlink():
        raise ConfigError(f"--output {output} is a symbolic link; give the file itself")
    if output.exists():
        if output.is_dir():
            raise ConfigError(f"--output {output} is a folder; give a file name in it")
        if not output.is_file() and str(output) != os.devnull:
            raise ConfigError(f"--output {output} is not a regular file; give a file name")
        if output.name in OWN_FILES or any(
            r.exists() and os.path.samefile(output, r) for r in records
        ):
            raise ConfigError(
                f"--output {output} is localtable's own {output.name}; writing a report "
                "there would destroy it: give another file name"
            )
    folder = output.parent
    if not folder.is_dir():
        missing = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"--output {output}: the folder {folder} {missing}; create it first")
    if not os.access(folder if not output.exists() else output, os.W_OK):
        raise ConfigError(f"--output {output}: permission denied; give a path you can write")


def _write_output(text: str, output: Path | None, *records: Path) -> None:
    if output is None:
        _echo(text, nl=False)
        return
    _check_output(output, *records)
    # never through a link that appeared since the check, never blocked by a FIFO
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(output, flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {describe_write_error(exc)}") from None
    _echo(f"Wrote {output}", err=True)


def _write_report(
    run_dir: Path, record: RunRecord, write: Callable[[], None], how: list[str]
) -> None:
    """Write a finished run's report; if that fails, the run is still saved: say where,
    and how to write its report later (`how`: render's options), then fail with the
    reason and its exit code."""
    try:
        write()
    except LocaltableError as exc:
        _print_run_end(run_dir, record, exit_on_failure=False)
        again = shlex.join(["localtable", "render", str(run_dir), *how])
        error = LocaltableError(
            f"{exc}; the run is saved ({record.run_id}): `{again}` writes its report"
        )
        error.exit_code = exc.exit_code
        raise error from None
    _print_run_end(run_dir, record)


def _option(name: str, value: Path | None) -> list[str]:
    return [name, str(value)] if value is not None else []


class ProgressPrinter:
    """One stderr line per turn: which round and panelist, then how it ended. Turns
    that run at the same time (--parallel-turns) each end on a line of their own."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.running: dict[tuple[str, int, str], tuple[str, float]] = {}  # -> (line, start)
        self.open: tuple[str, int, str] | None = None  # whose line awaits its status

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        key = (event.stage, event.round, event.panelist)
        if event.status == "generating":
            number = event.done + 1 + len(self.running)  # counting those still running
            if event.stage == "turn":
                what = f"[{number}/{event.total}] round {event.round}/{event.rounds}"
            elif event.stage == "labels":  # not counted in total: only open questions have it
                what = f"{' ' * len(f'[{event.done}/{event.total}]')} labels of round {event.round}"
            else:
                what = f"[{number}/{event.total}] summary"
            line = f"{what} · {event.panelist} ... "
            if self.open is not None:
                _echo("", err=True)  # the turn before it is still running
            _echo(line, err=True, nl=False)
            self.running[key] = (line, time.monotonic())
            self.open = key
            return
        line, started = self.running.pop(key, ("", time.monotonic()))
        status = f"{event.status} ({time.monotonic() - started:.1f}s)"
        if self.open == key:
            _echo(status, err=True)
        else:
            if self.open is not None:
                _echo("", err=True)
            _echo(f"{line}{status}", err=True)
        self.open = None


class StreamPrinter:
    """On a terminal: each turn's text as the model writes it, under a header naming
    its round and panelist, then how it ended (stderr; stdout gets the report as
    always). Turns that run at the same time do not interleave: one is shown live,
    the others' text waits and is shown whole (or caught up) when it ends."""

    def __init__(self) -> None:
        self.owner: tuple[str, int, str] | None = None  # the step shown live
        self.started: dict[tuple[str, int, str], tuple[str, float]] = {}  # header, start
        self.waiting: dict[tuple[str, int, str], list[str]] = {}  # text of the others
        self.ended: dict[tuple[str, int, str], str] = {}  # waiting ones that ended: status
        self.line_open = False  # the live text has not ended its line
        # text comes on the engine's receiver thread, progress on the turns' threads
        self.lock = threading.Lock()

    def _write(self, text: str) -> None:
        if text:
            _echo(text, err=True, nl=False)
            self.line_open = not text.endswith("\n")

    def _end_line(self) -> None:
        if self.line_open:
            _echo("", err=True)
            self.line_open = False

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            self._progress(event)

    def _progress(self, event: ProgressEvent) -> None:
        key = (event.stage, event.round, event.panelist)
        if event.status == "generating":
            if event.stage == "turn":
                number = event.done + 1 + len(self.started)  # counting those still running
                what = f"[{number}/{event.total}] round {event.round}/{event.rounds}"
            elif event.stage == "labels":
                what = f"labels of round {event.round}"
            else:
                what = f"[{event.done + 1}/{event.total}] summary"
            self.started[key] = (f"── {what} · {event.panelist} ──", time.monotonic())
            self.waiting[key] = []
            if self.owner is None:
                self._show(key)
            return
        _, began = self.started.get(key, ("", time.monotonic()))
        status = f"→ {event.status} ({time.monotonic() - began:.1f}s)"
        if key != self.owner:
            self.ended[key] = status
            return
        self._finish(key, status)
        while self.owner is None and self.waiting:  # the next one, caught up
            nxt = next(iter(self.waiting))
            self._show(nxt)
            if nxt in self.ended:
                self._finish(nxt, self.ended.pop(nxt))

    def _show(self, key: tuple[str, int, str]) -> None:
        self._end_line()
        _echo(self.started[key][0], err=True)
        self.owner = key
        self._write("".join(self.waiting.get(key, [])))

    def _finish(self, key: tuple[str, int, str], status: str) -> None:
        self._end_line()
        _echo(status, err=True)
        self.started.pop(key, None)
        self.waiting.pop(key, None)
        self.owner = None

    def text(self, event: TextEvent) -> None:
        with self.lock:
            self._text(event)

    def _text(self, event: TextEvent) -> None:
        key = (event.stage, event.round, event.panelist)
        piece = event.text
        if event.restart:  # a continuation or another attempt: say so, show it from here
            again = "continued after its finished fields" if piece else "tried again"
            piece = f"\n[{again}]\n"
        if key == self.owner:
            self._write(piece)
        elif key in self.waiting:
            self.waiting[key].append(piece)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="localtable")
def cli() -> None:
    """localtable: offline AI roundtable debates between local GGUF models."""


def _read_question(question: str | None, question_file: Path | None, default: str) -> str:
    """The question from the argument, stdin or a file, read up to its length limit + 1
    characters (so /dev/zero or `yes |` end at once) and checked before anything loads."""
    from localtable.session.run import MAX_QUESTION_CHARS, check_question

    if question is not None and question_file is not None:
        raise ConfigError("give the question as an argument ('-' for stdin) or --file, not both")
    limit = MAX_QUESTION_CHARS + 1
    if question_file is not None:
        try:
            with question_file.open(encoding="utf-8", errors="strict") as fh:
                text = fh.read(limit)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{question_file}: cannot read the question ({exc})") from None
    elif question == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict")
        try:
            text = stdin.read(limit)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"stdin: the question is not UTF-8 text ({exc})") from None
        finally:
            stdin.detach()
    else:
        text = question if question is not None else default
    return check_question(text)


@cli.command()
@click.argument("question", required=False)
@click.option(
    "--file",
    "question_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the question from a file.",
)
@click.option("--panel", help="Panel from models.toml (default: [debate] panel).")
@click.option("--rounds", type=click.IntRange(1, 10), help="Number of debate rounds.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Run seed.")
@config_option
@runs_dir_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the rendered debate to this file instead of stdout.",
)
@template_option
@click.option("--verify", is_flag=True, help="Re-hash every model file before the run.")
@click.option(
    "--reuse/--no-reuse",
    default=True,
    show_default=True,
    help="Reuse each panelist's evaluated prompt prefix across rounds.",
)
@click.option(
    "--parallel-turns",
    type=click.IntRange(0, 8),
    help="Turns of a round run at the same time, at most; 0 = as many as the cores run "
    "well (default: [debate] parallel_turns, else 0). The transcript is the same.",
)
@click.option(
    "--decode", type=click.Choice(["sequential", "batched"]),
    help="A round's turns on one model decoded together as one batch (faster on a CPU; "
    "the text depends on the batch, which the record keeps, so replay and resume rebuild "
    "it), or one after another (default: [debate] decode, else sequential).",
)  # fmt: skip
@memory_budget_option
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@user_errors
def debate(
    question: str | None,
    question_file: Path | None,
    panel: str | None,
    rounds: int | None,
    seed: int | None,
    config_path: Path | None,
    runs_dir: Path,
    fmt: str,
    output: Path | None,
    template_path: Path | None,
    verify: bool,
    reuse: bool,
    parallel_turns: int | None,
    decode: Literal["sequential", "batched"] | None,
    memory_budget: str | None,
    quiet: bool,
) -> None:
    """Run a debate on QUESTION ('-' reads stdin) and print it.

    Example: localtable debate "Should cities ban cars from their centres?" --rounds 2
    """
    from localtable.backends.llamacpp.memory import parse_size
    from localtable.session.run import DebateRequest, run_debate

    budget = parse_size(memory_budget) if memory_budget is not None else None
    loaded = _config(config_path)
    defaults = loaded.config.debate
    text = _read_question(question, question_file, defaults.question)
    req = DebateRequest(
        question=text,
        panel=panel or defaults.panel,
        rounds=rounds or defaults.rounds,
        seed=defaults.seed if seed is None else seed,
        runs_dir=runs_dir,
        verify=verify,
        reuse_prefix=reuse,
        memory_budget=budget,
        parallel_turns=defaults.parallel_turns if parallel_turns is None else parallel_turns,
        decode=decode or defaults.decode,
    )
    templates, layout = _templates(template_path)
    check_layout(templates, fmt, layout)  # a broken template fails now, not after the run
    _check_output(output)  # and so does a path the report cannot go to
    # on a terminal each turn's text shows as it is written (stderr: stdout is the same)
    stream = StreamPrinter() if not quiet and sys.stderr.isatty() else None
    run_dir, record = run_debate(
        req, loaded, TemplateSet(), stream or ProgressPrinter(quiet),
        notice=lambda text: _echo(f"Note: {text}", err=True),
        # the run's record before its first turn, with this panel's models and backends:
        # a layout that cannot render them fails now, not after the debate
        before_turns=lambda header: render(header, fmt, templates, layout),
        text=stream.text if stream is not None else None,
    )  # fmt: skip
    how = ["--format", fmt, *_option("--template", template_path), *_option("--output", output)]
    _write_report(
        run_dir, record, lambda: _write_output(render(record, fmt, templates, layout), output),
        how,
    )  # fmt: skip


@cli.command("render")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False))
@runs_dir_option
@template_option
@user_errors
def render_cmd(
    run: str, fmt: str, output: Path | None, runs_dir: Path, template_path: Path | None
) -> None:
    """Re-render a stored run (an id, a run folder or its record.json) without re-running it.

    Example: localtable render 20261126-101500-a1b2c3 --format md
    """
    run_dir = find_run(run, runs_dir)
    _check_output(output, run_dir / RECORD_FILE)  # never over the record it renders
    record = read_record(run_dir)
    templates, layout = _templates(template_path)
    actual = transcript_mismatch(record)
    if actual is not None:  # a shared record edited after its run: say so, and in the report
        recorded = record.transcript_sha256 or ""
        _say(
            f"Warning: run {record.run_id} was changed after it ran: its transcript hashes to "
            f"{actual[:12]}..., not the recorded {recorded[:12]}...; the report shows it as it "
            "is now"
        )
        if fmt != "json":
            note = f"{recorded} (does not match the record's content, which hashes to {actual})"
            record = record.model_copy(update={"transcript_sha256": note})
    _write_output(render(record, fmt, templates, layout), output, run_dir / RECORD_FILE)


@cli.command()
@config_option
@click.option("--verify", is_flag=True, help="Re-hash every present file (full sha256).")
@user_errors
def models(config_path: Path | None, verify: bool) -> None:
    """List the models of models.toml and whether their files are present; for a model on
    a llama-server, whether the server is up, its build and the model it runs (it asks
    /health and /props only, it generates nothing).

    Example: localtable models --verify
    """
    from localtable.backends.status import model_statuses

    loaded = _config(config_path)
    rows = model_statuses(loaded, verify=verify)
    header = ("MODEL", "SOURCE", "REVISION", "SIZE", "SHA256", "STATE")

    def short(source: str) -> str:
        parts = source.split(", ")
        return parts[0] + (f" (+{len(parts) - 1} parts)" if len(parts) > 1 else "")

    table = [header] + [
        (
            r.name,
            short(r.source),
            (f"{r.revision}@{r.commit[:12]}" if r.commit else r.revision) or "-",
            f"{r.size:,}" if r.size else "-",
            (r.sha256 or "")[:12] or "-",
            r.state,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        _echo("  ".join([*cells, row[-1]]))
    notes = [r for r in rows if r.detail]
    if notes:
        _echo("")
    for r in notes:
        _echo(f"{r.name}: {r.detail}")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--panel", help="Pull the Hub models of this panel.")
@click.option("--all", "pull_all", is_flag=True, help="Pull every Hub model in models.toml.")
@config_option
@click.option("--quiet", "-q", is_flag=True, help="No download progress bars.")
@click.option(
    "--connect-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
    metavar="SECONDS", help="How long to wait for a connection to the Hub (or a mirror, a CDN).",
)  # fmt: skip
@click.option(
    "--read-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
    metavar="SECONDS", help="How long to wait for each answer or piece of a download; a whole "
    "answer must also end within it plus a second per 32 KiB it announces.",
)  # fmt: skip
@user_errors
def pull(
    names: tuple[str, ...],
    panel: str | None,
    pull_all: bool,
    config_path: Path | None,
    quiet: bool,
    connect_timeout: float,
    read_timeout: float,
) -> None:
    """Download Hub models once, verify their sha256 and pin them in models.lock.

    The only command that uses the network. Example: localtable pull --panel hub-small
    """
    from localtable.models import hub

    loaded = _config(config_path)
    if sum([bool(names), panel is not None, pull_all]) != 1:
        raise ConfigError("name the models to pull, or give --panel P, or --all")
    if panel is not None:
        loaded.config.panel(panel)  # an unknown panel is a usage error
    wanted = list(names) if names else hub.hub_models(loaded, panel)
    if not wanted:
        _echo("Nothing to pull: no Hub models there.", err=True)
        return

    def line(result: hub.ModelPull) -> None:
        _echo(
            f"{result.name}: {result.state}" + (f" - {result.detail}" if result.detail else ""),
            err=True,
        )

    summary = hub.pull(
        loaded, wanted, progress=not quiet, on_result=line,
        connect_timeout=connect_timeout, read_timeout=read_timeout,
    )  # fmt: skip
    counts = {
        state: sum(m.state == state for m in summary.models)
        for state in ("pulled", "present", "skipped", "failed")
    }
    _echo(
        ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        + f"; {summary.bytes_downloaded:,} bytes downloaded",
        err=True,
    )
    if summary.failed:
        sys.exit(1)


def _print_run_end(run_dir: Path, record: RunRecord, exit_on_failure: bool = True) -> None:
    _echo(f"Run record: {run_dir / 'record.json'}", err=True)
    if record.transcript_sha256:
        _echo(f"Transcript sha256: {record.transcript_sha256}", err=True)
    if record.status != "complete" and exit_on_failure:
        _echo(f"Error: run {record.status}: {record.error}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("run")
@runs_dir_option
@config_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--allow-engine-change",
    is_flag=True,
    help="Continue even if llama-cpp-python's build differs from the run's.",
)
@allow_url_option
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@user_errors
def resume(
    run: str,
    runs_dir: Path,
    config_path: Path | None,
    fmt: str,
    output: Path | None,
    allow_engine_change: bool,
    allow_urls: tuple[str, ...],
    quiet: bool,
) -> None:
    """Continue an interrupted or failed run from its last finished turn.

    The finished record has the same turns, byte for byte, as the run done in
    one go. Example: localtable resume 20261126-101500-a1b2c3
    """
    from localtable.research.batch import live_batch_of
    from localtable.session.rerun import resume_run

    allowed = _allowed_urls(allow_urls)
    run_dir = find_run(run, runs_dir)
    live = live_batch_of(run_dir)
    if live is not None:
        batch_dir, holder = live
        raise RunLocked(
            f"run {run_dir.name} belongs to the batch in {batch_dir}, which is in use by "
            f"{holder}; that batch resumes its own debates: wait for it to end, or stop it "
            "and run the same `localtable batch` command again"
        )
    _check_output(output, run_dir / RECORD_FILE)  # before the run, never over its record
    loaded = _optional_config(config_path)
    stream = StreamPrinter() if not quiet and sys.stderr.isatty() else None
    record = resume_run(
        run_dir,
        loaded,
        TemplateSet(),
        stream or ProgressPrinter(quiet),
        allow_engine_change=allow_engine_change,
        allow_urls=allowed,
        text=stream.text if stream is not None else None,
    )
    _write_report(
        run_dir, record,
        lambda: _write_output(render(record, fmt, TemplateSet()), output, run_dir / RECORD_FILE),
        ["--format", fmt, *_option("--output", output)],
    )  # fmt: skip


@cli.command()
@click.argument("run")
@runs_dir_option
@config_option
@click.option(
    "--allow-engine-change",
    is_flag=True,
    help="Replay even if llama-cpp-python's build differs from the run's.",
)
@allow_url_option
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@user_errors
def replay(
    run: str,
    runs_dir: Path,
    config_path: Path | None,
    allow_engine_change: bool,
    allow_urls: tuple[str, ...],
    quiet: bool,
) -> None:
    """Re-run a recorded debate and compare every output byte for byte.

    Prints "identical" and the transcript hash (exit 0), or the first turn and
    token where the replay diverges (exit 1). Example: localtable replay 20261126-101500-a1b2c3
    """
    from localtable.session.rerun import replay_run

    allowed = _allowed_urls(allow_urls)
    run_dir = find_run(run, runs_dir)
    report = replay_run(
        run_dir,
        runs_dir,
        _optional_config(config_path),
        TemplateSet(),
        ProgressPrinter(quiet),
        allow_engine_change=allow_engine_change,
        allow_urls=allowed,
    )
    for diff in report.engine_differences:
        _echo(f"engine differs: {diff}", err=True)
    _echo(f"Replay record: {report.replay_dir / 'record.json'}", err=True)
    if report.identical:
        _echo(f"identical {report.replay.transcript_sha256}")
        return
    d = report.divergence
    if d is None:
        _echo(
            f"different transcript hash: {report.original.transcript_sha256} (original) "
            f"vs {report.replay.transcript_sha256} (replay)"
        )
    else:
        _echo(f"diverges at {d.where}, token {d.token_index} (character {d.char_index})")
        _echo(f"  common:   ...{d.common!r}")
        _echo(f"  original: {d.original!r}...")
        _echo(f"  replay:   {d.replayed!r}...")
    _echo(f"likely cause: {report.likely_cause}")
    sys.exit(1)


@cli.command()
@runs_dir_option
@user_errors
def runs(runs_dir: Path) -> None:
    """List the runs in a runs directory.

    STATUS is `running` only for a run a living process holds (its lock); a run
    whose process died shows `interrupted`. Example: localtable runs --runs-dir runs
    """
    listing = list_runs(runs_dir)
    if not listing:
        _echo(f"No runs in {runs_dir}.", err=True)
        return
    header = ("RUN", "DATE", "STATUS", "PANEL", "ROUNDS", "TRANSCRIPT", "QUESTION")
    rows = [header]
    for item in listing:
        r = item.record
        if r is None:
            rows.append((item.run_dir.name, "-", item.status, "-", "-", "-", item.problem or ""))
            continue
        question = " ".join(r.question.split())
        question = question if len(question) <= 60 else question[:57] + "..."
        folder = item.run_dir.name
        # a copied or renamed folder keeps its record's id: show the folder, which is what
        # `render` and `resume` take, and the id it holds
        shown_id = folder if folder == r.run_id else f"{folder} (run {r.run_id})"
        rows.append(
            (
                shown_id,
                f"{r.created_at:%Y-%m-%d %H:%M}",
                item.status,
                r.panel,
                str(r.rounds),
                (r.transcript_sha256 or "-")[:12],
                question,
            )
        )
    shown = [[" ".join(text_value(c).split()) for c in row] for row in rows]  # shared records
    widths = [max(len(row[i]) for row in shown) for i in range(len(header) - 1)]
    for row in shown:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        _echo("  ".join([*cells, row[-1]]))


@cli.command()
@runs_dir_option
@config_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than this machine's needs a token.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free one).")  # fmt: skip
@click.option("--token", envvar="LOCALTABLE_TOKEN", metavar="TOKEN",
              help="Every request must carry it (made and printed when --host is not "
              "this machine's and none is given). Also from $LOCALTABLE_TOKEN.")  # fmt: skip
@user_errors
def serve(
    runs_dir: Path, config_path: Path | None, host: str, port: int, token: str | None
) -> None:
    """A local web app: browse runs and batches, start a debate and watch it live.

    Example: localtable serve --runs-dir runs (then open the address it prints)
    """
    from localtable.serve.server import serve as serve_app

    serve_app(runs_dir, _config(config_path), host, port, token, lambda line: _echo(line, err=True))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def _batch_line(p: BatchProgress) -> str:
    """The batch's live line: counts, each worker, debates per hour, time left."""
    parts = [f"{p.finished}/{p.total} done", f"{p.running} running", f"{p.failed} failed"]
    if p.errors:
        parts.append(f"{p.errors} errors")
    for w in p.workers:
        what = f"{w.run_id} ({w.turns} turns)" if w.state == "busy" else w.state
        parts.append(f"w{w.worker} {what}")
    if p.per_hour is not None:
        parts.append(f"{p.per_hour:.0f} debates/h")
    if p.eta_seconds is not None:
        parts.append(f"ETA {_duration(p.eta_seconds)}")
    return " · ".join(parts)


# Batch events that --quiet still prints: each needs the user's attention (a worker
# that refused or died, a debate that erred or went back to the queue).
WARNINGS = frozenset({"refused", "lost", "requeue", "error"})


class BatchPrinter:
    """Batch progress on stderr: a line per debate started and finished and per worker
    event, and on a terminal one live line for the whole batch, rewritten in place."""

    def __init__(self, quiet: bool, live: bool | None = None) -> None:
        self.quiet = quiet
        self.live = sys.stderr.isatty() if live is None else live
        self.shown = False

    def _echo(self, text: str) -> None:
        if self.shown:
            click.echo("\r\x1b[K", err=True, nl=False)
            self.shown = False
        _echo(text, err=True)

    def __call__(self, event: BatchEvent) -> None:
        if self.quiet and event.action not in WARNINGS:
            return
        line = self._line(event)
        if line:
            self._echo(line)
        if self.live and event.progress is not None and not self.quiet:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            live = shown(_batch_line(event.progress))[:width]
            click.echo("\r\x1b[K" + live, err=True, nl=False)
            self.shown = True

    def _line(self, event: BatchEvent) -> str | None:
        p = event.progress
        several = p is not None and len(p.workers) > 1
        on = f" on worker {event.worker}" if several and event.worker else ""
        if event.position == 0:  # a worker event
            where = f" on {event.where}" if event.where else ""
            if event.action == "refused":  # alone, it stops the batch with this reason
                return f"worker {event.worker}{where} refused: {event.error}" if several else None
            if event.action == "lost":
                return f"worker {event.worker}{where} died: {event.error}"
            return (
                f"worker {event.worker} ready{where}"
                if several and event.status == "ready"
                else None
            )
        head = f"[{event.position}/{event.total}] {event.question_id} seed {event.seed}"
        if event.action == "skip":
            return f"{head}: {event.status}, skipped"
        if event.action in ("run", "resume"):
            left = f" (about {_duration(event.eta_seconds)} left)" if event.eta_seconds else ""
            verb = "resuming" if event.action == "resume" else "running"
            return f"{head}: {verb}{on}{left}"
        if event.action == "error":
            return f"{head}: error{on}: {event.error}"
        if event.action == "requeue":
            return (
                f"{head}: its worker {event.worker} died ({event.error}); back in the queue, "
                "to resume from its last finished turn"
            )
        tail = f"; {_batch_line(p)}" if p is not None and not self.live else ""
        return f"{head}: {event.status} ({event.seconds or 0:.1f}s{on.replace(' on', ',')}){tail}"

    def close(self) -> None:
        if self.shown:
            _echo("", err=True)
            self.shown = False


class BatchFailed(LocaltableError):
    """No debate of a batch ran to its end: there is nothing to score."""

    exit_code = 1


def _print_batch_summary(result: BatchResult) -> None:
    complete, failed, errors = (result.count(s) for s in ("complete", "failed", "error"))
    _echo(
        f"Batch {result.index.name}: {complete} complete, {failed} failed, {errors} errors; "
        f"index {result.batch_dir / 'batch.json'}",
        err=True,
    )
    if len(result.workers) > 1:
        for w in result.workers:
            where = f" on {w.where}" if w.where else ""
            state = f", {w.state}: {w.message}" if w.state in ("refused", "gone") else ""
            _echo(f"  worker {w.worker}{where}: {w.finished} debates{state}", err=True)
    if result.requeued:
        _echo(f"  {result.requeued} debates went back to the queue after their worker "
                   "died, and were resumed from their last finished turn", err=True)  # fmt: skip
    entries = result.index.entries
    for e in [e for e in entries if e.status == "failed"]:
        _echo(f"  failed: {e.run_dir}: {e.error}", err=True)
    if failed:
        _echo(
            "  (a failed debate is finished and recorded as such; `localtable render "
            f"{result.batch_dir}/RUN` shows why)",
            err=True,
        )
    for e in [e for e in entries if e.status == "error"]:
        _echo(f"  error: {e.run_dir}: {e.error}", err=True)
    if errors:
        _echo(
            "  Fix the cause, then run the same command again: it runs only the debates "
            "that are not finished.",
            err=True,
        )


SCORE_FORMATS = ["text", "md", "csv"]


@cli.command()
@click.argument("questions_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--task", help="A built-in question set instead of a file: arithmetic or quality.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N questions.")
@click.option(
    "--seeds", help="Seeds to run each question with: 1-5, 1,3,7 (default: [debate] seed)."
)
@click.option("--panel", help="Panel from models.toml (default: [debate] panel).")
@click.option("--rounds", type=click.IntRange(1, 10), help="Number of debate rounds.")
@click.option("--name", help="Batch folder under --runs-dir (default: the file's or task's name).")
@config_option
@runs_dir_option
@click.option(
    "--format", "fmt", type=click.Choice(SCORE_FORMATS), default="text", show_default=True,
    help="Format of the accuracy table printed at the end.",
)  # fmt: skip
@click.option("--verify", is_flag=True, help="Re-hash every model file before each debate.")
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="Reuse each panelist's evaluated prompt prefix across rounds.")  # fmt: skip
@click.option(
    "--decode", type=click.Choice(["sequential", "batched"]),
    help="A round's turns on one model decoded together as one batch (faster on a CPU; "
    "the text depends on the batch, which the record keeps, so replay and resume rebuild "
    "it), or one after another (default: [debate] decode, else batched).",
)  # fmt: skip
@memory_budget_option
@click.option("--allow-engine-change", is_flag=True,
              help="Resume debates even if llama-cpp-python's build changed.")  # fmt: skip
@click.option(
    "--workers", type=click.IntRange(1, 1024), default=1, show_default=True,
    help="Debates run at once: N worker processes, each with its own models and its share "
    "of the cores (with --ray: N Ray actors).",
)  # fmt: skip
@click.option(
    "--ray", "ray_address", metavar="ADDRESS",
    help="Run the workers as Ray actors on the cluster at ADDRESS (host:port), or 'auto' for "
    "a private Ray instance on this machine. Needs localtable[ray].",
)  # fmt: skip
@click.option(
    "--quiet", "-q", is_flag=True,
    help="No progress on stderr; a worker that refuses or dies and a debate that errs still "
    "show.",
)  # fmt: skip
@user_errors
def batch(
    questions_file: Path | None,
    task: str | None,
    limit: int | None,
    seeds: str | None,
    panel: str | None,
    rounds: int | None,
    name: str | None,
    config_path: Path | None,
    runs_dir: Path,
    fmt: str,
    verify: bool,
    reuse: bool,
    decode: Literal["sequential", "batched"] | None,
    memory_budget: str | None,
    allow_engine_change: bool,
    workers: int,
    ray_address: str | None,
    quiet: bool,
) -> None:
    """Run every question of a JSONL or TOML file (or a built-in task) over seeds.

    One run record per (question, seed) in RUNS_DIR/NAME/, indexed in batch.json.
    Run the same command again to skip finished debates and resume an
    interrupted one. Prints the accuracy table when questions have answer keys.
    With --workers N, N debates run at once, each in a worker with its own
    models; with --ray, on a Ray cluster. The records are the same either way.
    Example: localtable batch --task arithmetic --limit 5 --seeds 1 --rounds 2 --workers 2
    """
    from localtable.backends.llamacpp.backend import available_cores
    from localtable.backends.llamacpp.memory import default_budget, parse_size
    from localtable.research.batch import BatchRequest, SessionRunner, parse_seeds, run_batch
    from localtable.research.questions import load_questions
    from localtable.research.tasks import load_task
    from localtable.research.workers import LocalPool, WorkerSpec

    if (questions_file is None) == (task is None):
        raise ConfigError("give a questions file (.jsonl or .toml) or --task NAME, not both")
    questions = load_questions(questions_file) if questions_file else load_task(task or "")
    loaded = _config(config_path)
    defaults = loaded.config.debate
    req = BatchRequest(
        questions=questions.limited(limit),
        seeds=parse_seeds(seeds) if seeds is not None else [defaults.seed],
        panel=panel or defaults.panel,
        rounds=rounds or defaults.rounds,
        runs_dir=runs_dir,
        name=name,
        verify=verify,
        reuse_prefix=reuse,
        memory_budget=parse_size(memory_budget) if memory_budget is not None else None,
        parallel_turns=defaults.parallel_turns,
        decode=decode or defaults.decode,
    )
    loaded.config.panel(req.panel)  # an unknown panel fails before anything is written
    printer = BatchPrinter(quiet)
    spec = WorkerSpec(
        loaded=loaded, panel=req.panel, allow_engine_change=allow_engine_change,
        verify=verify, reuse_prefix=reuse, memory_budget=req.memory_budget,
    )  # fmt: skip
    try:
        if ray_address is not None:
            from localtable.research.raycluster import RayPool

            with RayPool(spec, workers, ray_address) as ray_pool:
                result = run_batch(req, ray_pool, printer)
        elif workers > 1:
            # each worker its share of the cores and of the memory (models.toml's
            # threads and --memory-budget, when given, are each worker's)
            machine = default_budget()
            if req.memory_budget is None and machine is not None:
                budget = machine // workers
                req = req.model_copy(update={"memory_budget": budget})
                spec = spec.model_copy(update={"memory_budget": budget})
            cores = available_cores()
            threads = max(1, cores // workers)
            if workers > cores:
                _echo(f"Note: {workers} workers on {cores} cores: more workers than cores "
                           "slows every debate down", err=True)  # fmt: skip
            pool = LocalPool(spec.model_copy(update={"threads": threads}), workers)
            result = run_batch(req, pool, printer)
        else:
            with SessionRunner(
                loaded, TemplateSet(), lambda e: None, allow_engine_change
            ) as runner:
                result = run_batch(req, runner, printer)
    finally:
        printer.close()
    _print_batch_summary(result)
    errors = [e for e in result.index.entries if e.status == "error"]
    if errors and len(errors) == len(result.index.entries):
        first = errors[0]
        raise BatchFailed(
            f"every debate of the batch failed ({len(errors)} of {len(errors)}); the first, "
            f"{first.run_dir}: {first.error}"
        )
    _print_score([str(result.batch_dir)], runs_dir, fmt, None, quiet_if_none=True)
    if errors:
        sys.exit(1)


def _print_score(
    targets: list[str], runs_dir: Path, fmt: str, output: Path | None, quiet_if_none: bool = False
) -> None:
    from localtable.research.compare import collect
    from localtable.research.render import render_score
    from localtable.research.scoring import score

    records, _ = collect(targets, runs_dir)
    try:
        result = score(records)
    except LocaltableError:
        if quiet_if_none:
            return
        raise
    title = _title("Accuracy", targets)
    _write_output(render_score(result, fmt, TemplateSet(), title), output)  # type: ignore[arg-type]


def _title(what: str, targets: list[str]) -> str:
    names = [Path(t).name for t in targets]
    return f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(SCORE_FORMATS), default="text",
              show_default=True)  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to a file.")
@runs_dir_option
@user_errors
def score(targets: tuple[str, ...], fmt: str, output: Path | None, runs_dir: Path) -> None:
    """Accuracy of scored runs: single panelists, majority vote, and debate per round.

    TARGETS are batch folders, run folders or run ids. Example: localtable score runs/arithmetic
    """
    _print_score(list(targets), runs_dir, fmt, output)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "md", "csv", "html"]),
              default="text", show_default=True)  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to a file.")
@runs_dir_option
@user_errors
def compare(targets: tuple[str, ...], fmt: str, output: Path | None, runs_dir: Path) -> None:
    """How the panelists' views differ across runs and batches.

    Final-round agreement of every pair (a matrix; a heatmap in HTML), who
    changed answer how often and towards whom, and every run's final answers
    side by side. Example: localtable compare runs/arithmetic --format html --output cmp.html
    """
    from localtable.research.compare import collect
    from localtable.research.compare import compare as compare_runs
    from localtable.research.render import render_comparison

    records, skipped = collect(list(targets), runs_dir)
    result = compare_runs(records, skipped)
    _write_output(render_comparison(result, fmt, TemplateSet()), output)  # type: ignore[arg-type]


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "md"]), default="text",
              show_default=True)  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to a file.")
@click.option("--judge-reasoning", is_flag=True,
              help="Also ask each panel's summarizer model which answer each yes/no turn's "
              "reasoning concludes (loads that model: minutes).")  # fmt: skip
@runs_dir_option
@user_errors
def quality(
    targets: tuple[str, ...], fmt: str, output: Path | None, judge_reasoning: bool, runs_dir: Path
) -> None:
    """Is a panel's output usable? Each metric against its target, per panel.

    Headlines that restate the question, `Answer:` line length and answers that
    are not positions, failed turns, stated "changed mind" against a change of
    labelled position, summary claims the record contradicts, reasoning cut
    without a mark, answers against their position's label, bare answers, and
    seconds per debate, over the finished runs; with --judge-reasoning, answers
    against what their own reasoning concludes, read by a model. TARGETS are
    batch folders, run folders or run ids. `make quality` runs the built-in
    quality task and then this. Example: localtable quality runs/quality-default
    """
    from localtable.research.compare import NoRuns, collect
    from localtable.research.quality import quality as measure
    from localtable.research.render import render_quality

    try:
        records, skipped = collect(list(targets), runs_dir)
    except NoRuns:
        raise ConfigError(
            f"nothing to measure in {', '.join(targets)}: no debate of it has a record yet"
        ) from None
    judged = None
    if judge_reasoning:  # the only part that loads a model
        from localtable.session.judge import judge_reasoning as judge

        judged = judge(records, TemplateSet(), lambda text: click.echo(text, err=True))
    result = measure(records, skipped, judged)
    title = _title("Quality", list(targets))
    _write_output(render_quality(result, fmt, TemplateSet(), title), output)  # type: ignore[arg-type]


def _optional_config(path: Path | None) -> LoadedConfig | None:
    """models.toml helps find moved model files by sha256; a rerun works without it."""
    try:
        return _config(path)
    except ConfigError:
        if path is not None:
            raise
        return None


def main() -> None:
    cli(prog_name="localtable")
