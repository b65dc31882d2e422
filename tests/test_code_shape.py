"""The shape of the code: modules and functions a reader can hold in their head."""

from __future__ import annotations

import ast

from tests.conftest import REPO
from tests.test_layers import imports

PACKAGE = REPO / "localtable"
DEBATE = PACKAGE / "debate"
CLI_MAX_LINES = 600  # issue #30: thin click commands; what they print is cli_output.py
# A function longer than this (from its def line to its last line, docstring and
# comments included) does several things; the debate protocol had 140-line ones.
FUNCTION_MAX_LINES = 60


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of each function or method over FUNCTION_MAX_LINES,
    nested ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > FUNCTION_MAX_LINES:
                found.append((node.name, node.lineno, lines))
    return found


def test_the_debate_functions_are_at_most_60_lines() -> None:
    files = sorted(DEBATE.rglob("*.py"))
    assert files
    too_long = [
        f"{path.relative_to(REPO)}:{line} {name} is {lines} lines"
        for path in files
        for name, line, lines in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert too_long == [], f"split these (at most {FUNCTION_MAX_LINES} lines each): {too_long}"


def test_the_length_check_counts_from_def_to_the_last_line() -> None:
    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x{k} = {k}\n" for k in range(lines))

    at_limit = "def fits():\n" + body(FUNCTION_MAX_LINES - 1, "    ")
    over = "class C:\n    def over(self):\n" + body(FUNCTION_MAX_LINES, "        ")
    assert long_functions(at_limit) == []
    assert long_functions(over) == [("over", 2, FUNCTION_MAX_LINES + 1)]


def test_the_cli_stays_thin() -> None:
    lines = len((PACKAGE / "cli.py").read_text(encoding="utf-8").splitlines())
    assert lines < CLI_MAX_LINES, f"cli.py has {lines} lines: move what is not click out of it"


def test_what_the_cli_prints_is_laid_out_without_click() -> None:
    imported = imports(PACKAGE / "cli_output.py")
    assert not [t for t in imported if t == "click" or t.startswith("click.")], imported
