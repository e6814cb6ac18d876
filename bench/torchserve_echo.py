"""TorchServe handler for the echo bench: each request's body back, as djl's echo does."""

from __future__ import annotations

from typing import Any


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    if data is None:  # TorchServe's start-up call
        return None
    return [row.get("body") or row.get("data") or b"" for row in data]
