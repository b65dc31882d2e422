"""The package's layers: imports point one way, and reading never loads a backend."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "localtable"

# What each part of the package may import from localtable (besides itself). The
# data path: config -> models -> backends -> debate -> session -> record -> report.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "safefiles": set(),
    "storage": {"errors", "safefiles"},
    "runlock": {"errors", "safefiles"},
    "stopsignals": set(),
    "template_limits": set(),
    "config": {"errors", "safefiles"},
    "templates": {"errors", "template_limits"},
    "record_upgrade": set(),
    "record": {"errors", "storage", "record_upgrade", "runlock"},
    "models": {"config", "errors", "storage", "safefiles"},
    "backends": {"config", "errors", "record", "templates", "template_limits", "models", "storage"},
    "debate": {"backends.base", "record", "templates", "errors"},
    "session": {
        "backends", "config", "debate", "errors", "record", "templates", "runlock",
        "stopsignals", "__init__",
    },
    "research": {
        "config", "debate", "errors", "record", "storage", "templates", "session", "runlock",
        "safefiles",
    },
    "report": {"record", "templates", "errors"},
}  # fmt: skip
# Modules a layer may import without what lies under them: config asks the backend
# registry (localtable/backends/__init__.py, names and import paths) which model
# validates a source kind, and sees no backend.
ALLOWED_EXACTLY: dict[str, set[str]] = {"config": {"backends"}}
# Only these may import llama.cpp's backend, and only the CLI knows click.
MAY_IMPORT_LLAMACPP = {"backends", "bench", "benchload", "benchbatch", "cli"}


def layer_of(module: str) -> str:
    """'localtable.backends.llamacpp.worker' -> 'backends'; top-level modules by name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def modules() -> dict[str, list[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found[name] = imports(path)
    return found


def test_imports_point_one_way() -> None:
    problems = []
    for module, imported in modules().items():
        layer = layer_of(module)
        if layer not in ALLOWED:
            continue  # the CLI and the benchmark sit on top and may import anything
        for target in imported:
            if not target.startswith("localtable.") or target == "localtable.__version__":
                continue
            rest = target.removeprefix("localtable.")
            if rest.startswith(layer + ".") or rest == layer:
                continue
            allowed = ALLOWED[layer]
            if rest in ALLOWED_EXACTLY.get(layer, set()):
                continue
            if not any(rest == a or rest.startswith(a + ".") for a in allowed):
                problems.append(f"{module} imports {target}")
    assert problems == []


def test_only_the_cli_knows_click_and_only_backends_know_llama_cpp_and_one_module_ray() -> None:
    for module, imported in modules().items():
        layer = layer_of(module)
        if any(t == "click" or t.startswith("click.") for t in imported):
            assert module == "localtable.cli", module
        if any(t.startswith("llama_cpp") for t in imported):  # the benchmark's bare side too
            assert module.startswith("localtable.backends.llamacpp") or layer == "bench", module
        if any(t.startswith("localtable.backends.llamacpp") for t in imported):
            assert layer in MAY_IMPORT_LLAMACPP, module
        if any(t == "ray" or t.startswith("ray.") for t in imported):  # an optional extra
            assert module in ("localtable.research.raycluster", "localtable.benchbatch"), module


def test_the_web_app_sits_on_top() -> None:
    """serve/ reads records and drives Sessions; nothing below it imports it, and only
    it knows the web stack."""
    for module, imported in modules().items():
        inside = module.startswith("localtable.serve")
        if any(t.startswith("localtable.serve") for t in imported) and not inside:
            assert module == "localtable.cli", module
        if any(t.split(".")[0] in ("starlette", "uvicorn") for t in imported):
            assert inside, module
        if inside:
            assert not any(t == "localtable.cli" or t.startswith("click") for t in imported), module


def test_no_import_cycles_between_modules() -> None:
    graph = {
        m: {t for t in imported if t in modules_set and t != m} for m, imported in modules().items()
    }
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])


modules_set = set(modules())

CHILD = """
import sys
from click.testing import CliRunner
from localtable.cli import cli

runs = sys.argv[1]
for args in (["render", "{run}", "--runs-dir", runs, "--format", fmt] for fmt in ("text", "md",
             "html", "json")):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
for args in (["score", "{run}", "--runs-dir", runs], ["compare", "{run}", "--runs-dir", runs],
             ["quality", "{run}", "--runs-dir", runs]):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code in (0, 1, 2), result.output  # 2: nothing to score
backend = ("llama_cpp", "localtable.backends.llamacpp")
loaded = sorted(m for m in sys.modules if m.startswith(backend))
print("loaded:", loaded)
"""


def test_render_score_compare_and_quality_load_no_backend(tmp_path: Path) -> None:
    """Reading records is for machines without llama.cpp too: nothing of a backend loads."""
    run = tmp_path / "real-run"
    run.mkdir()
    stored = (REPO / "tests" / "data" / "record-v2-real.json").read_text(encoding="utf-8")
    (run / "record.json").write_text(stored, encoding="utf-8")
    code = CHILD.replace("{run}", "real-run")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout, proc.stdout
