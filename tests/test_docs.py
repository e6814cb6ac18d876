"""The documents the code cites live in the repository: every ``spec §N.N`` in djl/
names a section of docs/spec.md, and the README links docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (".py", ".pyx", ".pxi", ".pyi")


def spec_sections() -> set[str]:
    sections = set()
    for line in (ROOT / "docs" / "spec.md").read_text().splitlines():
        match = re.match(r"#{2,3} (\d+(?:\.\d+)*)[. ]", line)
        if match:
            sections.add(match.group(1))
    return sections


def cited_sections() -> dict[str, set[str]]:
    """Section → the files citing it: ``§N.N`` anywhere but after an RFC number."""
    cited: dict[str, set[str]] = {}
    for path in sorted((ROOT / "djl").rglob("*")):
        if path.suffix not in SOURCES:
            continue
        for match in re.finditer(r"(RFC \d+ )?§(\d+(?:\.\d+)*)", path.read_text()):
            if match.group(1) is None:
                cited.setdefault(match.group(2), set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_section_exists() -> None:
    sections = spec_sections()
    assert {"0", "1.4", "3.8", "3.10", "6.8", "9"} <= sections  # the parser reads headings
    cited = cited_sections()
    assert len(cited) > 40
    missing = {section: files for section, files in cited.items() if section not in sections}
    assert missing == {}


def test_the_readme_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("spec.md", "architecture.md", "worker_protocol.md"):
        assert f"(docs/{name})" in readme
        assert (ROOT / "docs" / name).is_file()
