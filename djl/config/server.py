"""The server's settings (spec §8.4) as one frozen value, and its listener addresses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from djl.config.constants import MIB, SECONDS


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
