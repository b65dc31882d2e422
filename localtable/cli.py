"""The command line: parse options, call one library function, print, exit.

Only this module knows about click; what it prints is laid out in cli_output.py. A
LocaltableError becomes one line on stderr and its exit code (1 run failed, 2 usage
or config error, 130 interrupted, 143/129 stopped by SIGTERM/SIGHUP); any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from localtable import cli_output as out
from localtable.cli_output import BatchPrinter, ProgressPrinter, shown
from localtable.config import LoadedConfig, default_config, load_config, load_optional_config
from localtable.errors import LocaltableError
from localtable.record import RECORD_FILE, RunRecord, find_run, list_runs, read_record
from localtable.report.render import changed_after_run, check_layout, render
from localtable.reportfile import check_output, report_not_written, write_report_file
from localtable.stopsignals import exit_status, stop_on_signals
from localtable.templates import TemplateSet, user_templates

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ["text", "md", "json", "html"]
SCORE_FORMATS = ["text", "md", "csv"]


def _echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """click.echo of text that may hold someone else's words: control characters escaped."""
    click.echo(shown(text), err=err, nl=nl)


def _lines(lines: list[str], *, err: bool = False) -> None:
    for line in lines:
        _echo(line, err=err)


def _stderr(text: str) -> None:
    """Where cli_output's printers write: stderr, through click as every other line."""
    click.echo(text, err=True, nl=False)


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
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="models.toml to use (default: ./models.toml, else the bundled one).",
)  # fmt: skip
runs_dir_option = click.option(
    "--runs-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("runs"),
    show_default=True, help="Where run records are written and looked up.",
)  # fmt: skip
memory_budget_option = click.option(
    "--memory-budget", metavar="SIZE",
    help="Memory the models may use, e.g. 2GB (default: 85% of MemAvailable). Models that "
    "do not fit together are loaded one at a time.",
)  # fmt: skip
allow_url_option = click.option(
    "--allow-url", "allow_urls", metavar="URL", multiple=True,
    help="Reach this llama-server although models.toml does not name it (repeatable). "
    "Records are shared: by default a run's servers are reached only if models.toml has "
    "them, and an API key is sent only if models.toml names it for that server.",
)  # fmt: skip
template_option = click.option(
    "--template", "template_path", type=click.Path(path_type=Path), default=None,
    help="A layout template file, or a folder of templates overriding the built-ins.",
)  # fmt: skip
decode_option = click.option(
    "--decode", type=click.Choice(["sequential", "batched"]),
    help="A round's turns on one model decoded together as one batch (faster on a CPU; "
    "the text depends on the batch, which the record keeps, so replay and resume rebuild "
    "it), or one after another (default: [debate] decode, else sequential).",
)  # fmt: skip
protocol_option = click.option("--protocol", "protocol_spec", metavar="NAME|PATH",
    help="The debate protocol: roundtable or du2023, or a folder of your own (a path, e.g. "
    "my-protocol/). Default: [debate] protocol, else roundtable."
)  # fmt: skip
vote_option = click.option("--vote", type=click.IntRange(0, 128), default=0, metavar="K",
    help="Vote mode: K independent round-1 answers in all, K/seats a seat (its round-1 turn, "
    "then samples with seeds of their own that no peer sees), for score's SC@K (0: none)."
)  # fmt: skip
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text",
                             show_default=True)  # fmt: skip
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
output_file_option = click.option("--output", type=click.Path(path_type=Path, dir_okay=False),
                                  help="Write to a file.")  # fmt: skip


def _config(path: Path | None) -> LoadedConfig:
    return load_config(path or default_config())


def _write_output(text: str, output: Path | None, *records: Path) -> None:
    if output is None:
        _echo(text, nl=False)
        return
    write_report_file(text, output, *records)
    _echo(f"Wrote {output}", err=True)


def _write_report(
    run_dir: Path, record: RunRecord, write: Callable[[], None], how: list[str]
) -> None:
    """Write a finished run's report, then say where its record is (exit 1 if it did not
    complete); if the report fails, the run is still saved: say where, and how to write
    its report later (`how`: render's options)."""
    try:
        write()
    except LocaltableError as exc:
        _lines(out.run_end(run_dir, record, failure=False), err=True)
        raise report_not_written(exc, run_dir, record.run_id, how) from None
    _lines(out.run_end(run_dir, record), err=True)
    if record.status != "complete":
        sys.exit(1)


