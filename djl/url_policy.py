"""The one decision whether a model or workflow URL may be loaded.

Every rule about a URL is applied here, to one canonical form, and nowhere else:
registration (``POST /models``, ``POST /workflows``, start-up models, the models a
workflow file names), loading on a prediction (``model_url_pattern``), redirects and the
folders the store picks inside a local directory. The store then does its I/O on the
canonical path, never on the text, so what was checked is what is opened.

Canonical form (:func:`canonical`), computed once, without I/O:

* a plain path (no scheme) is taken literally up to a ``?``; a ``file:`` URL (``file:p``,
  ``file:/p``, ``file://localhost/p``, ``file:///p``) is percent-decoded exactly once (so
  ``%2f`` is a separator). Both become an absolute path (relative ones against the
  working directory) with duplicate slashes and ``.``/``..`` segments resolved lexically,
  as the kernel would see them; the store checks the symlink-free form again
  (:func:`check_resolved`).
* an ``http(s)`` URL: scheme and host in lower case, percent-encoded unreserved
  characters decoded and other escapes in upper case (RFC 3986 §6.2.2); the path is
  otherwise left as the remote will receive it.

The rules (:func:`check`), all on that form; the text the user sent only appears in
messages:

* a URL that no source can serve: ``SourceError`` 400 (unsupported scheme, ``file:`` with
  a host, credentials in an http URL), ``IllegalArgument`` 409 (unparsable).
* dot segments: a path with a ``.`` or ``..`` segment, however many times percent-encoded
  (``%2e%2e``, ``%252e%252e``, ``.%2e``, ``..%2f``, ``..\\``, ``..;x``), is refused for
  http(s) (400: the remote would resolve it past a prefix the patterns admit) and for
  dynamic loading (404 ``Permission denied``: a pattern is written for a folder, and a
  prediction is no place to navigate the disk). A registration's local path is resolved
  instead, and its target checked.
* ``model_url_pattern`` (dynamic loading only) and ``allowed_urls``: full-match regexes
  over the canonical text: ``<path>``, ``file:<path>`` (also tried as ``file://<path>``,
  the same resource, so either spelling may be written in a pattern) or the normalised
  http URL, each followed by ``?<query>`` when there is one. A pattern that does not
  compile matches nothing (it is logged): a typo narrows what loads, never widens it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from djl.config import ServerConfig
from djl.errors import Forbidden, IllegalArgument, NotFound, SourceError

log = logging.getLogger("djl.url_policy")

__all__ = [
    "ModelUrl",
    "canonical",
    "check",
    "check_path",
    "check_resolved",
    "loads_on_prediction",
]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
#: Percent-decoding rounds when looking for dot segments: whatever decodes the path later
#: (a remote, a proxy, a second unquote) must not find one either.
_MAX_DECODE_ROUNDS = 4


@dataclass(frozen=True)
class ModelUrl:
    """A model URL in canonical form (see the module docstring)."""

    #: What the user sent: for messages (and as the registered ``modelUrl``) only.
    text: str
    #: ``""`` (a plain path), ``"file"``, ``"http"`` or ``"https"``.
    scheme: str
    #: Local: the absolute, decoded, normalised filesystem path the store opens.
    #: http(s): ``scheme://host[:port]/path``, normalised, without query or fragment.
    location: str
    #: The raw query (after ``?``), or ``""``.
    query: str
    #: Whether the path had a ``.``/``..`` segment in any percent-decoding of it.
    dotted: bool

    @property
    def is_local(self) -> bool:
        return self.scheme in ("", "file")

    @property
    def fetch(self) -> str:
        """http(s): the URL to request."""
        return self.location + (f"?{self.query}" if self.query else "")

    @property
    def spellings(self) -> tuple[str, ...]:
        """The canonical texts a pattern is matched against (any match admits)."""
        suffix = f"?{self.query}" if self.query else ""
        if self.scheme == "file":
            return (f"file:{self.location}{suffix}", f"file://{self.location}{suffix}")
        return (self.location + suffix,)


def canonical(url: str) -> ModelUrl:
    """``url`` in canonical form; no I/O. Raises ``SourceError`` 400 for a URL no source
    serves, ``IllegalArgument`` 409 for an unparsable one."""
    match = _SCHEME.match(url)
    if match is None:
        path, _, query = url.partition("?")
        return ModelUrl(url, "", _local_path(path), query, _has_dot_segment(path))
    try:
        parts = urlsplit(url)
    except ValueError:
        raise IllegalArgument.invalid_url(url) from None
    scheme = match.group(1).lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"file: URLs with a host are not supported: {url}", status=400)
        decoded = unquote(parts.path)  # exactly once: a second round is a file's own name
        dotted = _has_dot_segment(decoded)
        return ModelUrl(url, scheme, _local_path(decoded), parts.query, dotted)
    if scheme in ("http", "https"):
        if parts.username is not None or parts.password is not None:
            raise SourceError(f"Credentials in URLs are not supported: {url}", status=400)
        host = parts.netloc.lower()
        path = _ESCAPE.sub(_normalise_escape, parts.path) or "/"
        location = f"{scheme}://{host}{path}"
        return ModelUrl(url, scheme, location, parts.query, _has_dot_segment(parts.path))
    raise SourceError(f"{scheme}: URLs are not supported: {url}", status=400)


def check(url: str, config: ServerConfig, *, dynamic: bool = False) -> ModelUrl:
    """Whether ``url`` may be loaded: its canonical form if so, else the refusal raised.

    ``dynamic``: the URL came with a prediction (``model_url``), so ``model_url_pattern``
    and the dot-segment refusal apply as ``NotFound`` 404 ``Permission denied: <url>``.
    Then ``allowed_urls``: ``Forbidden`` 403 naming the URL. See the module docstring.
    """
    parsed = canonical(url)
    if parsed.dotted and parsed.scheme in ("http", "https"):
        raise SourceError(
            f"'.' and '..' path segments are not supported in http(s) URLs: {url}", status=400
        )
    if dynamic and (parsed.dotted or not _admits((config.model_url_pattern,), parsed)):
        raise NotFound.model_url_denied(url)
    if not _admits(config.allowed_urls, parsed):
        raise Forbidden.not_allowed(url, parsed.spellings[0])
    return parsed


def loads_on_prediction(config: ServerConfig) -> bool:
    """Whether a prediction for an unknown model may load it (``model_url_pattern`` set)."""
    return bool(config.model_url_pattern)


def check_resolved(url: ModelUrl, real_path: str, config: ServerConfig) -> None:
    """``allowed_urls`` once more on the symlink-free path a local URL leads to (blocking
    callers compute ``real_path``), so a link cannot step out of an admitted folder."""
    if real_path == url.location:
        return
    resolved = replace(url, location=real_path)
    if not _admits(config.allowed_urls, resolved):
        raise Forbidden.not_allowed(url.text, resolved.spellings[0])


def check_path(url: str, config: ServerConfig) -> ModelUrl:
    """``check`` and ``check_resolved`` together, for a local URL whose target is opened
    as it is (a workflow's ``libs/`` folder); blocking: it resolves symlinks."""
    parsed = check(url, config)
    if parsed.is_local and parsed.location:
        check_resolved(parsed, os.path.realpath(parsed.location), config)
    return parsed


def _local_path(path: str) -> str:
    if not path:
        return ""
    path = re.sub(r"/{2,}", "/", os.path.join(os.getcwd(), path))
    return posixpath.normpath(path)


def _normalise_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else f"%{match.group(1).upper()}"


def _has_dot_segment(path: str) -> bool:
    """Whether ``path`` has a ``.``/``..`` segment in any of its decodings, with a
    backslash as a separator and ``;params`` ignored, as some servers do."""
    for _ in range(_MAX_DECODE_ROUNDS):
        segments = re.split(r"[/\\]", path)
        if any(segment.split(";", 1)[0] in (".", "..") for segment in segments):
            return True
        decoded = unquote(path)
        if decoded == path:
            return False
        path = decoded
    return True  # still encoded after that many rounds: nobody needs that


def _admits(patterns: Iterable[str], url: ModelUrl) -> bool:
    compiled = _compiled(tuple(patterns))
    return any(p.fullmatch(text) for p in compiled for text in url.spellings)


@lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            log.error("Ignoring invalid URL pattern %r: %s", pattern, exc)
    return tuple(compiled)
