"""The base of every error a client can see: an HTTP status and a spec type name."""

from __future__ import annotations


class DjlError(Exception):
    """Base class: an error with an HTTP status and a spec type name."""

    status: int = 500
    type: str = "ServerError"
    #: Global config key whose value, if set, replaces ``status`` for inference failures.
    config_key: str | None = None

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


def exception_leaves(exc: BaseException) -> list[BaseException]:
    """The plain exceptions inside (possibly nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in exception_leaves(sub)]
    return [exc]
