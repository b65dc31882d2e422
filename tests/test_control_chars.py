"""No output passes terminal control characters from a record (issue #13, item 8):
records are shared, and `ESC ]0;title BEL` in a question set the terminal's title
when rendered as Markdown or HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from localtable.record import RunRecord, read_record, write_record
from localtable.report.render import render
from localtable.templates import TemplateSet
from tests.hostile import CONTROL, RECORD, invoke


def json_record() -> RunRecord:
    return read_record(Path(RECORD).parent)  # a version 3 record, read as version 4


ESCAPES = "\x1b]0;PWNED\x07 \x1b[2J\x9b31m\x7f\r"


def escaped_record() -> RunRecord:
    record = json_record()
    turn = record.turns[0]
    assert turn.parsed is not None
    record.turns[0] = turn.model_copy(
        update={"parsed": turn.parsed.model_copy(update={"answer": f"Yes {ESCAPES} really"})}
    )
    record.question = f"Title {ESCAPES}?"
    return record


@pytest.mark.parametrize("fmt", ["text", "md", "html", "json"])
def test_no_format_passes_terminal_control_characters(fmt: str) -> None:
    out = render(escaped_record(), fmt, TemplateSet())
    assert "PWNED" in out  # the text is kept, only the control characters go
    assert not CONTROL.search(out), CONTROL.findall(out)
    if fmt == "json":
        assert RunRecord.model_validate_json(out) == escaped_record()  # escaped, not lost


def test_runs_list_passes_no_control_characters(tmp_path: Path) -> None:
    record = escaped_record()
    write_record(tmp_path / record.run_id, record)
    code, out = invoke("runs", "--runs-dir", str(tmp_path))
    assert code == 0 and "Title" in out and not CONTROL.search(out), out
