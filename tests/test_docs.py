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


#: A result a document cites: ``bench/results/x.json`` or ``bench/runs/x.json`` (in
#: bench/README.md also without the ``bench/``).
CITED = re.compile(r"(?:bench/)?((?:results|runs)/[\w.-]+\.json)")
#: A ratio: a number (or a range of two) before ×.
RATIO = re.compile(r"(\d+(?:\.\d+)?)(?:–(\d+(?:\.\d+)?))?×")
#: A decimal, not a version, a section or a protocol's (TorchServe 0.12, §4.4, HTTP/1.1).
# A bound after ≥/≤ is a target the passage names, not a number a run produced.
DECIMAL = re.compile(r"(?<![\w.§/])(?<!TorchServe )(?<![≥≤] )(?<![≥≤])(\d+\.\d+)(?![\w.])")


def _passages(text: str) -> list[str]:
    """Paragraphs outside code, each table row its own, code spans dropped unless they
    name a result."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", lambda m: m.group(0) if CITED.search(m.group(0)) else "",
                  text)
    passages: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        rows = [line for line in block.splitlines() if line.lstrip().startswith("|")]
        passages += rows or [block]
    return passages


def _values(data: object) -> list[float]:
    if isinstance(data, bool):
        return []
    if isinstance(data, int | float):
        return [float(data)]
    if isinstance(data, dict):
        return [v for item in data.values() for v in _values(item)]
    if isinstance(data, list):
        return [v for item in data for v in _values(item)]
    return []


def test_every_quoted_number_comes_from_a_committed_result() -> None:
    """A ratio (×) README.md or bench/README.md quotes stands next to the result it came
    from: a committed JSON saying the machine, the commit measured, the time and the load,
    and holding that number, and every decimal the passage quotes, at the precision
    quoted."""
    import json
    import subprocess

    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files", "bench"],
                                 capture_output=True, text=True, check=True).stdout.split())
    checked = 0
    for doc in ("README.md", "bench/README.md"):
        for passage in _passages((ROOT / doc).read_text()):
            quoted = [q for match in RATIO.finditer(passage) for q in match.groups() if q]
            cited = sorted(set(CITED.findall(passage)))
            if cited:
                quoted += DECIMAL.findall(passage)
            if not quoted:
                continue
            assert cited, f"{doc}: numbers without the result they came from: {passage!r}"
            values: list[float] = []
            for name in cited:
                assert f"bench/{name}" in tracked, f"{doc} cites bench/{name}, not committed"
                data = json.loads((ROOT / "bench" / name).read_text())
                machine = data.get("machine", {})
                for key in ("commit", "time", "loadavg_at_start", "nproc"):
                    assert machine.get(key), f"bench/{name}: machine.{key} missing"
                values += _values(data)
            for number in quoted:
                places = len(number.partition(".")[2])
                # A ratio quoted whole (15×) is a measured one rounded, not a count or a
                # setting that happens to be that integer.
                assert any(round(v, places) == float(number) and (places or v != int(v))
                           for v in values), f"{doc}: {number} is in none of {cited}: {passage!r}"
            checked += len(quoted)
    assert checked > 10  # the parser finds the quoted numbers
