"""Global and per-model configuration (spec §1.1, §2.2, §4.6, §8.2–§8.5)."""

from __future__ import annotations

import shutil
import subprocess
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from djl.config import (
    Address,
    ConfigError,
    RayResources,
    RegisterParams,
    ServerConfig,
    build_model_config,
    load_server_config,
    locate_config_file,
    parse_java_bool,
)
from djl.errors import BadRequest, IllegalArgument


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty MODEL_SERVER_HOME, so no stray config.properties is picked up."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(home: Path, **kwargs) -> ServerConfig:
    env = {"MODEL_SERVER_HOME": str(home), **kwargs.pop("env", {})}
    return load_server_config(env=env, **kwargs)


# -- global config: defaults and precedence (§8.3, §8.4) -------------------------------------


def test_defaults(home: Path) -> None:
    config = load(home)
    assert config.inference_address == Address("http", "127.0.0.1", 8080)
    assert config.management_address == config.inference_address
    assert not config.dual_listeners
    assert config.job_queue_size == 1000
    assert config.batch_size == 1
    assert config.max_batch_delay_ms == 100
    assert config.max_idle_time_s == 60
    assert config.max_request_size == 67108864
    assert config.load_on_devices == "*"
    assert config.wait_model_loading is True
    assert config.allow_multi_status is False
    assert config.model_store == "" and config.load_models == ""
    assert config.model_server_home == home.resolve()
    assert config.predict_timeout_s == 120 and config.model_loading_timeout_s == 240


CONFIG = """\
# test config
inference_address=http://0.0.0.0:8081
management_address=http://0.0.0.0:8082
model_store=file_store
load_models=file_model
job_queue_size=10
max_batch_delay=200
max_request_size=100
wait_model_loading=false
"""


def test_config_file_values(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "config.properties", CONFIG)
    config = load(home, config_file=str(path))
    assert config.inference_address == Address("http", "0.0.0.0", 8081)
    assert config.management_address == Address("http", "0.0.0.0", 8082)
    assert config.dual_listeners
    assert config.model_store == str(home.resolve() / "file_store")  # relative to the home
    assert config.load_models == "file_model"
    assert config.job_queue_size == 10
    assert config.max_batch_delay_ms == 200
    assert config.max_request_size == 100
    assert config.wait_model_loading is False


def test_cli_overrides_file(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "config.properties", CONFIG)
    config = load(home, config_file=str(path), models=["a", "b=file:/x"], model_store="/abs/cli")
    assert config.load_models == "a,b=file:/x"
    assert config.model_store == "/abs/cli"
    assert config.job_queue_size == 10  # untouched keys still come from the file


def test_serving_env_overrides_cli_and_file(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "config.properties", CONFIG)
    env = {
        "SERVING_LOAD_MODELS": "env_model",
        "SERVING_MODEL_STORE": "/abs/env",
        "SERVING_JOB_QUEUE_SIZE": "20",
        "SERVING_INFERENCE_ADDRESS": "http://127.0.0.1:9000",
        "SERVING_MAX_REQUEST_SIZE": "200",
    }
    config = load(home, config_file=str(path), models=["cli"], model_store="/cli", env=env)
    assert config.load_models == "env_model"
    assert config.model_store == "/abs/env"
    assert config.job_queue_size == 20
    assert config.inference_address == Address("http", "127.0.0.1", 9000)
    assert config.max_request_size == 200
    assert config.max_batch_delay_ms == 200  # from the file


def test_sagemaker_request_size_wins_over_everything(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "config.properties", CONFIG)
    env = {"SERVING_MAX_REQUEST_SIZE": "200", "SAGEMAKER_MAX_REQUEST_SIZE": "300"}
    assert load(home, config_file=str(path), env=env).max_request_size == 300
    env = {"SERVING_MAX_REQUEST_SIZE": "200", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}
    assert load(home, config_file=str(path), env=env).max_request_size == 2 * 1024 * 1024
    env = {"SAGEMAKER_MAX_REQUEST_SIZE": "300", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}
    assert load(home, env=env).max_request_size == 300


