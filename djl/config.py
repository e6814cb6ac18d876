"""Configuration: the one home of every default and every environment variable read.

``ServerConfig`` merges, once, at start-up (spec §8.3, lowest first):
``config.properties`` < command line < ``SERVING_<KEY>`` environment < SageMaker size
overrides. ``ModelConfig`` merges a model's settings: global defaults < environment
defaults (``OPTION_*``/``ARGS_*``, "put if absent") < ``serving.properties`` < register
parameters (spec §4.6). Both are frozen; nothing else reads a setting from ``os.environ``
(worker processes only inherit it).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from djl.errors import BadRequest, IllegalArgument, RayPlacement
from djl.properties import read_properties

MIB = 1024 * 1024
SECONDS = 1.0

# Fixed settings (not configuration keys), here so each has one home.
#: Shutdown: how long in-flight requests get to finish before their workers are stopped.
SHUTDOWN_GRACE_S = 10 * SECONDS
#: Unregister: the same grace for the workers of one model.
UNREGISTER_GRACE_S = 5 * SECONDS
#: Hypercorn: longer than the models' own grace, so their last answers still go out.
HYPERCORN_GRACEFUL_TIMEOUT_S = SHUTDOWN_GRACE_S + 3
#: djl's own server (``http_server=djl``): the same wait for in-flight answers at shutdown.
SERVER_GRACEFUL_TIMEOUT_S = HYPERCORN_GRACEFUL_TIMEOUT_S
#: djl's own server: a request line and headers longer than this are refused with 431
#: (h11's limit under hypercorn, 16 KiB).
MAX_REQUEST_HEAD_BYTES = 16 * 1024
#: djl's own server: a TLS handshake must complete within this long, or the connection closes.
TLS_HANDSHAKE_TIMEOUT_S = 10 * SECONDS
#: Hypercorn: the lifespan's shutdown (models stop inside it) may take this long.
HYPERCORN_SHUTDOWN_TIMEOUT_S = SHUTDOWN_GRACE_S * 3
#: Hypercorn: the lifespan's start-up gets at least this, or the model loading timeout + 60.
HYPERCORN_MIN_STARTUP_TIMEOUT_S = 600 * SECONDS
#: Memory admission (spec §4.8): what must stay free after a model loads, unless the model's
#: ``reserved_memory_mb`` says otherwise.
RESERVED_MEMORY_MB = 500
#: Spec §3.9: an ``error_rate_*`` rule without a duration counts errors per minute.
ERROR_RATE_WINDOW_S = 60 * SECONDS
#: Worker recycling by memory: how often a model's workers' RSS is read, unless the model's
#: ``option.worker_rss_check_interval`` says otherwise.
WORKER_RSS_CHECK_INTERVAL_S = 5 * SECONDS
#: Text generation (``option.*`` of a causal-LM folder): sequences decoded together per
#: worker, a request's max_new_tokens when it names none, and the rolling-batch values.
MAX_ROLLING_BATCH_SIZE = 32
MAX_NEW_TOKENS = 30
#: LoRA adapters applied at once per worker (``option.max_loras``, with enable_lora=true);
#: requests for more wait for a slot.
MAX_LORAS = 4
ROLLING_BATCH_DEFAULT = "auto"
#: ``option.rolling_batch`` values served here; ``vllm`` needs vllm and CUDA; ``disable``
#: sends whole requests through the dynamic batcher.
ROLLING_BATCH_VALUES = ("auto", "disable", "vllm")
#: The console's live figures (djl.figures): rates and percentiles are over at least this
#: much of the latest history, which is kept this long, sampled at most this often.
FIGURES_WINDOW_S = 10 * SECONDS
FIGURES_HISTORY_S = 300 * SECONDS
FIGURES_SAMPLE_S = 1 * SECONDS


class ConfigError(ValueError):
    """A configuration that prevents start-up (one clear line, exit status 1)."""


@dataclass(frozen=True)
class Address:
    """A listener address: ``http://host:port``, ``https://host:port`` or ``unix:/path``.

    An IPv6 host is written in brackets (``http://[::1]:8080``) and kept without them.
    """

    scheme: str  # "http", "https" or "unix"
    host: str = ""  # a name or an IP address; IPv6 without brackets
    port: int = 0
    path: str = ""  # unix socket path

    @classmethod
    def parse(cls, text: str) -> Address:
        m = re.fullmatch(r"(?i)unix:(/.+)", text)
        if m:
            return cls("unix", path=m.group(1))
        m = re.fullmatch(r"(?i)(https?)://(?:\[([0-9a-f:.]+)\]|([^:/\[\]]+))(?::(\d+))?/?", text)
        if not m:
            raise ConfigError(f"Invalid binding address: {text}")
        scheme = m.group(1).lower()
        host = m.group(2) or m.group(3)
        if m.group(2) is not None:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ConfigError(f"Invalid binding address: {text}") from None
        port = int(m.group(4)) if m.group(4) else (443 if scheme == "https" else 80)
        # The spec's Java server also rejects 65535 (an off-by-one); we accept the real range.
        if port > 65535:
            raise ConfigError(f"Invalid port number: {text}")
        return cls(scheme, host=host, port=port)

    @property
    def _host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def bind(self) -> str:
        """The address in hypercorn's ``bind`` syntax."""
        return f"unix:{self.path}" if self.scheme == "unix" else self._host_port

    @property
    def is_loopback(self) -> bool:
        """Whether only this host can connect (decides the start-up exposure warning).

        Judged on the address itself, never on a prefix: ``127.example.com`` is a name
        anyone may own. A name other than ``localhost`` counts as reachable.
        """
        if self.scheme == "unix":
            return True
        host = self.host.lower()
        if host in ("localhost", "localhost."):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1
        return address.is_loopback

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        return f"{self.scheme}://{self._host_port}"


_JAVA_INT = re.compile(r"[+-]?[0-9]+")


def parse_java_int(value: Any) -> int:
    """Java ``Integer.parseInt``: optional sign and ASCII digits within 32 bits, nothing else
    (Python's int() also takes ``_``, blanks and other digits, and truncates floats and
    bools); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _JAVA_INT.fullmatch(value):
        number = int(value)
    else:
        raise ValueError(value)
    if not -(2**31) <= number < 2**31:
        raise ValueError(value)
    return number


def parse_int(value: Any, default: int | None = None) -> int | None:
    """A request parameter or model setting: ``default`` when absent (None or ""), else
    read as ``parse_java_int`` reads it; IllegalArgument (NumberFormatException, 400) if it
    is not a number."""
    if value is None or value == "":
        return default
    try:
        return parse_java_int(value)
    except ValueError:
        raise IllegalArgument.number(str(value)) from None


def _int(key: str, value: str) -> int:
    try:
        return parse_java_int(value.strip())
    except ValueError:
        raise ConfigError(f"Invalid integer for {key}: {value!r}") from None


def parse_java_bool(value: str | None, default: bool = False) -> bool:
    """Java ``Boolean.parseBoolean`` with a default for an absent value (None): true only
    for ``true`` in any case; any other value, the empty one included, is false (spec
    §2.2 ``synchronous``, §3.8 ``x-synchronous``). Every boolean parameter reads this way."""
    if value is None:
        return default
    return value.lower() == "true"


_DURATION = re.compile(
    r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:[.,]\d{1,9})?)S)?)?",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float:
    """An ISO-8601 duration as ``java.time.Duration`` reads it (``PnDTnHnMn.nS``), in
    seconds. Raises ValueError for anything else, or for a duration that is not positive."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or text.strip().upper() in ("P", "PT") or text.strip()[-1:] in "Tt":
        raise ValueError(f"not an ISO-8601 duration (e.g. PT5M): {text!r}")
    days, hours, minutes, seconds = (match.group(k) for k in "dhms")
    total = (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
             + float((seconds or "0").replace(",", ".")))
    if total <= 0:
        raise ValueError(f"the duration must be positive: {text!r}")
    return total


@dataclass(frozen=True)
class Rule:
    """``count`` errors tolerated per ``window_s``."""

    count: int
    window_s: float


def parse_rule(text: str) -> Rule | None:
    """``count[/duration]``, e.g. ``10/PT1M``; empty means no rule. ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    count_text, sep, duration = text.partition("/")
    count_text = count_text.strip()
    if not count_text.isascii() or not count_text.isdigit() or int(count_text) < 1:
        raise ValueError(f"the count must be a positive integer: {text!r}")
    return Rule(int(count_text), parse_duration(duration) if sep else ERROR_RATE_WINDOW_S)


def _bool(value: str) -> bool:
    return parse_java_bool(value.strip())


def _env_key(suffix: str) -> str:
    """``OPTION_X_Y`` → ``x_y`` when the suffix is all upper case, digits and underscores."""
    return suffix.lower() if re.fullmatch(r"[A-Z0-9_]+", suffix) else suffix


@dataclass(frozen=True)
class ServerConfig:
    """Global settings (spec §8.4), alphabetical. Units are in the names."""

    #: One ``djl.access`` log line per request (id, route, model, status, bytes, latency).
    #: Off by default: it costs throughput.
    access_log: bool = False
    allow_multi_status: bool = False
    #: ``ALLOW_REQUEST_HANDLER_OVERRIDE``: let a request's ``handler`` header pick the function.
    allow_request_handler_override: bool = False
    #: Regexes (full match) a model or workflow URL must satisfy to be registered at all.
    allowed_urls: tuple[str, ...] = (r"file:.*", r"[^:]*", r"https?://.*")
    #: Extracted-archive limits against archive bombs (djl.archive).
    #: Results of ``x-synchronous: false`` requests (spec §3.8) kept in memory: at most this
    #: many, this many bytes in all, each for this long after it completed. When full, the
    #: oldest completed result is dropped; with only pending ones, a new request gets 503.
    async_result_max_bytes: int = 256 * MIB
    async_result_max_entries: int = 1000
    async_result_ttl_s: float = 900 * SECONDS
    archive_max_bytes: int = 20 * 1024 * MIB
    archive_max_entries: int = 100_000
    archive_max_ratio: int = 200
    bad_request_http_code: int = 400
    batch_size: int = 1
    #: ``SERVING_CACHE_BATCH``: stream chunks per stored item of an async result (spec §3.8).
    cache_batch: int = 1
    #: ``CUDA_VISIBLE_DEVICES`` when set: the GPUs ``*`` loads on (None: every GPU there is).
    cuda_visible_devices: str | None = None
    #: Root of downloads and extracted archives (``DJL_CACHE_DIR``, default ``~/.djl.ai``).
    cache_dir: Path = Path("~/.djl.ai").expanduser()
    #: PEM certificate chain and private key for ``https://`` addresses (spec §8.6).
    certificate_file: str = ""
    chunked_read_timeout_s: float = 120 * SECONDS
    cors_allowed_headers: str = ""
    cors_allowed_methods: str = ""
    cors_allowed_origin: str = ""
    download_connect_timeout_s: float = 10 * SECONDS
    download_max_bytes: int = 20 * 1024 * MIB
    download_read_timeout_s: float = 60 * SECONDS
    #: Environment defaults for models: ``OPTION_*`` → option.*, ``ARGS_*`` → arguments.
    env_arguments: Mapping[str, str] = field(default_factory=dict)
    env_options: Mapping[str, str] = field(default_factory=dict)
    #: ``SAGEMAKER_*`` model settings that overwrite serving.properties (spec §4.6).
    model_overrides: Mapping[str, str] = field(default_factory=dict)
    #: Error-rate breaker rules (spec §3.9), ``count[/ISO-8601 duration]``; empty: no rule.
    error_rate_any: str = ""
    error_rate_server: str = ""
    error_rate_wlm: str = ""
    fail_fast: bool = False
    #: After start-up, move every object alive to the GC's permanent generation
    #: (``gc.freeze``): full collections then skip the server's own code and data.
    gc_freeze: bool = True
    #: ``gc.set_threshold`` for the server process, "gen0,gen1,gen2"; empty keeps Python's
    #: (700,10,10). A young collection scans every in-flight request's objects; 20,000
    #: allocations between them took the GC from 11 % of the CPU under c64 load to
    #: nothing py-spy sees, for +0.7 MiB of RSS (bench/profile_front.py, bench/echo.py).
    gc_thresholds: str = "20000,50,100"
    health_check_override: bool = False
    #: The HTTP server ``djl-serving`` runs: ``djl`` (djl.http.server: trio + httptools,
    #: the inference routes answered from the connection) or ``hypercorn`` (its trio
    #: worker serving the ASGI app, as ``hypercorn -k trio 'djl.app:create_app()'`` does).
    http_server: str = "djl"
    #: ``HF_MODEL_ID``: one more start-up model (spec §4.5); only a local path or a URL.
    hf_model_id: str = ""
    inference_address: Address = Address("http", "127.0.0.1", 8080)
    job_queue_size: int = 1000
    #: Under ``http_server=hypercorn``: serve connections with
    #: djl.http.connection.LeanTCPServer, hypercorn's with one keep-alive timer task per
    #: connection and each sized answer in one write (``SERVING_LEAN_CONNECTIONS``; false:
    #: hypercorn's own, e.g. to compare). Installed by djl-serving for as long as it runs.
    lean_connections: bool = True
    load_models: str = ""
    load_on_devices: str = "*"
    log_level: str = "info"
    management_address: Address = Address("http", "127.0.0.1", 8080)
    #: Bearer token the management routes require when set (TorchServe-style).
    management_token: str = ""
    max_batch_delay_ms: int = 100
    max_idle_time_s: int = 60
    max_request_size: int = 64 * MIB
    #: Largest single content item or stream chunk a worker may send back.
    max_worker_item_bytes: int = 20 * MIB
    model_loading_timeout_s: float = 240 * SECONDS
    model_server_home: Path = Path(".")
    model_store: str = ""
    #: Spec §3.10: a regex (full match); when set, a prediction for an unknown model with a
    #: ``model_url`` (header, query or form) registers it first. ``allowed_urls`` applies too.
    model_url_pattern: str = ""
    #: ``DJL_OFFLINE``: pip installs a model's requirements from its own folder only.
    offline: bool = False
    #: ``OMP_NUM_THREADS`` (0 when unset or not a positive integer): threads per CPU worker,
    #: which bounds the default CPU workers, and the PyTorch engine's intra-op threads per
    #: worker when the model sets no ``option.num_threads``.
    omp_num_threads: int = 0
    #: Batches a worker may have in flight for a fast model (1 turns pipelining off).
    pipeline_depth: int = 4
    predict_timeout_s: float = 120 * SECONDS
    private_key_file: str = ""
    #: ``SERVING_PROMETHEUS``: collect metrics and serve them on ``/server/metrics``.
    prometheus: bool = False
    python_executable: str = ""
    #: ``SERVING_RAY_ADDRESS``: the Ray cluster models placed with ``load_on_devices=ray``
    #: run their workers on: ``auto`` (``RAY_ADDRESS`` or the cluster started on
    #: this host) or the GCS ``host:port``. Empty: no Ray; such a placement is a 400.
    ray_address: str = ""
    #: The address a worker's actor dials back to (an address of this host the Ray nodes
    #: can reach). Empty: this node's IP as Ray sees it (``ray.util.get_node_ip_address``).
    ray_callback_host: str = ""
    #: Longest the server waits to connect to the cluster (``ray.init``), or for one of its
    #: state or kill calls; past it the registration fails.
    ray_connect_timeout_s: float = 30 * SECONDS
    #: Longest a worker's actor may wait for a node with its resources, receive the model
    #: files and dial back; past it that worker fails to load (retry_threshold applies).
    ray_placement_timeout_s: float = 60 * SECONDS
    #: A declared request body that pauses this long is answered 408 and its connection
    #: closed (on Quart's routes, the whole body must arrive within it).
    request_body_timeout_s: float = 60 * SECONDS
    #: A connection must send a complete request head within this long of opening or of
    #: its previous answer (hypercorn's keep-alive timer), or it is closed.
    request_head_timeout_s: float = 30 * SECONDS
    request_id_header_key: str = "x-request-id"
    #: Worker crashes tolerated per model before it turns FAILED (see README, "Failures").
    retry_threshold: int = 3
    #: ``SAGEMAKER_HEALTH_CHECK_OVERRIDE``: an Unhealthy model fails ``/ping`` (spec §3.2).
    sagemaker_health_check_override: bool = False
    server_error_http_code: int = 500
    serving_max_workers: str = ""
    serving_min_workers: str = ""
    throttle_error_http_code: int = 503
    wait_model_loading: bool = True
    wlm_error_http_code: int = 503

    @property
    def dual_listeners(self) -> bool:
        return self.inference_address != self.management_address

    def status_for(self, config_key: str | None, default: int) -> int:
        """The HTTP status of an inference failure (spec §1.4 mapping B)."""
        return int(getattr(self, config_key)) if config_key else default


# Property keys whose names differ from the dataclass field (units appended).
_KEY_ALIASES = {
    "chunked_read_timeout": "chunked_read_timeout_s",
    "max_batch_delay": "max_batch_delay_ms",
    "max_idle_time": "max_idle_time_s",
    "predict_timeout": "predict_timeout_s",
    "model_loading_timeout": "model_loading_timeout_s",
    "download_connect_timeout": "download_connect_timeout_s",
    "download_read_timeout": "download_read_timeout_s",
    "request_body_timeout": "request_body_timeout_s",
    "request_head_timeout": "request_head_timeout_s",
    "async_result_ttl": "async_result_ttl_s",
    "ray_connect_timeout": "ray_connect_timeout_s",
    "ray_placement_timeout": "ray_placement_timeout_s",
}
_FIELDS = {f.name: f for f in fields(ServerConfig)}


def _coerce(name: str, value: str) -> Any:
    default = _FIELDS[name].default
    if isinstance(default, bool):
        return _bool(value)
    if isinstance(default, int):
        return _int(name, value)
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"Invalid number for {name}: {value!r}") from None
    if isinstance(default, Address):
        return Address.parse(value.strip())
    if isinstance(default, Path):
        return Path(value).expanduser()
    if name == "http_server":
        if value.strip().lower() not in ("djl", "hypercorn"):
            raise ConfigError(f"Invalid http_server (djl or hypercorn): {value!r}")
        return value.strip().lower()
    if name == "gc_thresholds":
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"Invalid gc_thresholds (1 to 3 counts, e.g. 700,10,10): "
                              f"{value!r}")
        return ",".join(parts)
    if name.startswith("error_rate_"):
        try:
            parse_rule(value)
        except ValueError as exc:
            raise ConfigError(f"Invalid {name}: {exc}") from None
        return value.strip()
    if name == "model_url_pattern" and value.strip():
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"Invalid model_url_pattern {value!r}: {exc}") from None
        return value
    if name == "allowed_urls":
        patterns = tuple(p.strip() for p in value.split(",") if p.strip())
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"Invalid allowed_urls pattern {pattern!r}: {exc}") from None
        return patterns
    return value


def locate_config_file(cli_file: str | None, env: Mapping[str, str]) -> Path | None:
    """Spec §8.2: ``-f``, then ``$MODEL_SERVER_HOME/conf/``, then ``$MODEL_SERVER_HOME/``."""
    if cli_file:
        path = Path(cli_file)
        if not path.is_file():
            raise ConfigError(f"Configuration file not found: {cli_file}")
        return path
    home = Path(env.get("MODEL_SERVER_HOME", "."))
    for candidate in (home / "conf" / "config.properties", home / "config.properties"):
        if candidate.is_file():
            return candidate
    return None


def load_server_config(
    *,
    config_file: str | None = None,
    models: list[str] | None = None,
    model_store: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Build the ServerConfig from file < CLI < ``SERVING_*`` env < SageMaker overrides.

    ``overrides`` (property-style keys) sit between the CLI and the environment; tests and
    embedders use it instead of writing a file.
    """
    env = dict(os.environ if env is None else env)
    raw: dict[str, str] = {}
    path = locate_config_file(config_file, env)
    if path is not None:
        try:
            raw.update(read_properties(path))
        except ValueError as e:  # a malformed \uxxxx escape
            raise ConfigError(f"Invalid configuration file {path}: {e}") from None
    if model_store:
        raw["model_store"] = model_store
    if models:
        raw["load_models"] = ",".join(models)
    raw.update(overrides or {})
    for key, value in env.items():
        if key.startswith("SERVING_") and key not in ("SERVING_MIN_WORKERS", "SERVING_MAX_WORKERS"):
            raw[key[len("SERVING_") :].lower()] = value
    if "SAGEMAKER_MAX_REQUEST_SIZE" in env:
        raw["max_request_size"] = env["SAGEMAKER_MAX_REQUEST_SIZE"]
    elif "SAGEMAKER_MAX_PAYLOAD_IN_MB" in env:
        mb = _int("SAGEMAKER_MAX_PAYLOAD_IN_MB", env["SAGEMAKER_MAX_PAYLOAD_IN_MB"])
        raw["max_request_size"] = str(mb * MIB)

    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = _KEY_ALIASES.get(key, key)
        if name in _FIELDS and name not in ("env_options", "env_arguments", "model_overrides"):
            values[name] = _coerce(name, value)

    home = Path(env.get("MODEL_SERVER_HOME", ".")).resolve()
    if not home.is_dir():  # spec §8.2: it must exist
        raise ConfigError(f"Model server home not exist: {home}")
    values["model_server_home"] = home
    if values.get("model_store"):
        store = Path(values["model_store"]).expanduser()
        values["model_store"] = str(store if store.is_absolute() else home / store)
    values.setdefault(
        "cache_dir", Path(env.get("DJL_CACHE_DIR") or Path.home() / ".djl.ai").expanduser()
    )
    if "PREDICT_TIMEOUT" in env:
        values.setdefault("predict_timeout_s", _coerce("predict_timeout_s", env["PREDICT_TIMEOUT"]))
    if "MODEL_LOADING_TIMEOUT" in env:
        values.setdefault(
            "model_loading_timeout_s",
            _coerce("model_loading_timeout_s", env["MODEL_LOADING_TIMEOUT"]),
        )
    values.setdefault("python_executable", env.get("PYTHON_EXECUTABLE", ""))
    omp = env.get("OMP_NUM_THREADS", "")
    values["omp_num_threads"] = int(omp) if omp.isascii() and omp.isdigit() else 0
    values["cuda_visible_devices"] = env.get("CUDA_VISIBLE_DEVICES")
    values["fail_fast"] = _bool(env.get("SERVING_FAIL_FAST", "false"))
    values["offline"] = _bool(env.get("DJL_OFFLINE", "false"))
    values["hf_model_id"] = env.get("HF_MODEL_ID", "").strip()
    values["health_check_override"] = _bool(env.get("SERVING_HEALTH_CHECK_OVERRIDE", "false"))
    values["prometheus"] = _bool(env.get("SERVING_PROMETHEUS", "false"))
    values["sagemaker_health_check_override"] = _bool(
        env.get("SAGEMAKER_HEALTH_CHECK_OVERRIDE", "false")
    )
    values["allow_request_handler_override"] = _bool(
        env.get("ALLOW_REQUEST_HANDLER_OVERRIDE", "false")
    )
    values["serving_min_workers"] = env.get("SERVING_MIN_WORKERS", "")
    values["serving_max_workers"] = env.get("SERVING_MAX_WORKERS", "")

    options: dict[str, str] = {}
    arguments: dict[str, str] = {}
    for key, value in env.items():
        if not value:
            continue
        if key == "OPTION_ENTRYPOINT":
            options["entryPoint"] = value
        elif key == "OPTION_ENGINE":
            arguments["engine"] = value
        elif key.startswith("OPTION_"):
            options[_env_key(key[len("OPTION_") :])] = value
        elif key.startswith("ARGS_"):
            arguments[_env_key(key[len("ARGS_") :])] = value
    if "DJL_ENTRY_POINT" in env:
        options.setdefault("entryPoint", env["DJL_ENTRY_POINT"])
    values["env_options"] = options
    values["env_arguments"] = arguments
    for key in ("certificate_file", "private_key_file"):
        if values.get(key):
            path = Path(values[key]).expanduser()
            values[key] = str(path if path.is_absolute() else home / path)
    sagemaker: dict[str, str] = {}
    if env.get("SAGEMAKER_NUM_MODEL_WORKERS"):
        sagemaker["minWorkers"] = sagemaker["maxWorkers"] = env["SAGEMAKER_NUM_MODEL_WORKERS"]
    if env.get("SAGEMAKER_STARTUP_TIMEOUT"):
        sagemaker["option.model_loading_timeout"] = env["SAGEMAKER_STARTUP_TIMEOUT"]
    if env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"):
        sagemaker["option.predict_timeout"] = env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"]
    values["model_overrides"] = sagemaker
    config = ServerConfig(**values)
    for address in (config.inference_address, config.management_address):
        if address.scheme == "https" and not (
            Path(config.certificate_file).is_file() and Path(config.private_key_file).is_file()
        ):
            # Never fall back to plain HTTP on an address the user asked to be encrypted.
            raise ConfigError(
                f"{address} needs certificate_file and private_key_file (PEM files)"
            )
    if "https" in (config.inference_address.scheme, config.management_address.scheme):
        _check_key_material(config.certificate_file, config.private_key_file)
    return config


def _check_key_material(certificate_file: str, private_key_file: str) -> None:
    """Load the pair as the listener will, so a bad one is a clear start-up error naming
    the files, not an SSL error from the socket layer."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certificate_file, private_key_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"certificate_file {certificate_file} and private_key_file {private_key_file}"
            f" are not a usable PEM certificate chain and its key: {exc}"
        ) from None


# -- per-model configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class RegisterParams:
    """What a registration asked for; ``None`` means "not given" (spec §2.2)."""

    url: str
    model_name: str | None = None
    model_version: str | None = None
    engine: str | None = None
    device: str | None = None
    job_queue_size: int | None = None
    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    max_idle_time_s: int | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    synchronous: bool = True

    @classmethod
    def from_query(cls, get: Any) -> RegisterParams:
        """Build from a ``get(name) -> str | None`` lookup (query string or JSON body) of
        the values as sent: an empty value is an absent one, except that ``synchronous=``
        is false (``parse_java_bool``)."""
        url = get("url")
        if not url:
            raise BadRequest("Parameter url is required.")

        def number(name: str) -> int | None:
            return parse_int(get(name))

        sync = get("synchronous")
        return cls(
            url=str(url),
            model_name=get("model_name") or None,
            model_version=get("model_version") or None,
            engine=get("engine") or None,
            device=get("device") or None,
            job_queue_size=number("job_queue_size"),
            batch_size=number("batch_size"),
            max_batch_delay_ms=number("max_batch_delay"),
            max_idle_time_s=number("max_idle_time"),
            min_workers=number("min_worker"),
            max_workers=number("max_worker"),
            synchronous=parse_java_bool(None if sync is None else str(sync), True),
        )


@dataclass(frozen=True)
class ModelConfig:
    """A model's effective settings once its directory is known (spec §4.6)."""

    batch_size: int
    max_batch_delay_ms: int
    max_idle_time_s: int
    job_queue_size: int
    load_on_devices: str
    engine: str | None
    #: ``option.*`` keys (prefix removed) and plain keys, as handed to the worker.
    options: Mapping[str, str]
    arguments: Mapping[str, str]
    predict_timeout_s: float
    model_loading_timeout_s: float
    retry_threshold: int
    python_executable: str
    #: ServerConfig.omp_num_threads: CPU workers share the cores by it.
    omp_num_threads: int = 0
    explicit_min_workers: int | None = None
    explicit_max_workers: int | None = None
    #: Worker recycling (``option.max_worker_requests``, ``option.max_worker_rss_mb``; 0 is
    #: off): a worker that has answered this many requests, or whose resident memory
    #: passed this many MiB, is replaced by a new one (started first).
    max_worker_requests: int = 0
    max_worker_rss_mb: int = 0
    worker_rss_check_interval_s: float = WORKER_RSS_CHECK_INTERVAL_S

    def workers_for(self, device_type: str, cpu_count: int | None = None) -> tuple[int, int]:
        """(min, max) workers of a group on ``device_type`` (spec §4.6)."""

        def arg(key: str) -> int | None:
            value = self.arguments.get(key)
            return None if value is None or str(value).strip() == "" else parse_int(value)

        hi = self.explicit_max_workers
        if hi is None or hi < 0:
            hi = arg(f"{device_type}.maxWorkers")
            if hi is None or hi <= 0:
                hi = arg("maxWorkers")
            if hi is None or hi <= 0:
                if device_type == "cpu":
                    cores = cpu_count or os.cpu_count() or 1
                    threads = max(1, self.omp_num_threads)
                    hi = max(1, min(cores, cores // threads))
                else:
                    hi = 1
        lo = self.explicit_min_workers
        if lo is None or lo < 0:
            lo = arg(f"{device_type}.minWorkers")
            if lo is None or lo < 0:
                lo = arg("minWorkers")
            if lo is None or lo < 0:
                lo = 1
        return min(lo, hi), hi


def _positive(*candidates: Any) -> int | None:
    for value in candidates:
        number = parse_int(value)
        if number is not None and number > 0:
            return number
    return None


def _seconds(value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        return default  # spec §4.6: a non-integer timeout is ignored with a warning


def build_model_config(
    server: ServerConfig,
    properties: Mapping[str, str],
    params: RegisterParams | None = None,
    url_arguments: Mapping[str, str] | None = None,
) -> ModelConfig:
    """Merge env defaults < ``serving.properties`` (+ URL query args) < register params."""
    merged: dict[str, str] = {}
    for key, value in server.env_options.items():
        merged[f"option.{key}"] = value
    merged.update(server.env_arguments)
    if server.serving_min_workers:
        merged["minWorkers"] = server.serving_min_workers
    if server.serving_max_workers:
        merged["maxWorkers"] = server.serving_max_workers
    merged.update(url_arguments or {})
    merged.update(properties)
    merged.update(server.model_overrides)
    if "max_dynamic_batch_size" in merged and "batch_size" not in merged:
        merged["batch_size"] = merged["max_dynamic_batch_size"]

    options = {k[len("option.") :]: v for k, v in merged.items() if k.startswith("option.")}
    arguments = {k: v for k, v in merged.items() if not k.startswith("option.")}
    p = params or RegisterParams(url="")

    explicit_min = p.min_workers if p.min_workers is not None and p.min_workers >= 0 else None
    explicit_max = p.max_workers if p.max_workers is not None and p.max_workers >= 0 else None
    if explicit_min is not None and explicit_max is not None:
        explicit_min = min(explicit_min, explicit_max)

    return ModelConfig(
        batch_size=_positive(p.batch_size, arguments.get("batch_size"), server.batch_size)
        or ServerConfig.batch_size,
        max_batch_delay_ms=_positive(
            p.max_batch_delay_ms, arguments.get("max_batch_delay"), server.max_batch_delay_ms
        )
        or ServerConfig.max_batch_delay_ms,
        max_idle_time_s=_positive(
            p.max_idle_time_s, arguments.get("max_idle_time"), server.max_idle_time_s
        )
        or ServerConfig.max_idle_time_s,
        job_queue_size=_positive(
            p.job_queue_size, arguments.get("job_queue_size"), server.job_queue_size
        )
        or ServerConfig.job_queue_size,
        load_on_devices=p.device or arguments.get("load_on_devices") or server.load_on_devices,
        engine=p.engine or arguments.get("engine"),
        options=options,
        arguments=arguments,
        predict_timeout_s=_seconds(options.get("predict_timeout"), server.predict_timeout_s),
        model_loading_timeout_s=_seconds(
            options.get("model_loading_timeout"), server.model_loading_timeout_s
        ),
        retry_threshold=parse_int(arguments.get("retry_threshold"), server.retry_threshold),
        python_executable=options.get("pythonExecutable") or server.python_executable,
        omp_num_threads=server.omp_num_threads,
        explicit_min_workers=explicit_min,
        explicit_max_workers=explicit_max,
        max_worker_requests=_positive(options.get("max_worker_requests")) or 0,
        max_worker_rss_mb=_positive(options.get("max_worker_rss_mb")) or 0,
        worker_rss_check_interval_s=_seconds(
            options.get("worker_rss_check_interval"), WORKER_RSS_CHECK_INTERVAL_S
        ),
    )


# -- Ray placement -----------------------------------------------------------------------------

#: The ``load_on_devices`` / ``device`` value that places a model's workers on Ray.
RAY_DEVICE = "ray"
#: CPUs a worker's actor asks Ray for unless ``option.ray_num_cpus`` says otherwise: one
#: worker is one busy Python process.
RAY_NUM_CPUS = 1.0


@dataclass(frozen=True)
class RayResources:
    """What each Ray-placed worker asks its node for (``option.ray_*`` of the model).

    ``option.ray_num_cpus`` (default 1), ``option.ray_num_gpus`` (default 0) and
    ``option.ray_resources``, a JSON object of custom resources, ``{"node2": 1}``: the
    worker runs only on a node that has them (``ray start --resources``).
    """

    num_cpus: float = RAY_NUM_CPUS
    num_gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> RayResources:
        """Raise RayPlacement (400) naming the option that is not a valid amount."""

        def amount(key: str, default: float) -> float:
            value = options.get(key)
            if value is None or str(value).strip() == "":
                return default
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not math.isfinite(number) or number < 0:
                raise RayPlacement.bad_option(key, str(value), "a number >= 0")
            return number

        custom: dict[str, float] = {}
        text = options.get("ray_resources")
        if text is not None and str(text).strip():
            expected = 'a JSON object of resource amounts, e.g. {"node2": 1}'
            try:
                parsed = json.loads(text)
            except ValueError:
                raise RayPlacement.bad_option("ray_resources", str(text), expected) from None
            if not isinstance(parsed, dict):
                raise RayPlacement.bad_option("ray_resources", str(text), expected)
            for name, value in parsed.items():
                good = (isinstance(value, int | float) and not isinstance(value, bool)
                        and math.isfinite(value) and value >= 0)
                if not name or not good or name in ("CPU", "GPU"):
                    raise RayPlacement.bad_option("ray_resources", str(text), expected)
                custom[str(name)] = float(value)
        return cls(amount("ray_num_cpus", RAY_NUM_CPUS), amount("ray_num_gpus", 0.0), custom)

    def __str__(self) -> str:
        parts = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}
        return json.dumps({k: v for k, v in parts.items() if v})
