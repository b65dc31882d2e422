"""The README stays a front door (short, linking every page of docs/), and every relative
link of README.md, SECURITY.md and docs/*.md reaches a file, and a heading where it names
one."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

README_MAX_LINES = 250
PAGES = [REPO / "README.md", REPO / "SECURITY.md", *sorted(REPO.glob("docs/*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`(?:[^`\n]|\n(?!\n))*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code marks and link targets dropped),
    lower case, only letters, digits, spaces, `-` and `_`, spaces made `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", prose(path.read_text(encoding="utf-8")))


def test_the_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, (
        f"README.md has {lines} lines; keep it under {README_MAX_LINES}: move detail to docs/"
    )


def test_the_readme_links_every_page_of_the_manual() -> None:
    linked = {target.split("#")[0] for target in links(REPO / "README.md")}
    for page in sorted(REPO.glob("docs/*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


def test_every_relative_link_reaches_a_file_and_heading() -> None:
    checked = 0
    for page in PAGES:
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(REPO)}: link {target}"
            assert dest.is_file(), f"{where}: no file {dest}"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{where}: no heading #{anchor} in {dest.name}"
            checked += 1
    assert checked > 50  # the pattern finds the links at all


def test_slug_follows_github() -> None:
    assert slug("`localtable debate [QUESTION]`") == "localtable-debate-question"
    assert slug("Resuming a run: `localtable resume RUN`") == "resuming-a-run-localtable-resume-run"
    assert slug("Decoding a round together (issue #28)") == "decoding-a-round-together-issue-28"
    assert slug("Models of the offline panels") == "models-of-the-offline-panels"