def test_overrides_sit_between_cli_and_env(home: Path) -> None:
    config = load(
        home,
        models=["cli"],
        overrides={"load_models": "override", "job_queue_size": "5"},
        env={"SERVING_JOB_QUEUE_SIZE": "6"},
    )
    assert config.load_models == "override"
    assert config.job_queue_size == 6


def test_timeouts_from_env(home: Path) -> None:
    config = load(home, env={"PREDICT_TIMEOUT": "30", "MODEL_LOADING_TIMEOUT": "600"})
    assert config.predict_timeout_s == 30 and config.model_loading_timeout_s == 600


def test_ray_settings_from_file_keys_and_env(home: Path) -> None:
    config = load(home, overrides={"ray_address": "10.0.0.5:6379", "ray_placement_timeout": "7",
                                   "ray_connect_timeout": "3", "ray_callback_host": "10.0.0.9"})
    assert (config.ray_address, config.ray_placement_timeout_s, config.ray_connect_timeout_s,
            config.ray_callback_host) == ("10.0.0.5:6379", 7.0, 3.0, "10.0.0.9")
    assert load(home, env={"SERVING_RAY_ADDRESS": "auto"}).ray_address == "auto"
    assert load(home).ray_address == ""  # no Ray unless asked for


def test_ray_resources_from_options() -> None:
    assert RayResources.from_options({}) == RayResources(1.0, 0.0, {})
    got = RayResources.from_options({"ray_num_cpus": "0.5", "ray_num_gpus": "1",
                                     "ray_resources": '{"node2": 1, "accel": 0.25}'})
    assert got == RayResources(0.5, 1.0, {"node2": 1.0, "accel": 0.25})
    assert str(got) == '{"CPU": 0.5, "GPU": 1.0, "node2": 1.0, "accel": 0.25}'


@pytest.mark.parametrize(("options", "named"), [
    ({"ray_num_cpus": "-1"}, "option.ray_num_cpus '-1'"),
    ({"ray_num_gpus": "nan"}, "option.ray_num_gpus 'nan'"),
    ({"ray_resources": "[1]"}, "option.ray_resources '[1]'"),
    ({"ray_resources": '{"node2": "one"}'}, "option.ray_resources"),
    ({"ray_resources": '{"CPU": 2}'}, "option.ray_resources"),
    ({"ray_resources": "{node2: 1}"}, "option.ray_resources"),
])
def test_bad_ray_resources_are_a_400_naming_the_option(options: dict[str, str],
                                                       named: str) -> None:
    with pytest.raises(BadRequest) as info:
        RayResources.from_options(options)
    assert info.value.status == 400 and named in info.value.message


def test_serving_min_max_workers_are_kept_for_models_not_global(home: Path) -> None:
    config = load(home, env={"SERVING_MIN_WORKERS": "2", "SERVING_MAX_WORKERS": "3"})
    assert (config.serving_min_workers, config.serving_max_workers) == ("2", "3")


def test_option_and_args_env(home: Path) -> None:
    env = {
        "OPTION_ENTRYPOINT": "model.py",
        "OPTION_ENGINE": "Python",
        "OPTION_TENSOR_PARALLEL_DEGREE": "2",
        "OPTION_mixedCase": "kept",
        "OPTION_EMPTY": "",
        "ARGS_JOB_QUEUE_SIZE": "7",
    }
    config = load(home, env=env)
    assert config.env_options == {
        "entryPoint": "model.py",
        "tensor_parallel_degree": "2",
        "mixedCase": "kept",
    }
    assert config.env_arguments == {"engine": "Python", "job_queue_size": "7"}


# -- locating config.properties (§8.2) -------------------------------------------------------


