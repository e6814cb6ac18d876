"""Mapping A (spec §1.4): errors of management and routing, each with a fixed status."""

from __future__ import annotations

from djl.errors.base import DjlError
from djl.errors.inference import OutOfMemory


class BadRequest(DjlError):
    status = 400
    type = "BadRequestException"

    @classmethod
    def invalid_starting_token(cls, token: str) -> BadRequest:
        """Spec §3.8: a poll for a result the store does not hold (never had, or dropped)."""
        return cls(f"Invalid x-starting-token: {token}")

    @classmethod
    def unnamed_workflow(cls) -> BadRequest:
        return cls('The workflow has no name: set "name" in the workflow file or model_name')

    @classmethod
    def malformed(cls, reason: str) -> BadRequest:
        """A request the HTTP parser refuses (its connection closes after the answer)."""
        return cls(f"Malformed HTTP request: {reason}")

    @classmethod
    def prometheus_disabled(cls) -> BadRequest:
        """``GET /server/metrics`` without SERVING_PROMETHEUS=true (spec §2.8)."""
        return cls("Prometheus is not enabled, set SERVING_PROMETHEUS environment var to true "
                   "to enable prometheus metrics")


class RayPlacement(BadRequest):
    """A model placed on Ray (``load_on_devices=ray``) that cannot be."""

    @classmethod
    def not_configured(cls) -> RayPlacement:
        return cls("load_on_devices=ray needs a Ray cluster: set ray_address (config.properties) "
                   "or SERVING_RAY_ADDRESS to auto or host:port")

    @classmethod
    def bad_option(cls, key: str, value: str, expected: str) -> RayPlacement:
        return cls(f"Invalid option.{key} {value!r}: expected {expected}")

    @classmethod
    def mixed(cls) -> RayPlacement:
        return cls("A model is placed either on Ray (load_on_devices=ray) or on local devices, "
                   "not both")


class IllegalArgument(BadRequest):
    """Malformed parameter values (Java's IllegalArgumentException). The spec's [REC] is 400."""

    type = "IllegalArgumentException"

    @classmethod
    def invalid_url(cls, url: str) -> IllegalArgument:
        """A URL that does not parse (409, as the spec's URI syntax error)."""
        return cls(f"Invalid url: {url}", status=409)

    @classmethod
    def file_type(cls, file_type: str) -> IllegalArgument:
        return cls(f"Unexpected file type: {file_type}")

    @classmethod
    def number(cls, value: str) -> IllegalArgument:
        err = cls(f'For input string: "{value}"')
        err.type = "NumberFormatException"
        return err


class Conflict(DjlError):
    status = 409
    type = "BadRequestException"

    @classmethod
    def already_registered(cls, name: str, version: str | None) -> Conflict:
        label = f"{name}:{version}" if version else name
        return cls(f"Workflow {label} is already registered.")


class NotFound(DjlError):
    status = 404
    type = "ResourceNotFoundException"

    @classmethod
    def model_url_required(cls) -> NotFound:
        """Spec §3.10: dynamic loading without a ``model_url``."""
        return cls("Parameter model_url is required.")

    @classmethod
    def model_url_denied(cls, url: str) -> NotFound:
        """Spec §3.10: a ``model_url`` that model_url_pattern or allowed_urls refuses."""
        return cls(f"Permission denied: {url}")

    @classmethod
    def resource(cls) -> NotFound:
        return cls("Requested resource is not found, please refer to API document.")


class ModelNotFound(NotFound):
    type = "ModelNotFoundException"

    @classmethod
    def model_or_workflow(cls, name: str) -> ModelNotFound:
        return cls(f"Model or workflow not found: {name}")

    @classmethod
    def workflow(cls, name: str) -> ModelNotFound:
        return cls(f"Workflow not found: {name}")

    @classmethod
    def workflow_version(cls, name: str, version: str) -> ModelNotFound:
        """Describe with an unknown version. DJL doubles the prefix here ("Workflow not
        found: Workflow not found: x/9", spec §2.6 [QUIRK]); we say it once (Appendix E)."""
        return cls.workflow(f"{name}/{version}")

    @classmethod
    def invalid_url(cls, url: str) -> ModelNotFound:
        return cls(f"Invalid model url: {url}")

    @classmethod
    def no_engine(cls, model_dir: str) -> ModelNotFound:
        return cls(f"Failed to detect engine of the model: {model_dir}")

    @classmethod
    def v2(cls, name: str, version: str | None = None) -> ModelNotFound:
        """The Open Inference Protocol's 404 (spec §2.11: ``Model not found: res``)."""
        return cls(f"Model not found: {name}" + (f", version {version}" if version else ""))


