"""HTTP ⇄ domain: request → Input, Output → response, and every JSON body we render.

The spec's camelCase names live here and nowhere else (spec §1.3–§1.5, §2.4–§2.6,
§3.3, §3.5). Only ``replies`` turns a ``DjlError`` into ``{"code", "type", "message"}``.

The package's rooms: ``parsing`` (request → Input), ``replies`` (Output, pages and
errors → replies) and ``describe`` (models, workflows, health → the spec's JSON).
"""

from __future__ import annotations

from djl.http.codec.describe import (
    describe_model,
    describe_workflows,
    health_body,
    model_rows,
)
from djl.http.codec.parsing import (
    Query,
    body_input,
    is_form,
    parse_query,
    path_segments,
    random_uuid4,
    request_id,
    request_properties,
    request_properties_py,
    to_input,
)
from djl.http.codec.replies import (
    NO_CACHE_HEADERS,
    HeaderList,
    Reply,
    bytes_reply,
    common_headers,
    error_body,
    error_reply,
    error_response,
    json_reply,
    json_response,
    output_reply,
    page_reply,
    render_json,
    render_json_py,
    sized_reply,
    status_response,
    submitted_reply,
    to_response,
    v2_error_reply,
    v2_reply,
)

__all__ = [
    "HeaderList",
    "NO_CACHE_HEADERS",
    "Query",
    "Reply",
    "body_input",
    "bytes_reply",
    "common_headers",
    "describe_model",
    "describe_workflows",
    "error_body",
    "error_reply",
    "error_response",
    "health_body",
    "is_form",
    "json_reply",
    "json_response",
    "model_rows",
    "output_reply",
    "page_reply",
    "parse_query",
    "path_segments",
    "random_uuid4",
    "render_json",
    "render_json_py",
    "request_id",
    "request_properties",
    "request_properties_py",
    "sized_reply",
    "status_response",
    "submitted_reply",
    "to_input",
    "to_response",
    "v2_error_reply",
    "v2_reply",
]