def _option(name: str, value: Path | None) -> list[str]:
    return [name, str(value)] if value is not None else []


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="localtable")
def cli() -> None:
    """localtable: offline AI roundtable debates between local GGUF models."""


@cli.command()
@click.argument("question", required=False)
@click.option("--file", "question_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the question from a file.")  # fmt: skip
@click.option("--panel", help="Panel from models.toml (default: [debate] panel).")
@click.option("--rounds", type=click.IntRange(1, 10), help="Number of debate rounds.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Run seed.")
@config_option
@runs_dir_option
@format_option
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the rendered debate to this file instead of stdout.")  # fmt: skip
@template_option
@click.option("--verify", is_flag=True, help="Re-hash every model file before the run.")
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="Reuse each panelist's evaluated prompt prefix across rounds.")  # fmt: skip
@click.option(
    "--parallel-turns", type=click.IntRange(0, 8),
    help="Turns of a round run at the same time, at most; 0 = as many as the cores run "
    "well (default: [debate] parallel_turns, else 0). The transcript is the same.",
)  # fmt: skip
@decode_option
@protocol_option
@vote_option
@memory_budget_option
@quiet_option
@user_errors
def debate(
    question: str | None, question_file: Path | None, panel: str | None, rounds: int | None,
    seed: int | None, config_path: Path | None, runs_dir: Path, fmt: str, output: Path | None,
    template_path: Path | None, verify: bool, reuse: bool, parallel_turns: int | None,
    decode: Literal["sequential", "batched"] | None, protocol_spec: str | None, vote: int,
    memory_budget: str | None, quiet: bool,
) -> None:  # fmt: skip
    """Run a debate on QUESTION ('-' reads stdin) and print it.

    Example: localtable debate "Should cities ban cars from their centres?" --rounds 2
    """
    from localtable.machine import parse_size
    from localtable.protocols import chosen_protocol
    from localtable.session.run import DebateRequest, read_question, run_debate

    budget = parse_size(memory_budget) if memory_budget is not None else None
    loaded = _config(config_path)
    defaults = loaded.config.debate
    text = read_question(question, question_file, defaults.question)
    req = DebateRequest(
        question=text, panel=panel or defaults.panel, rounds=rounds or defaults.rounds,
        seed=defaults.seed if seed is None else seed, runs_dir=runs_dir, verify=verify,
        reuse_prefix=reuse, memory_budget=budget, decode=decode or defaults.decode,
        parallel_turns=defaults.parallel_turns if parallel_turns is None else parallel_turns,
        protocol=chosen_protocol(protocol_spec, loaded), vote=vote,
    )  # fmt: skip
    templates, layout = user_templates(template_path)
    check_layout(templates, fmt, layout)  # a broken template fails now, not after the run
    check_output(output)  # and so does a path the report cannot go to
    progress, text_sink = out.turn_printers(quiet, _stderr)  # stderr: stdout is the same
    run_dir, record = run_debate(
        req, loaded, TemplateSet(), progress, text=text_sink,
        notice=lambda text: _echo(f"Note: {text}", err=True),
        # the run's record before its first turn, with this panel's models and backends:
        # a layout that cannot render them fails now, not after the debate
        before_turns=lambda header: render(header, fmt, templates, layout),
    )  # fmt: skip
    how = ["--format", fmt, *_option("--template", template_path), *_option("--output", output)]
    _write_report(
        run_dir, record, lambda: _write_output(render(record, fmt, templates, layout), output),
        how,
    )  # fmt: skip


@cli.command("render")
@click.argument("run")
@format_option
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False))
@runs_dir_option
@template_option
@user_errors
def render_cmd(run: str, fmt: str, output: Path | None, runs_dir: Path,
               template_path: Path | None) -> None:  # fmt: skip
    """Re-render a stored run (an id, a run folder or its record.json) without re-running it.

    Example: localtable render 20261126-101500-a1b2c3 --format md
    """
    run_dir = find_run(run, runs_dir)
    check_output(output, run_dir / RECORD_FILE)  # never over the record it renders
    record = read_record(run_dir)
    templates, layout = user_templates(template_path)
    record, warning = changed_after_run(record, fmt)
    if warning is not None:  # a shared record edited after its run: say so, and in the report
        _say(warning)
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
    _lines(out.models_table(model_statuses(loaded, verify=verify)))


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
    names: tuple[str, ...], panel: str | None, pull_all: bool, config_path: Path | None,
    quiet: bool, connect_timeout: float, read_timeout: float,
) -> None:  # fmt: skip
    """Download Hub models once, verify their sha256 and pin them in models.lock.

    The only command that uses the network. Example: localtable pull --panel hub-small
    """
    from localtable.models import hub

    loaded = _config(config_path)
    wanted = hub.models_to_pull(loaded, names, panel, pull_all)
    if not wanted:
        _echo("Nothing to pull: no Hub models there.", err=True)
        return
    summary = hub.pull(
        loaded, wanted, progress=not quiet,
        on_result=lambda result: _echo(out.pull_line(result), err=True),
        connect_timeout=connect_timeout, read_timeout=read_timeout,
    )  # fmt: skip
    _echo(out.pull_summary(summary), err=True)
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.argument("run")
@runs_dir_option
@config_option
@format_option
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--allow-engine-change", is_flag=True,
              help="Continue even if llama-cpp-python's build differs from the run's.")  # fmt: skip