def test_missing_config_file_is_an_error(home: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.properties")
    with pytest.raises(ConfigError) as info:
        load(home, config_file=missing)
    assert str(info.value) == f"Configuration file not found: {missing}"


def test_home_conf_is_preferred_then_home(home: Path) -> None:
    write(home / "config.properties", "job_queue_size=2\n")
    assert load(home).job_queue_size == 2
    write(home / "conf" / "config.properties", "job_queue_size=3\n")
    assert load(home).job_queue_size == 3
    assert locate_config_file(None, {"MODEL_SERVER_HOME": str(home)}) == (
        home / "conf" / "config.properties"
    )


def test_cli_file_beats_home(home: Path, tmp_path: Path) -> None:
    write(home / "conf" / "config.properties", "job_queue_size=3\n")
    path = write(tmp_path / "other.properties", "job_queue_size=4\n")
    assert load(home, config_file=str(path)).job_queue_size == 4


def test_no_file_anywhere(home: Path) -> None:
    assert locate_config_file(None, {"MODEL_SERVER_HOME": str(home)}) is None


def test_model_server_home_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not exist"):
        load_server_config(env={"MODEL_SERVER_HOME": str(tmp_path / "missing")})


# -- bad values abort start-up ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "1.5", "1_000", "", "0x10", "12abc"])
def test_bad_integer_in_file_is_a_config_error(home: Path, value: str) -> None:
    write(home / "config.properties", f"job_queue_size={value}\n")
    with pytest.raises(ConfigError, match="job_queue_size"):
        load(home)


def test_integer_surrounding_whitespace_is_tolerated(home: Path) -> None:
    write(home / "config.properties", "job_queue_size = 42  \n")
    assert load(home).job_queue_size == 42


@pytest.mark.parametrize(
    "env",
    [
        {"SERVING_BATCH_SIZE": "x"},
        {"SAGEMAKER_MAX_REQUEST_SIZE": "big"},
        {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1.5"},
        {"PREDICT_TIMEOUT": "soon"},
        {"MODEL_LOADING_TIMEOUT": "later"},
    ],
)
def test_bad_numbers_in_env_are_config_errors(home: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load(home, env=env)


def test_bad_address_in_file_is_a_config_error(home: Path) -> None:
    write(home / "config.properties", "inference_address=ftp://x\n")
    with pytest.raises(ConfigError, match="Invalid binding address: ftp://x"):
        load(home)


def test_malformed_escape_in_file_is_a_config_error(home: Path) -> None:
    write(home / "config.properties", "model_store=\\u12\n")
    with pytest.raises(ConfigError, match="Malformed"):
        load(home)


# -- Address.parse (§1.1) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "rendered"),
    [
        ("http://localhost", Address("http", "localhost", 80), "http://localhost:80"),
        ("https://example.com", Address("https", "example.com", 443), "https://example.com:443"),
        ("http://0.0.0.0:8080", Address("http", "0.0.0.0", 8080), "http://0.0.0.0:8080"),
        ("HTTP://Host:1", Address("http", "Host", 1), "http://Host:1"),
        ("https://h:8443/", Address("https", "h", 8443), "https://h:8443"),
        ("http://127.0.0.1:0", Address("http", "127.0.0.1", 0), "http://127.0.0.1:0"),
        ("http://h:65535", Address("http", "h", 65535), "http://h:65535"),
        ("unix:/tmp/djl.sock", Address("unix", path="/tmp/djl.sock"), "unix:/tmp/djl.sock"),
        ("UNIX:/a", Address("unix", path="/a"), "unix:/a"),
        # IPv6 literals in brackets: a deliberate extension of §1.1 (Java refuses them).
        ("http://[::1]:8080", Address("http", "::1", 8080), "http://[::1]:8080"),
        ("https://[2001:DB8::1]", Address("https", "2001:DB8::1", 443), "https://[2001:DB8::1]:443"),
    ],
)
def test_address_parse(text: str, expected: Address, rendered: str) -> None:
    address = Address.parse(text)
    assert address == expected
    assert str(address) == rendered


def test_address_bind_and_loopback() -> None:
    assert Address.parse("http://127.0.0.1:8080").bind == "127.0.0.1:8080"
    assert Address.parse("http://[::1]:8080").bind == "[::1]:8080"
    assert Address.parse("unix:/tmp/s").bind == "unix:/tmp/s"
    assert Address.parse("http://localhost").is_loopback
    assert Address.parse("unix:/tmp/s").is_loopback
    assert not Address.parse("http://0.0.0.0:80").is_loopback


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        # Judged on the address, not on a prefix of the name.
        ("http://127.attacker.com:1", False),
        ("http://127.0.0.1.nip.io:1", False),
        ("http://localhost.attacker.com:1", False),
        ("http://127.0.0.1:1", True),
        ("http://127.8.9.10:1", True),
        ("HTTP://LOCALHOST:1", True),
        ("http://LocalHost:1", True),
        ("http://[::1]:1", True),
        ("http://[0:0:0:0:0:0:0:1]:1", True),
        ("http://[::ffff:127.0.0.1]:1", True),
        ("http://[::]:1", False),
        ("http://[2001:db8::1]:1", False),
        ("http://10.0.0.1:1", False),
        ("http://0.0.0.0:1", False),
    ],
)
def test_address_is_loopback(text: str, loopback: bool) -> None:
    assert Address.parse(text).is_loopback is loopback


