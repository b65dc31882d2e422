"""The report side of scripts/gpu_check.py (issue #16), without a GPU or a model.

The configs it writes must pass localtable's own validation, the divergence
finder must name the first differing output, and the table/JSON verdict must
fail on a failed required check but not on a measured difference.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from localtable.config import load_config
from tests.conftest import MODELS_TOML

ROOT = Path(__file__).resolve().parent.parent
RECORD = Path(__file__).parent / "data" / "record.json"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gc = _load()


def record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORD.read_text())
    return data


def test_tiny_config_is_a_valid_models_toml(tmp_path: Path) -> None:
    model = tmp_path / "trim.gguf"
    text = gc.tiny_config(model, "ab" * 32, 1234, -1, 'Say "yes"\nor no?', 3, 7)
    path = tmp_path / "models.toml"
    path.write_text(text)
    config = load_config(path).config
    assert config.debate.panel == "tiny" and config.debate.rounds == 3 and config.debate.seed == 7
    assert config.debate.question == 'Say "yes"\nor no?'
    assert {m.chat for m in config.models.values()} == {"template", "completion"}
    assert all(m.gpu_layers == -1 for m in config.models.values())
    # one file, two loads: the engine keys a load by file, n_ctx, threads and GPU layers
    assert len({m.n_ctx for m in config.models.values()}) == 2
    panel = config.panels["tiny"]
    assert [p.model for p in panel.panelists] == ["trim-chat", "trim-completion", "trim-chat"]


def test_with_gpu_layers_sets_every_model_of_the_bundled_config(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(gc.with_gpu_layers(MODELS_TOML.read_text(), -1))
    config = load_config(path).config
    assert config.models and all(m.gpu_layers == -1 for m in config.models.values())
    # the multi-line inline table of the Gemma parts survived the insertion
    assert config.models["gemma3-270m"].sha256.startswith("a5fd3b62")
    with pytest.raises(ValueError, match="already sets gpu_layers"):
        gc.with_gpu_layers(path.read_text(), 0)


def test_first_divergence_names_the_first_differing_output() -> None:
    a = record()
    assert gc.first_divergence(a, copy.deepcopy(a)) is None
    b = copy.deepcopy(a)
    turn = b["turns"][4]
    text = turn["generation"]["raw_output"]
    turn["generation"]["raw_output"] = text[:10] + "#" + text[11:]
    b["turns"][7]["generation"]["raw_output"] = "later and different"
    found = gc.first_divergence(a, b)
    assert found is not None
    assert found["where"] == f"round {turn['round']} {turn['panelist']}"
    assert found["what"] == "output differs" and found["char"] == 10 and found["index"] == 4
    assert found["b"][10] == "#"
    c = copy.deepcopy(a)
    c["summary"]["generation"]["prompt_sha256"] = "f" * 64
    assert gc.first_divergence(a, c) == {
        "where": "summary",
        "what": "prompt tokens differ",
        "index": len(a["turns"]),
    }
    d = copy.deepcopy(a)
    del d["turns"][-1]
    shorter = gc.first_divergence(a, d)
    assert shorter is not None and shorter["index"] == len(a["turns"]) - 1


def test_record_figures_add_up_the_generations() -> None:
    rec = record()
    figures = gc.record_figures(rec)
    gens = [t["generation"] for t in rec["turns"] if t["generation"]]
    gens.append(rec["summary"]["generation"])
    assert len(gens) < len(rec["turns"]) + 1  # the fixture has a turn that failed before generating
    assert figures["turns"] == len(rec["turns"]) and figures["generations"] == len(gens)
    assert figures["prompt_tokens"] == sum(g["prompt_tokens"] for g in gens)
    assert figures["completion_tokens"] == sum(g["completion_tokens"] for g in gens)
    assert figures["transcript_sha256"] == rec["transcript_sha256"]
    failed = sum(1 for t in rec["turns"] if t["status"] != "ok")
    assert figures["status"] == "complete" and figures["failed_turns"] == failed > 0


def result(*checks: tuple[str, str]) -> dict[str, Any]:
    return {
        "mode": "gpu",
        "finished_at": "2026-12-01T00:00:00+00:00",
        "machine": {"gpu": "NVIDIA H200", "cpu": "x", "cores": 16, "python": "3.12.3"},
        "build": {"version": "0.3.36", "how": "built", "seconds": 200, "cmake_args": "-DX=1"},
        "checks": [{"name": n, "result": r, "detail": ""} for n, r in checks],
        "speed": {
            "gpu": {"prompt_tokens_per_s": 12345.6, "gen_tokens_per_s": 456.78, "load_seconds": 1},
            "cpu": {"error": "exit 1"},
        },
        "debate_wall_seconds": {"tiny panel, gpu": 3.21},
    }


def test_a_measured_difference_does_not_fail_the_check_but_a_failed_one_does() -> None:
    measured = result(("replay", gc.PASS), ("reuse", gc.DIFFERS), ("default", gc.SKIP))
    assert gc.overall(measured["checks"]) == "pass"
    failed = result(("replay", gc.FAIL), ("reuse", gc.SAME))
    assert gc.overall(failed["checks"]) == "FAIL (replay)"


def test_table_shows_checks_speed_and_wall_times() -> None:
    data = result(("tiny panel: replay says identical (gpu)", gc.PASS))
    data["overall"] = gc.overall(data["checks"])
    table = gc.build_table(data)
    lines = table.splitlines()
    assert "machine: NVIDIA H200; x, 16 cores; Python 3.12.3" in lines
    assert any(line.startswith("tiny panel: replay says identical (gpu)") and " pass " in line
               for line in lines)  # fmt: skip
    speed = next(line for line in lines if line.startswith("prompt tokens/s"))
    assert speed.split() == ["prompt", "tokens/s", "12,346", "error"]
    gen = next(line for line in lines if line.startswith("generated tokens/s"))
    assert gen.split()[-2:] == ["457", "error"]
    assert any("debate wall time, tiny panel, gpu" in line and "3.2 s" in line for line in lines)
    assert lines[-1] == "overall: pass"


def test_record_figures_read_a_version_3_record() -> None:
    """The check reads records of the schema localtable writes now (backends.llamacpp,
    models[].settings), not only version 2's `engine`."""
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert record["schema_version"] == 3
    figures = gc.record_figures(record)
    assert figures["gpu_layers"] == [0]
    assert figures["system_info"] == record["backends"]["llamacpp"]["system_info"]