@allow_url_option
@quiet_option
@user_errors
def resume(
    run: str, runs_dir: Path, config_path: Path | None, fmt: str, output: Path | None,
    allow_engine_change: bool, allow_urls: tuple[str, ...], quiet: bool,
) -> None:  # fmt: skip
    """Continue an interrupted or failed run from its last finished turn.

    The finished record has the same turns, byte for byte, as the run done in
    one go. Example: localtable resume 20261126-101500-a1b2c3
    """
    from localtable.batch.run import check_not_in_live_batch
    from localtable.session.rerun import allowed_urls, resume_run

    allowed = allowed_urls(allow_urls)
    run_dir = find_run(run, runs_dir)
    check_not_in_live_batch(run_dir)
    check_output(output, run_dir / RECORD_FILE)  # before the run, never over its record
    loaded = load_optional_config(config_path, default_config())
    progress, text_sink = out.turn_printers(quiet, _stderr)
    record = resume_run(
        run_dir, loaded, TemplateSet(), progress, text=text_sink,
        allow_engine_change=allow_engine_change, allow_urls=allowed,
    )  # fmt: skip
    _write_report(
        run_dir, record,
        lambda: _write_output(render(record, fmt, TemplateSet()), output, run_dir / RECORD_FILE),
        ["--format", fmt, *_option("--output", output)],
    )  # fmt: skip


@cli.command()
@click.argument("run")
@runs_dir_option
@config_option
@click.option("--allow-engine-change", is_flag=True,
              help="Replay even if llama-cpp-python's build differs from the run's.")  # fmt: skip
@allow_url_option
@quiet_option
@user_errors
def replay(
    run: str, runs_dir: Path, config_path: Path | None, allow_engine_change: bool,
    allow_urls: tuple[str, ...], quiet: bool,
) -> None:  # fmt: skip
    """Re-run a recorded debate and compare every output byte for byte.

    Prints "identical" and the transcript hash (exit 0), or the first turn and
    token where the replay diverges (exit 1). Example: localtable replay 20261126-101500-a1b2c3
    """
    from localtable.session.rerun import allowed_urls, replay_run

    allowed = allowed_urls(allow_urls)
    run_dir = find_run(run, runs_dir)
    report = replay_run(
        run_dir, runs_dir, load_optional_config(config_path, default_config()), TemplateSet(),
        ProgressPrinter(quiet, _stderr), allow_engine_change=allow_engine_change,
        allow_urls=allowed,
    )  # fmt: skip
    err, verdict = out.replay_lines(report)
    _lines(err, err=True)
    _lines(verdict)
    if not report.identical:
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
    _lines(out.runs_table(listing))


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
@decode_option
@protocol_option
@vote_option
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
@click.option("--group", type=click.IntRange(1, 64), default=1, show_default=True,
              help="With --decode batched: one worker decodes the rounds of N debates together "
              "(throughput; each record resumes and replays only with its group).")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr; a worker that refuses "
              "or dies and a debate that errs still show.")  # fmt: skip