@pytest.mark.parametrize(
    "text",
    [
        "localhost:8080",
        "ftp://host",
        "http://",
        "http://host:",
        "http://host:port",
        "http://[::1",
        "http://[1:2:3]:80",  # not an IPv6 address
        "http://[localhost]:80",
        "http://a:b:80",
        "unix:relative/path",
        "unix:",
        "",
    ],
)
def test_address_parse_invalid(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Address.parse(text)
    assert str(info.value) == f"Invalid binding address: {text}"


@pytest.mark.parametrize("text", ["http://localhost:65536", "https://h:99999"])
def test_address_port_out_of_range(text: str) -> None:
    with pytest.raises(ConfigError, match=f"Invalid port number: {text}"):
        Address.parse(text)


# -- build_model_config (§4.6) ---------------------------------------------------------------


def server(home: Path, **env: str) -> ServerConfig:
    return load(home, env=env)


def test_model_defaults_come_from_the_global_config(home: Path) -> None:
    config = load(
        home, overrides={"job_queue_size": "50", "batch_size": "2", "max_batch_delay": "7"}
    )
    model = build_model_config(config, {})
    assert (model.job_queue_size, model.batch_size, model.max_batch_delay_ms) == (50, 2, 7)
    assert model.max_idle_time_s == 60
    assert model.load_on_devices == "*"
    assert model.engine is None
    assert model.retry_threshold == config.retry_threshold


def test_env_defaults_lose_to_serving_properties(home: Path) -> None:
    config = server(
        home,
        ARGS_BATCH_SIZE="2",
        ARGS_JOB_QUEUE_SIZE="5",
        OPTION_ENTRYPOINT="env.py",
        OPTION_FOO="env",
        OPTION_ENGINE="PyTorch",
    )
    model = build_model_config(config, {"batch_size": "4", "option.entryPoint": "file.py"})
    assert model.batch_size == 4
    assert model.job_queue_size == 5
    assert model.options["entryPoint"] == "file.py"
    assert model.options["foo"] == "env"
    assert model.engine == "PyTorch"
    model = build_model_config(config, {"engine": "Python"})
    assert model.engine == "Python"


def test_register_params_win_when_positive(home: Path) -> None:
    config = server(home)
    properties = {
        "batch_size": "4",
        "job_queue_size": "10",
        "max_batch_delay": "300",
        "max_idle_time": "30",
        "load_on_devices": "cpu",
        "engine": "Python",
    }
    params = RegisterParams(
        url="u",
        batch_size=8,
        job_queue_size=20,
        max_batch_delay_ms=400,
        max_idle_time_s=40,
        device="gpu0",
        engine="PyTorch",
    )
    model = build_model_config(config, properties, params)
    assert (model.batch_size, model.job_queue_size) == (8, 20)
    assert (model.max_batch_delay_ms, model.max_idle_time_s) == (400, 40)
    assert (model.load_on_devices, model.engine) == ("gpu0", "PyTorch")


@pytest.mark.parametrize("unset", [0, -1])
def test_values_at_or_below_zero_mean_unset(home: Path, unset: int) -> None:
    config = load(home, overrides={"job_queue_size": "50"})
    params = RegisterParams(url="u", batch_size=unset, job_queue_size=unset)
    model = build_model_config(config, {"batch_size": "4", "job_queue_size": str(unset)}, params)
    assert model.batch_size == 4  # param <= 0 → serving.properties
    assert model.job_queue_size == 50  # both <= 0 → global config


def test_max_dynamic_batch_size_alias(home: Path) -> None:
    config = server(home)
    model = build_model_config(config, {"max_dynamic_batch_size": "6"})
    assert model.batch_size == 6
    assert model.arguments["batch_size"] == "6"
    model = build_model_config(config, {"max_dynamic_batch_size": "6", "batch_size": "3"})
    assert model.batch_size == 3  # batch_size wins when both are present


def test_options_and_arguments_split(home: Path) -> None:
    model = build_model_config(
        server(home), {"option.entryPoint": "m.py", "option.env": "A=1", "minWorkers": "2"}
    )
    assert model.options == {"entryPoint": "m.py", "env": "A=1"}
    assert model.arguments == {"minWorkers": "2"}


def test_url_arguments_sit_below_serving_properties(home: Path) -> None:
    model = build_model_config(
        server(home), {"batch_size": "4"}, url_arguments={"batch_size": "9", "job_queue_size": "3"}
    )
    assert (model.batch_size, model.job_queue_size) == (4, 3)


def test_timeouts_and_python_executable(home: Path) -> None:
    config = server(home, PREDICT_TIMEOUT="30", PYTHON_EXECUTABLE="/usr/bin/python3.11")
    model = build_model_config(config, {})
    assert model.predict_timeout_s == 30
    assert model.model_loading_timeout_s == 240
    assert model.python_executable == "/usr/bin/python3.11"
    model = build_model_config(
        config,
        {
            "option.predict_timeout": "5",
            "option.model_loading_timeout": "not-a-number",  # ignored (with a warning)
            "option.pythonExecutable": "/venv/bin/python",
        },
    )
    assert model.predict_timeout_s == 5
    assert model.model_loading_timeout_s == 240
    assert model.python_executable == "/venv/bin/python"


def test_serving_min_max_workers_env_is_put_if_absent(home: Path) -> None:
    config = server(home, SERVING_MIN_WORKERS="2", SERVING_MAX_WORKERS="3")
    assert build_model_config(config, {}).workers_for("cpu", cpu_count=8) == (2, 3)
    model = build_model_config(config, {"maxWorkers": "5"})
    assert model.workers_for("cpu", cpu_count=8) == (2, 5)


def test_sagemaker_model_overrides_beat_serving_properties(home: Path) -> None:
    config = server(
        home,
        SAGEMAKER_NUM_MODEL_WORKERS="3",
        SAGEMAKER_STARTUP_TIMEOUT="900",
        SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS="60",
    )
    properties = {
        "minWorkers": "1",
        "maxWorkers": "8",
        "option.model_loading_timeout": "100",
        "option.predict_timeout": "10",
    }
    model = build_model_config(config, properties)
    assert model.workers_for("cpu", cpu_count=16) == (3, 3)
    assert model.model_loading_timeout_s == 900
    assert model.predict_timeout_s == 60


def test_retry_threshold(home: Path) -> None:
    config = server(home, SERVING_RETRY_THRESHOLD="5")
    assert config.retry_threshold == 5
    assert build_model_config(config, {}).retry_threshold == 5
    assert build_model_config(config, {"retry_threshold": "0"}).retry_threshold == 0
    with pytest.raises(IllegalArgument, match='For input string: "many"'):
        build_model_config(config, {"retry_threshold": "many"})


def test_bad_integer_in_serving_properties_is_illegal_argument(home: Path) -> None:
    with pytest.raises(IllegalArgument, match='For input string: "big"'):
        build_model_config(server(home), {"batch_size": "big"})


def test_worker_recycling_is_off_by_default_and_set_per_model(home: Path) -> None:
    """Issue 11.7: option.max_worker_requests / option.max_worker_rss_mb, 0 (off) unless
    set; OPTION_* environment defaults apply as for every option."""
    model = build_model_config(server(home), {})
    assert (model.max_worker_requests, model.max_worker_rss_mb) == (0, 0)
    assert model.worker_rss_check_interval_s == 5.0
    model = build_model_config(server(home, OPTION_MAX_WORKER_RSS_MB="512"), {
        "option.max_worker_requests": "1000", "option.worker_rss_check_interval": "0.5"})
    assert (model.max_worker_requests, model.max_worker_rss_mb) == (1000, 512)
    assert model.worker_rss_check_interval_s == 0.5
    with pytest.raises(IllegalArgument, match='For input string: "lots"'):
        build_model_config(server(home), {"option.max_worker_requests": "lots"})


def test_prometheus_and_sagemaker_health_override_come_from_the_environment(
    home: Path,
) -> None:
    config = server(home)
    assert not config.prometheus and not config.sagemaker_health_check_override
    config = server(home, SERVING_PROMETHEUS="true", SAGEMAKER_HEALTH_CHECK_OVERRIDE="TRUE")
    assert config.prometheus and config.sagemaker_health_check_override
    assert not config.health_check_override  # SERVING_HEALTH_CHECK_OVERRIDE is another rule


# -- ModelConfig.workers_for (§4.6) ----------------------------------------------------------


def workers(
    home: Path,
    properties: dict[str, str],
    device: str = "cpu",
    params: RegisterParams | None = None,
    cores: int = 8,
) -> tuple[int, int]:
    return build_model_config(server(home), properties, params).workers_for(device, cores)


def test_identity_model_example(home: Path) -> None:
    properties = {
        "cpu.minWorkers": "2",
        "cpu.maxWorkers": "4",
        "gpu.minWorkers": "2",
        "gpu.maxWorkers": "3",
        "job_queue_size": "10",
    }
    assert workers(home, properties, "cpu") == (2, 4)
    assert workers(home, properties, "gpu") == (2, 3)
    assert build_model_config(server(home), properties).job_queue_size == 10


def test_device_type_keys_beat_plain_keys(home: Path) -> None:
    properties = {
        "minWorkers": "1",
        "maxWorkers": "6",
        "cpu.minWorkers": "3",
        "cpu.maxWorkers": "5",
    }
    assert workers(home, properties, "cpu") == (3, 5)
    assert workers(home, properties, "gpu") == (1, 6)


def test_defaults_min_one_cpu_max_cores_gpu_max_one(home: Path) -> None:
    assert workers(home, {}, "cpu", cores=8) == (1, 8)
    assert workers(home, {}, "cpu", cores=1) == (1, 1)
    assert workers(home, {}, "gpu") == (1, 1)
    assert workers(home, {}, "nc") == (1, 1)


def test_cpu_max_divides_cores_by_omp_threads(home: Path) -> None:
    def cpu_workers(omp: str) -> tuple[int, int]:
        config = server(home, OMP_NUM_THREADS=omp)
        return build_model_config(config, {}).workers_for("cpu", 8)

    assert cpu_workers("2") == (1, 4)
    assert cpu_workers("16") == (1, 1)
    assert cpu_workers("0") == (1, 8)
    assert cpu_workers("lots") == (1, 8)


def test_cuda_visible_devices_is_read_once_into_the_config(home: Path) -> None:
    from djl.wlm.devices import Device, resolve_devices

    config = server(home, CUDA_VISIBLE_DEVICES="0,1")
    assert config.cuda_visible_devices == "0,1"
    assert resolve_devices("*", visible_devices=config.cuda_visible_devices) == [
        Device("gpu", 0), Device("gpu", 1)]
    assert resolve_devices("*", visible_devices="-1") == [Device("cpu", -1)]
    assert server(home).cuda_visible_devices is None


def test_min_is_lowered_to_max(home: Path) -> None:
    assert workers(home, {"minWorkers": "5"}, "gpu") == (1, 1)
    assert workers(home, {"minWorkers": "5", "maxWorkers": "2"}, "cpu") == (2, 2)
    assert workers(home, {"cpu.minWorkers": "9"}, "cpu", cores=4) == (4, 4)


def test_zero_min_is_allowed_but_zero_max_means_unset(home: Path) -> None:
    assert workers(home, {"minWorkers": "0", "maxWorkers": "0"}, "cpu", cores=4) == (0, 4)
    assert workers(home, {"cpu.maxWorkers": "0", "maxWorkers": "3"}, "cpu") == (1, 3)
    assert workers(home, {"cpu.minWorkers": "-1", "minWorkers": "2"}, "cpu") == (2, 8)


def test_explicit_register_params_win(home: Path) -> None:
    properties = {"cpu.minWorkers": "2", "cpu.maxWorkers": "4"}
    params = RegisterParams(url="u", min_workers=1, max_workers=6)
    assert workers(home, properties, "cpu", params) == (1, 6)
    assert workers(home, properties, "gpu", params) == (1, 6)
    # min alone is accepted and clamped to the max (Appendix B)
    assert workers(home, properties, "cpu", RegisterParams(url="u", min_workers=7)) == (4, 4)
    # max alone; min from the properties, lowered to it
    assert workers(home, properties, "cpu", RegisterParams(url="u", max_workers=1)) == (1, 1)
    # -1 means "not given"
    params = RegisterParams(url="u", min_workers=-1, max_workers=-1)
    assert workers(home, properties, "cpu", params) == (2, 4)
    # explicit 0 workers is allowed
    assert workers(home, properties, "cpu", RegisterParams(url="u", max_workers=0)) == (0, 0)


def test_bad_worker_count_is_illegal_argument(home: Path) -> None:
    with pytest.raises(IllegalArgument, match='For input string: "two"'):
        workers(home, {"cpu.minWorkers": "two"})


# -- RegisterParams.from_query (§2.2) --------------------------------------------------------


def from_query(**query: object) -> RegisterParams:
    return RegisterParams.from_query(query.get)


def test_url_is_required() -> None:
    for query in ({}, {"url": ""}, {"url": None}):
        with pytest.raises(BadRequest) as info:
            from_query(**query)
        assert info.value.message == "Parameter url is required."
        assert info.value.status == 400
        assert not isinstance(info.value, IllegalArgument)


def test_all_parameters() -> None:
    params = from_query(
        url="file:/models/m",
        model_name="m",
        model_version="1.0",
        engine="Python",
        device="cpu;gpu0",
        job_queue_size="10",
        batch_size="4",
        max_batch_delay="200",
        max_idle_time="60",
        min_worker="1",
        max_worker="3",
        synchronous="false",
    )
    assert params == RegisterParams(
        url="file:/models/m",
        model_name="m",
        model_version="1.0",
        engine="Python",
        device="cpu;gpu0",
        job_queue_size=10,
        batch_size=4,
        max_batch_delay_ms=200,
        max_idle_time_s=60,
        min_workers=1,
        max_workers=3,
        synchronous=False,
    )


def test_unset_parameters_are_none() -> None:
    params = from_query(url="u", model_name="", batch_size="", engine="")
    assert params == RegisterParams(url="u")
    assert params.synchronous is True


def test_negative_numbers_parse() -> None:
    assert from_query(url="u", batch_size="-1").batch_size == -1
    assert from_query(url="u", min_worker="+2").min_workers == 2


def test_json_body_integers() -> None:
    assert from_query(url="u", batch_size=4, max_worker=2).batch_size == 4


@pytest.mark.parametrize("value", ["x", "1.5", "1_0", " 5", "5 ", "0x1", 1.5, True])
def test_bad_integer_parameter(value: object) -> None:
    with pytest.raises(IllegalArgument) as info:
        from_query(url="u", batch_size=value)
    assert info.value.message == f'For input string: "{value}"'
    assert info.value.type == "NumberFormatException"


# Spec §2.2: only "true" (any case) is true, so an empty value is false, as for workflows.
@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", False), ("true", True), ("TRUE", True), ("True", True), (True, True),
     ("false", False), ("yes", False), ("1", False), (False, False)],
)  # fmt: skip
def test_synchronous(value: object, expected: bool) -> None:
    assert from_query(url="u", synchronous=value).synchronous is expected


