"""http/: how async submissions and polls are rendered (spec §3.8), and the access log."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from djl.async_results import Page
from djl.config import ServerConfig
from djl.errors import Capacity
from djl.http import codec
from djl.http.access_log import MODEL_KEY, access_logged

CONFIG = ServerConfig()
TOKEN = "0123abcd-0000-4000-8000-000000000000"


def _headers(reply: codec.Reply) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in reply.headers}


def test_submitted():
    reply = codec.submitted_reply(TOKEN, "req", CONFIG)
    headers = _headers(reply)
    assert (reply.status, reply.body) == (200, b"")
    assert headers["x-next-token"] == TOKEN
    assert headers["x-amzn-sagemaker-custom-attributes"] == f"x-next-token={TOKEN}"
    assert headers["content-length"] == "0" and headers["x-request-id"] == "req"


def test_page_headers_are_the_stores_not_the_models():
    page = Page(200, {"x-next-token": "forged", "Content-Length": "9", "x-model": "m"},
                b"body", TOKEN + "1")
    reply = codec.page_reply(page, "req", CONFIG)
    headers = _headers(reply)
    assert headers["x-next-token"] == TOKEN + "1"
    assert headers["content-length"] == "4" and headers["x-model"] == "m"
    assert [k for k, _ in reply.headers].count(b"x-next-token") == 1
    final = codec.page_reply(Page(200, {}, b"x"), "req", CONFIG)
    assert "x-next-token" not in _headers(final)
    assert "connection" not in _headers(final)


def test_pending_and_failed_pages():
    pending = codec.page_reply(Page(202, {}, next_token=TOKEN), "req", CONFIG)
    assert pending.status == 202 and _headers(pending)["x-next-token"] == TOKEN
    failed = codec.page_reply(Page(0, {}, error=Capacity.queue_full("m")), "req",
                              dataclasses.replace(CONFIG, throttle_error_http_code=429))
    assert failed.status == 429  # mapping B, as a synchronous request would get
    assert _headers(failed)["connection"] == "close"


@pytest.mark.parametrize("custom", ["X-Synchronous=false", "x-synchronous=false"])
def test_async_custom_attributes_arrive_lower_cased(custom):
    properties, _ = codec.request_properties(
        [(b"x-amzn-sagemaker-custom-attributes", f"{custom}; Other=1".encode())], CONFIG)
    assert properties["x-synchronous"] == "false" and properties["Other"] == "1"


async def test_access_log_line(caplog):
    caplog.set_level(logging.INFO, logger="djl.access")
    sent = []

    async def app(scope, receive, send):
        scope[MODEL_KEY] = "m"
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"x-request-id", b"abc")]})
        await send({"type": "http.response.body", "body": b"12", "more_body": True})
        await send({"type": "http.response.body", "body": b"345"})

    async def send(message):
        sent.append(message)

    await access_logged(app, {"method": "PUT", "path": "/p"}, None, send)
    assert len(sent) == 3
    (line,) = [r.getMessage() for r in caplog.records if r.name == "djl.access"]
    assert line.startswith("abc PUT /p m 201 5 ")