@user_errors
def batch(
    questions_file: Path | None, task: str | None, limit: int | None, seeds: str | None,
    panel: str | None, rounds: int | None, name: str | None, config_path: Path | None,
    runs_dir: Path, fmt: str, verify: bool, reuse: bool,
    decode: Literal["sequential", "batched"] | None, protocol_spec: str | None, vote: int,
    memory_budget: str | None, allow_engine_change: bool, workers: int,
    ray_address: str | None, quiet: bool, group: int,
) -> None:  # fmt: skip
    """Run every question of a JSONL or TOML file (or a built-in task) over seeds.

    One run record per (question, seed) in RUNS_DIR/NAME/, indexed in batch.json.
    Run the same command again to skip finished debates and resume an
    interrupted one. Prints the accuracy table when questions have answer keys.
    With --workers N, N debates run at once, each in a worker with its own
    models; with --ray, on a Ray cluster. The records are the same either way.
    Example: localtable batch --task arithmetic --limit 5 --seeds 1 --rounds 2 --workers 2
    """
    from localtable.batch.pools import run_on_workers
    from localtable.batch.run import BatchRequest, parse_seeds
    from localtable.machine import available_cores, default_budget, parse_size
    from localtable.protocols import chosen_protocol
    from localtable.research.reports import score_report
    from localtable.research.scoring import NothingToScore
    from localtable.research.tasks import questions_of

    questions = questions_of(questions_file, task)
    loaded = _config(config_path)
    defaults = loaded.config.debate
    req = BatchRequest(
        questions=questions.limited(limit),
        seeds=parse_seeds(seeds) if seeds is not None else [defaults.seed],
        panel=panel or defaults.panel, rounds=rounds or defaults.rounds, runs_dir=runs_dir,
        name=name, verify=verify, reuse_prefix=reuse, decode=decode or defaults.decode,
        memory_budget=parse_size(memory_budget) if memory_budget is not None else None,
        parallel_turns=defaults.parallel_turns, protocol=chosen_protocol(protocol_spec, loaded),
        vote=vote, group=group,
    )  # fmt: skip
    loaded.config.panel(req.panel)  # an unknown panel fails before anything is written
    printer = BatchPrinter(quiet, _stderr)
    try:
        result = run_on_workers(
            req, loaded, printer, workers=workers, ray_address=ray_address,
            allow_engine_change=allow_engine_change, cores=available_cores(),
            machine_budget=default_budget(), notice=lambda text: _echo(f"Note: {text}", err=True),
        )  # fmt: skip
    finally:
        printer.close()
    _lines(out.batch_summary(result), err=True)
    result.check_some_ran()
    with contextlib.suppress(NothingToScore):  # no answer keys: no accuracy table
        _echo(score_report([str(result.batch_dir)], runs_dir, fmt), nl=False)  # type: ignore[arg-type]
    if result.count("error"):
        sys.exit(1)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice([*SCORE_FORMATS, "json"]), default="text",
              show_default=True)  # fmt: skip
@output_file_option
@runs_dir_option
@click.option("--answer-rule", metavar="RULE", help="Read each free-text reply again by this "
              "answer rule: last_number or boxed_or_last_number (default: as run).")  # fmt: skip
@user_errors
def score(targets: tuple[str, ...], fmt: str, output: Path | None, runs_dir: Path,
          answer_rule: str | None) -> None:  # fmt: skip
    """Accuracy of scored runs: single panelists, self-consistency and the debate, with
    three tie rules, paired tests (McNemar) and flips; free text's parse rates.

    TARGETS are batch folders, run folders or run ids. Example: localtable score runs/arithmetic
    """
    from localtable.research.reports import score_report

    text = score_report(list(targets), runs_dir, fmt, answer_rule)  # type: ignore[arg-type]
    _write_output(text, output)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "md", "csv", "html"]),
              default="text", show_default=True)  # fmt: skip
@output_file_option
@runs_dir_option
@user_errors
def compare(targets: tuple[str, ...], fmt: str, output: Path | None, runs_dir: Path) -> None:
    """How the panelists' views differ across runs and batches.

    Final-round agreement of every pair (a matrix; a heatmap in HTML), who
    changed answer how often and towards whom, and every run's final answers
    side by side. Example: localtable compare runs/arithmetic --format html --output cmp.html
    """
    from localtable.research.reports import comparison_report

    text = comparison_report(list(targets), runs_dir, fmt)  # type: ignore[arg-type]
    _write_output(text, output)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "md"]), default="text",
              show_default=True)  # fmt: skip
@output_file_option
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
    from localtable.research.reports import quality_report

    judge = None
    if judge_reasoning:  # the only part that loads a model
        from localtable.session.judge import judge_reasoning as judge_records

        judge = functools.partial(
            judge_records, templates=TemplateSet(), progress=lambda text: click.echo(text, err=True)
        )
    text = quality_report(list(targets), runs_dir, fmt, judge)  # type: ignore[arg-type]
    _write_output(text, output)


def main() -> None:
    cli(prog_name="localtable")
