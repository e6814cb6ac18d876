"""Reading the ServerConfig, once, at start-up (spec §8.3, lowest first):
``config.properties`` < command line < ``SERVING_<KEY>`` environment < SageMaker size
overrides. The one place the server's settings are read from ``os.environ``."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from djl.config.constants import MIB
from djl.config.parsing import parse_java_bool, parse_java_int, parse_rule
from djl.config.server import Address, ConfigError, ServerConfig
from djl.properties import read_properties


def _int(key: str, value: str) -> int:
    try:
        return parse_java_int(value.strip())
    except ValueError:
        raise ConfigError(f"Invalid integer for {key}: {value!r}") from None


def _bool(value: str) -> bool:
    return parse_java_bool(value.strip())


def _env_key(suffix: str) -> str:
    """``OPTION_X_Y`` → ``x_y`` when the suffix is all upper case, digits and underscores."""
    return suffix.lower() if re.fullmatch(r"[A-Z0-9_]+", suffix) else suffix


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