@dataclass
class ScriptedRunner:
    """Runner's debate/cli/check as panel_checks uses them, every run complete."""

    debates: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def debate(
        self, label: str, config: Path, rounds: int, seed: int,
        extra: Sequence[str] = (), env: Any = None, wrapper: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        self.debates.append((label, tuple(extra)))
        on = "--reuse" in extra
        return {"exit": 0, "status": "complete", "wall_seconds": 1.0, "run_id": label,
                "runs_dir": "runs", "transcript_sha256": "ab" * 32, "prompt_tokens": 100,
                "prompt_eval_tokens": 40 if on else 100, "_record": {}}  # fmt: skip

    def cli(self, label: str, args: list[str], env: Any = None) -> tuple[int, str, float]:
        return 0, "identical " + "ab" * 32, 1.0

    def check(self, name: str, result: str, detail: str = "", **figures: Any) -> None:
        self.checks.append(f"{name} {result}")


def test_the_models_toml_panel_runs_the_tiny_panel_in_every_debate(tmp_path: Path) -> None:
    """models.toml's [debate] panel is the Qwen default: each debate of the check asks
    for the tiny panel by name, and the checks say which panel they are about."""
    runner = ScriptedRunner()
    extra = ["--panel", gc.TINY_PANEL]
    first = gc.panel_checks(runner, "models-tiny", tmp_path / "m.toml", "cpu", 3, 42, {},
                            extra=extra, title="models.toml tiny panel")  # fmt: skip
    assert first is not None and gc.TINY_PANEL == "tiny"
    assert runner.debates and all(e[:2] == tuple(extra) for _, e in runner.debates)
    assert [label for label, _ in runner.debates][0] == "models-tiny-cpu-1"
    assert len(runner.checks) == 4
    assert all(c.startswith("models.toml tiny panel: ") for c in runner.checks)
    assert runner.checks[-1].endswith("(cpu) identical")
