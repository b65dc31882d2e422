"""The CLI with a layout's time limit cut to one second, so that a test of a layout
that would loop for ever ends in one second instead of LAYOUT_SECONDS.

    python -m tests.short_layout_limit render RECORD --template LAYOUT
"""

from __future__ import annotations

from localtable import templates
from localtable.cli import cli

if __name__ == "__main__":
    templates.LAYOUT_SECONDS = 1.0
    cli()
