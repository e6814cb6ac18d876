"""djl.url_policy: one canonical form, every rule applied to it."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from djl.config import ServerConfig
from djl.errors import DjlError, Forbidden, NotFound, SourceError
from djl.url_policy import canonical, check

ALLOWED = "/srv/allowed"
DYNAMIC = ServerConfig(model_url_pattern=f"file:{re.escape(ALLOWED)}/.*")
NARROW = ServerConfig(allowed_urls=(f"file:{re.escape(ALLOWED)}/.*",))

SEGMENTS = st.sampled_from([
    "a", "b", "m.tar.gz", "x%20y", "go%6fd", "", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e",
    "%2e.", "%2E%2e", "%252e%252e", "..%2f", "%2f", "a%2fb", "..%5c", "...", "%2e%2e%2f..",
    "a..b", "..;x",
])
PREFIXES = st.sampled_from(
    [f"file:{ALLOWED}/", f"file://{ALLOWED}/", f"file://localhost{ALLOWED}/", "file:/srv/"]
)


def _decision(url: str, config: ServerConfig, dynamic: bool) -> str:
    try:
        check(url, config, dynamic=dynamic)
    except DjlError as exc:
        return type(exc).__name__
    return "allowed"


def _reference_target(url: str) -> str:
    """What the kernel opens for a ``file:`` URL: decoded once, dots and slashes resolved
    (written independently of the module under test)."""
    rest = url[len("file:"):]
    if rest.startswith("//"):
        rest = rest[2:].removeprefix("localhost")
    return posixpath.normpath(re.sub("/+", "/", unquote(rest)))


@settings(max_examples=200, deadline=None)
@given(PREFIXES, st.lists(SEGMENTS, min_size=1, max_size=6))
def test_the_decision_is_the_one_made_on_the_canonical_path(prefix, segments):
    url = prefix + "/".join(segments)
    parsed = canonical(url)
    target = _reference_target(url)
    assert parsed.location == target
    canon = f"file:{quote(target)}"  # the canonical path as a URL of its own
    assert canonical(canon).location == target
    inside = target.startswith(ALLOWED + "/")
    # Registration: allowed_urls sees the canonical path, so it admits exactly the inside.
    assert _decision(url, NARROW, False) == _decision(canon, NARROW, False)
    assert (_decision(url, NARROW, False) == "allowed") == inside
    # Dynamic loading: the canonical path's decision, and no dot segment in any decoding.
    dynamic = _decision(url, DYNAMIC, True)
    if parsed.dotted:
        assert dynamic == "NotFound"
    else:
        assert dynamic == _decision(canon, DYNAMIC, True)
    if dynamic == "allowed":
        assert inside and ".." not in unquote(unquote(target)).split("/")


@pytest.mark.parametrize("url", [
    f"file:{ALLOWED}/%2e%2e/evil", f"file:{ALLOWED}/%252e%252e/evil",
    f"file:{ALLOWED}/.%2e/evil", f"file:{ALLOWED}/%2e./evil", f"file:{ALLOWED}/%2E%2E/evil",
    f"file:{ALLOWED}/..%2fevil", f"file:{ALLOWED}/a%2f..%2f..%2fevil",
    f"file:///{ALLOWED[1:]}/%2e%2e/evil", f"{ALLOWED}/%2e%2e/evil", f"{ALLOWED}/../evil",
])
def test_dynamic_refusals_name_the_url_as_sent(url):
    with pytest.raises(NotFound) as info:
        check(url, DYNAMIC, dynamic=True)
    assert info.value.message == f"Permission denied: {url}"


def test_file_spellings_are_one_resource(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    same = ["file:/srv/m", "file:///srv/m", "file://localhost/srv/m", "file:/srv//m/",
            "file:/srv/x/../m", "file:/srv/%6d", "file:////srv/m"]
    assert {canonical(u).location for u in same} == {"/srv/m"}
    for url in same:
        check(url, ServerConfig(allowed_urls=(r"file:///srv/m",)))
        check(url, ServerConfig(allowed_urls=(r"file:/srv/m",)))
    assert canonical("file:rel/m").location == f"{tmp_path}/rel/m"
    assert canonical("rel/../m?x=1").location == f"{tmp_path}/m"
    # A plain path is literal: its escapes are a file's name.
    assert canonical("/srv/a%20b").location == "/srv/a%20b"


def test_registration_refuses_what_resolves_outside_allowed_urls():
    with pytest.raises(Forbidden, match=re.escape(f"allowed_urls: file:{ALLOWED}/%2e%2e/x")):
        check(f"file:{ALLOWED}/%2e%2e/x", NARROW)
    check(f"file:{ALLOWED}/x/%2e%2e/y", NARROW)  # stays inside: allowed


def test_http_urls_normalised_and_dots_refused():
    parsed = canonical("HTTPS://Models.Example/a/%7e%2fb/m.zip?q=%2e%2e")
    assert parsed.fetch == "https://models.example/a/~%2Fb/m.zip?q=%2e%2e"
    check(parsed.text, ServerConfig(allowed_urls=(r"https://models\.example/a/.*",)))
    for url in ("https://h/ok/%252e%252e/no/m.zip", "http://h/ok/.%2E/m.zip"):
        with pytest.raises(SourceError):
            check(url, ServerConfig())