class MethodNotAllowed(DjlError):
    status = 405
    type = "MethodNotAllowedException"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or "Requested method is not allowed, please refer to API document."
        )


class PayloadTooLarge(DjlError):
    status = 413
    type = "PayloadTooLargeException"

    @classmethod
    def request(cls, max_request_size: int) -> PayloadTooLarge:
        """Spec §1.5: a request whose body is over ``max_request_size``."""
        return cls(f"Request body exceeds max_request_size ({max_request_size} bytes)")


class HeadTooLarge(DjlError):
    """A request line and headers over the server's limit (RFC 6585 §5)."""

    status = 431
    type = "RequestHeaderFieldsTooLargeException"

    @classmethod
    def head(cls, limit: int) -> HeadTooLarge:
        return cls(f"Request line and headers exceed {limit} bytes")


class RequestTimeout(DjlError):
    """A client stopped sending the body it declared."""

    status = 408
    type = "RequestTimeoutException"

    @classmethod
    def body(cls, timeout_s: float) -> RequestTimeout:
        return cls(f"Request body not received within request_body_timeout ({timeout_s:g}s)")


class Unauthorized(DjlError):
    status = 401
    type = "UnauthorizedException"


class Forbidden(DjlError):
    """A source the ``allowed_urls`` setting does not admit."""

    status = 403
    type = "ForbiddenException"

    @classmethod
    def not_allowed(cls, url: str, resolved: str) -> Forbidden:
        """``url`` as sent; ``resolved``: the canonical form the patterns were matched to."""
        where = f" (resolves to {resolved})" if resolved != url else ""
        return cls(f"URL is not allowed by allowed_urls: {url}{where}")


class SourceError(BadRequest):
    """A model or workflow source that cannot be used: unreachable, corrupt, unsafe, too big.

    ``status`` is set per case (400 corrupt/unsafe, 404 remote missing, 413 too large,
    502 upstream failure, 504 upstream timeout); the message names the URL or entry.
    """

    type = "ModelSourceException"

    @classmethod
    def invalid_url(cls, url: str, reason: object) -> SourceError:
        return cls(f"Invalid URL {url}: {reason}", status=400)

    @classmethod
    def cache_unwritable(cls, target: object, reason: object) -> SourceError:
        return cls(f"Cannot write to the cache {target}: {reason}", status=500)


class ServiceUnavailable(DjlError):
    status = 503
    type = "ServiceUnavailableException"

    @classmethod
    def not_ready(cls, name: str) -> ServiceUnavailable:
        return cls(f"Model or workflow is not ready: {name}")

    @classmethod
    def server_stopping(cls) -> ServiceUnavailable:
        return cls("The server is shutting down")

    @classmethod
    def models_not_ready(cls, names: list[str]) -> ServiceUnavailable:
        """The Open Inference Protocol's server readiness: some model is not Healthy."""
        return cls(f"Models not ready: {', '.join(names)}")


class AsyncResultsFull(ServiceUnavailable):
    """Every slot of the async result store holds a request still running (spec §3.8)."""

    @classmethod
    def pending(cls, limit: int) -> AsyncResultsFull:
        return cls(f"Too many asynchronous requests in flight (async_result_max_entries "
                   f"{limit}); retry later")


class ModelLoadError(DjlError):
    """A model that cannot be loaded (Java's EngineException at load time)."""

    status = 500
    type = "EngineException"

    @classmethod
    def out_of_memory(cls) -> ModelLoadError:
        """The worker ran out of memory while loading (507, as DJL answers)."""
        return cls("OOM", status=OutOfMemory.status)

    @classmethod
    def bad_model(cls, detail: str) -> ModelLoadError:
        """The folder is not a model its engine can load (a client's fault: 400)."""
        return cls(f"Failed to initialize model: {detail}", status=400)

    @classmethod
    def ray_unreachable(cls, address: str, detail: str) -> ModelLoadError:
        """The Ray cluster named by ``ray_address`` could not be reached."""
        return cls(f"Cannot reach the Ray cluster at {address}: {detail}", status=503)

    @classmethod
    def ray_placement(cls, resources: str, timeout_s: float) -> ModelLoadError:
        """No Ray node took a worker's actor in time."""
        return cls(f"No Ray node placed a worker needing {resources} within "
                   f"{timeout_s:g}s (ray_placement_timeout): the cluster lacks those "
                   "resources, or the node that had them is gone")
