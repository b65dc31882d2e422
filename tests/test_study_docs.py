"""docs/research.md shows exactly what `localtable score` prints for the study records
shipped in studies/, under each answer rule, and nothing while none are shipped."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from localtable.cli import cli
from localtable.research.batchindex import INDEX_FILE
from localtable.research.studypack import pack
from tests.conftest import REPO
from tests.test_studypack import study  # noqa: F401 (a fixture)

RESEARCH = REPO / "docs" / "research.md"
# <!-- study-score: FOLDER [OPTIONS] --> and the block under it
BLOCK = re.compile(r"^<!-- study-score: (.+?) -->\n```text\n(.*?)^```$", re.M | re.S)
# The study's tables the docs must have (issue #25): the debate under both rules, and the
# roundtable arm
EXPECTED = [
    "studies/du2023-arith",
    "studies/du2023-arith --answer-rule boxed_or_last_number",
    "studies/du2023-arith-roundtable",
]


def blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in BLOCK.finditer(text)}


def score_output(root: Path, spec: str) -> str | None:
    """What `localtable score` prints for a block's folder and options, or None when no
    study is shipped there."""
    folder, *options = shlex.split(spec)
    if not (root / folder / INDEX_FILE).is_file():
        return None
    result = CliRunner().invoke(cli, ["score", str(root / folder), *options],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def mismatches(text: str, root: Path) -> list[str]:
    """Each block that is not what score prints for it (empty while nothing is shipped)."""
    out = []
    for spec, shown in blocks(text).items():
        printed = score_output(root, spec)
        if printed is None and shown:
            folder = root / spec.split()[0]
            out.append(f"{spec}: the docs show a table, but {folder} is not shipped")
        elif printed is not None and shown != printed:
            out.append(f"{spec}: the docs do not show what `localtable score {spec}` prints")
    return out


def filled(text: str, root: Path) -> str:
    """The page with each block set to what score prints for it now (empty: not shipped)."""

    def fill(m: re.Match[str]) -> str:
        printed = score_output(root, m.group(1)) or ""
        return f"<!-- study-score: {m.group(1)} -->\n```text\n{printed}```"

    return BLOCK.sub(fill, text)


def test_the_docs_name_the_shipped_study_under_both_rules() -> None:
    found = blocks(RESEARCH.read_text(encoding="utf-8"))
    assert sorted(found) == sorted(EXPECTED)
    section = RESEARCH.read_text(encoding="utf-8").split("### The 100-item study", 1)[1]
    assert "make study-pack" in section and "studies/<batch>/" in section


def test_the_docs_show_what_score_prints_for_the_shipped_records() -> None:
    assert mismatches(RESEARCH.read_text(encoding="utf-8"), REPO) == []


def test_the_check_fails_on_a_changed_number_and_on_an_unshipped_table(
    study: tuple[list[str], Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, batch = study
    root = tmp_path / "repo"
    pack(batch, root / "studies" / "sums")
    specs = ["studies/sums", "studies/sums --answer-rule boxed_or_last_number"]
    printed = [score_output(root, spec) for spec in specs]
    assert all(printed) and printed[0] != printed[1]  # the two rules differ here
    page = "".join(f"<!-- study-score: {spec} -->\n```text\n{out}```\n\n"
                   for spec, out in zip(specs, printed, strict=True))  # fmt: skip
    assert mismatches(page, root) == []
    first = printed[0] or ""
    changed = page.replace(first, first.replace("2 scored debates", "3 scored debates"), 1)
    assert mismatches(changed, root) == [
        "studies/sums: the docs do not show what `localtable score studies/sums` prints"
    ]
    empty = f"<!-- study-score: {specs[0]} -->\n```text\n```\n"
    assert mismatches(empty, root) == [
        "studies/sums: the docs do not show what `localtable score studies/sums` prints"
    ]
    unshipped = "<!-- study-score: studies/other -->\n```text\nAccuracy: 99%\n```\n"
    assert mismatches(unshipped, root) == [
        f"studies/other: the docs show a table, but {root}/studies/other is not shipped"
    ]
    # make study-docs writes what the check wants, and nothing for what is not shipped
    assert filled(changed + empty + unshipped, root) == page + (
        f"<!-- study-score: {specs[0]} -->\n```text\n{first}```\n"
        "<!-- study-score: studies/other -->\n```text\n```\n"
    )


if __name__ == "__main__":  # make study-docs: the blocks of docs/research.md, filled
    RESEARCH.write_text(filled(RESEARCH.read_text(encoding="utf-8"), REPO), encoding="utf-8")