def test_invalid_allowed_urls_pattern_aborts_startup():
    with pytest.raises(ConfigError, match="Invalid allowed_urls pattern"):
        load_server_config(env={}, overrides={"allowed_urls": "file:.*,http://(unclosed"})


# -- https needs key material (spec §8.6) ------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {"env": {"SERVING_INFERENCE_ADDRESS": "https://127.0.0.1:0"}},
    {"overrides": {"inference_address": "https://127.0.0.1:0"}},
    {"overrides": {"management_address": "https://127.0.0.1:0"}},
    {"overrides": {"inference_address": "https://127.0.0.1:0", "certificate_file": "c.pem",
                   "private_key_file": "missing.pem"}},
])
def test_https_without_key_material_refuses_to_start(home: Path, settings: dict) -> None:
    """Never plain HTTP (nor a TLS listener without a key) where https was asked for."""
    write(home / "c.pem", "not checked: the key is missing anyway")
    with pytest.raises(ConfigError, match="needs certificate_file and private_key_file"):
        load(home, **settings)


def _self_signed(folder: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
         "-out", "c.pem", "-days", "1", "-subj", "/CN=localhost"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )


async def test_https_with_key_material_serves_over_tls(home: Path) -> None:
    from djl.__main__ import run_server

    _self_signed(home)
    # Relative paths are resolved against MODEL_SERVER_HOME.
    address = "https://127.0.0.1:0"
    config = load(home, overrides={"inference_address": address, "management_address": address,
                                   "certificate_file": "c.pem", "private_key_file": "k.pem",
                                   "load_models": "NONE"})
    assert config.certificate_file == str(home.resolve() / "c.pem")
    assert config.private_key_file == str(home.resolve() / "k.pem")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(run_server, config, shutdown=stop))
        assert url.startswith("https://")
        try:
            port = url.rsplit(":", 1)[1].rstrip("/")
            async with httpx.AsyncClient(verify=False, timeout=30) as client:
                r = await client.get(f"https://127.0.0.1:{port}/ping")
                assert r.status_code == 200 and r.json() == {}
                assert r.headers["x-request-id"]
                with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
                    await client.get(f"http://127.0.0.1:{port}/ping")
        finally:
            stop.set()


@pytest.mark.parametrize(("value", "default", "expected"), [
    (None, True, True), (None, False, False), ("", True, False), ("true", False, True),
    ("TRUE", False, True), ("True", True, True), ("false", True, False), ("yes", True, False),
    ("1", True, False), (" true", True, False),
])
def test_parse_java_bool(value, default, expected):
    assert parse_java_bool(value, default) is expected
