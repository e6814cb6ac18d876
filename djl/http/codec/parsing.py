"""HTTP → domain: a request's path, query, id and properties, and its Input."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, unquote_plus

from quart import Request

from djl import _batch
from djl.config import ServerConfig, parse_int
from djl.errors import BadRequest
from djl.io import Input, PairList

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
#: Spec §3.8's properties, also as SageMaker custom attributes of any case.
_ASYNC_KEYS = frozenset({"x-synchronous", "x-starting-token", "x-max-items"})


def path_segments(raw_path: bytes) -> list[str]:
    """Spec §1.2: split on '/', percent-decode, drop trailing empty segments."""
    text = raw_path.decode("latin-1")
    segments = text.split("/")
    if "%" in text:
        segments = [unquote(s) for s in segments]
    while len(segments) > 1 and segments[-1] == "":
        segments.pop()
    return segments


def parse_query(query_string: bytes) -> list[tuple[str, str]]:
    """Spec §1.2: '&' and ';' separate parameters; '+' is a space; no '=' means ''."""
    text = query_string.decode("latin-1").split("#", 1)[0]
    pairs: list[tuple[str, str]] = []
    for part in text.replace(";", "&").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote_plus(key), unquote_plus(value)))
    return pairs


class Query:
    """Query parameters with the spec's "first value, empty means absent" lookup."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str) -> str | None:
        """The first value of ``name``; None when absent or empty."""
        value = self.first(name)
        return value if value != "" else None

    def first(self, name: str) -> str | None:
        """The first value of ``name`` as sent (an empty one kept: ``synchronous=`` is
        false, spec §2.2); None when absent."""
        for key, value in self.pairs:
            if key == name:
                return value
        return None

    def get_int(self, name: str, default: int) -> int:
        return parse_int(self.get(name), default)  # type: ignore[return-value]

    def single_valued(self) -> dict[str, str]:
        counts: dict[str, int] = {}
        for key, _ in self.pairs:
            counts[key] = counts.get(key, 0) + 1
        return {k: v for k, v in self.pairs if counts[k] == 1}


def request_id(request: Request, config: ServerConfig) -> str:
    return request.headers.get(config.request_id_header_key) or random_uuid4()


#: A random (version 4) UUID string (``_batch``: pooled random bytes, formatted in C).
random_uuid4 = _batch.random_uuid4


def request_properties(headers: list[tuple[bytes, bytes]],
                       config: ServerConfig) -> tuple[dict[str, Any], str]:
    """Spec §3.3: headers → Input properties, plus the body's media type.

    Reads the ASGI header list once (names arrive lower-cased) rather than through
    werkzeug's Headers: this runs for every inference request. In C
    (``request_properties_c``, djl/_head.pxi: bench/head_json.py is the A/B); the
    same in Python is ``request_properties_py``.
    """
    properties, media_type, overridden = _batch.request_properties_c(headers)
    if overridden and not config.allow_request_handler_override:
        raise BadRequest("The handler can't be overridden in a request")
    return properties, media_type


def request_properties_py(headers: list[tuple[bytes, bytes]],
                          config: ServerConfig) -> tuple[dict[str, Any], str]:
    """``request_properties`` in Python (the A/B's other side)."""
    properties: dict[str, Any] = {}
    media_type = ""
    overridden = False
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name == "x-amzn-sagemaker-custom-attributes":
            for token in value.split(";"):
                key, sep, val = token.partition("=")
                if sep:
                    key = key.strip()
                    if key.lower() in _ASYNC_KEYS:
                        key = key.lower()  # read by exact name on every request
                    properties[key] = val.strip()
                    overridden = overridden or key.lower() == "handler"
            continue
        if name == "content-type":
            media_type = value.partition(";")[0].strip().lower()
        elif name == "handler":
            overridden = True
        properties[name] = value
    if overridden and not config.allow_request_handler_override:
        raise BadRequest("The handler can't be overridden in a request")
    return properties, media_type


def is_form(media_type: str) -> bool:
    return media_type in _FORM_TYPES


def body_input(properties: dict[str, Any], query: Query, body: bytes, req_id: str) -> Input:
    """Spec §3.3 for a body that is not a form: query → content, body → ``data``."""
    content = PairList(query.pairs)
    content.values = [v.encode("utf-8") for v in content.values]
    content.add("data", body)
    properties["requestId"] = req_id
    return Input(properties, content)


async def to_input(request: Request, query: Query, req_id: str, config: ServerConfig) -> Input:
    """Spec §3.3 through Quart's request (forms included)."""
    properties, media_type = request_properties(request.scope["headers"], config)
    if not is_form(media_type):
        return body_input(properties, query, await request.get_data(cache=False), req_id)
    content = PairList(query.pairs)
    content.values = [v.encode("utf-8") for v in content.values]
    form = await request.form
    for key, value in form.items(multi=True):
        content.add(key, value.encode("utf-8"))
    files = await request.files
    for key, storage in files.items(multi=True):
        content.add(key, storage.read())
    properties["requestId"] = req_id
    return Input(properties, content)
