"""A parser for Java ``.properties`` text (config.properties, serving.properties).

Follows ``java.util.Properties.load``: ``#``/``!`` comments, ``=``/``:``/whitespace
separators, backslash escapes (``\\t \\n \\r \\f \\uXXXX``, any other char stands for
itself), and lines continued by an odd number of trailing backslashes, with the next
line's leading whitespace dropped. Later keys win, as in Java.
"""

from __future__ import annotations

import re
from pathlib import Path

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_WHITESPACE = " \t\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending: str | None = None
    # Only \n, \r and \r\n end a line (str.splitlines would also split on \f, \v, ...).
    for raw in _LINE_BREAK.split(text):
        line = raw.lstrip(_WHITESPACE) if pending is not None else raw
        if pending is None:
            stripped = line.lstrip(_WHITESPACE)
            if not stripped or stripped[0] in "#!":
                continue
            line = stripped
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending = (pending or "") + line[:-1]
            continue
        lines.append((pending or "") + line)
        pending = None
    if pending is not None:
        lines.append(pending)
    return lines


def _unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n == "u":
            digits = s[i + 2 : i + 6]
            if not _HEX4.fullmatch(digits):  # exactly four hex digits, as Java requires
                raise ValueError(f"Malformed \\uxxxx encoding: \\u{digits}")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(n, n))
        i += 2
    text = "".join(out)
    if any("\ud800" <= c <= "\udfff" for c in text):
        # Java strings are UTF-16: \uD83D\uDE00 is one character; join such pairs.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return text


def _split(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in "=:" or c in _WHITESPACE:
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":") and (i >= len(line) or line[i] in _WHITESPACE or line[i] in "=:"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return _unescape(key), _unescape(rest)


def parse_properties(text: str) -> dict[str, str]:
    """Parse ``.properties`` text into an ordered dict (later duplicates win)."""
    result: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split(line)
        result[key] = value
    return result


def read_properties(path: Path) -> dict[str, str]:
    """Read a ``.properties`` file (ISO-8859-1 as Java does, unless it decodes as UTF-8)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse_properties(text)
