"""Configuration: the one home of every default and every environment variable read.

``ServerConfig`` is read once, at start-up (spec §8.3); ``ModelConfig`` merges a model's
settings (spec §4.6). Both are frozen; nothing else reads a setting from ``os.environ``
(worker processes only inherit it). The package's rooms:

- ``constants``: fixed settings that are not configuration keys (grace periods, windows);
- ``parsing``: how a setting's text reads (Java ints and booleans, durations, rules);
- ``server``: ``ServerConfig`` and its listener ``Address``;
- ``load``: reading the ServerConfig from file, command line and environment;
- ``model``: ``RegisterParams`` and the per-model ``ModelConfig`` merge;
- ``ray_placement``: the Ray device value and each worker's resources.

Callers import from ``djl.config``; the rooms import each other directly.
"""

from __future__ import annotations

from djl.config.constants import (
    ERROR_RATE_WINDOW_S,
    FIGURES_HISTORY_S,
    FIGURES_SAMPLE_S,
    FIGURES_WINDOW_S,
    HYPERCORN_GRACEFUL_TIMEOUT_S,
    HYPERCORN_MIN_STARTUP_TIMEOUT_S,
    HYPERCORN_SHUTDOWN_TIMEOUT_S,
    MAX_LORAS,
    MAX_NEW_TOKENS,
    MAX_REQUEST_HEAD_BYTES,
    MAX_ROLLING_BATCH_SIZE,
    MIB,
    RESERVED_MEMORY_MB,
    ROLLING_BATCH_DEFAULT,
    ROLLING_BATCH_VALUES,
    SECONDS,
    SERVER_GRACEFUL_TIMEOUT_S,
    SHUTDOWN_GRACE_S,
    TLS_HANDSHAKE_TIMEOUT_S,
    UNREGISTER_GRACE_S,
    WORKER_RSS_CHECK_INTERVAL_S,
)
from djl.config.load import load_server_config, locate_config_file
from djl.config.model import ModelConfig, RegisterParams, build_model_config
from djl.config.parsing import (
    Rule,
    parse_duration,
    parse_int,
    parse_java_bool,
    parse_java_int,
    parse_rule,
)
from djl.config.ray_placement import RAY_DEVICE, RAY_NUM_CPUS, RayResources
from djl.config.server import Address, ConfigError, ServerConfig

__all__ = [
    "ERROR_RATE_WINDOW_S", "FIGURES_HISTORY_S", "FIGURES_SAMPLE_S", "FIGURES_WINDOW_S",
    "HYPERCORN_GRACEFUL_TIMEOUT_S", "HYPERCORN_MIN_STARTUP_TIMEOUT_S",
    "HYPERCORN_SHUTDOWN_TIMEOUT_S", "MAX_LORAS", "MAX_NEW_TOKENS", "MAX_REQUEST_HEAD_BYTES",
    "MAX_ROLLING_BATCH_SIZE", "MIB", "RAY_DEVICE", "RAY_NUM_CPUS", "RESERVED_MEMORY_MB",
    "ROLLING_BATCH_DEFAULT", "ROLLING_BATCH_VALUES", "SECONDS", "SERVER_GRACEFUL_TIMEOUT_S",
    "SHUTDOWN_GRACE_S", "TLS_HANDSHAKE_TIMEOUT_S", "UNREGISTER_GRACE_S",
    "WORKER_RSS_CHECK_INTERVAL_S", "Address", "ConfigError", "ModelConfig", "RayResources",
    "RegisterParams", "Rule", "ServerConfig", "build_model_config", "load_server_config",
    "locate_config_file", "parse_duration", "parse_int", "parse_java_bool", "parse_java_int",
    "parse_rule",
]
