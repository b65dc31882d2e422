"""The shape of the code: modules a reader can hold in their head."""

from __future__ import annotations

from tests.conftest import REPO
from tests.test_layers import imports

PACKAGE = REPO / "localtable"
CLI_MAX_LINES = 600  # issue #30: thin click commands; what they print is cli_output.py


def test_the_cli_stays_thin() -> None:
    lines = len((PACKAGE / "cli.py").read_text(encoding="utf-8").splitlines())
    assert lines < CLI_MAX_LINES, f"cli.py has {lines} lines: move what is not click out of it"


def test_what_the_cli_prints_is_laid_out_without_click() -> None:
    imported = imports(PACKAGE / "cli_output.py")
    assert not [t for t in imported if t == "click" or t.startswith("click.")], imported
