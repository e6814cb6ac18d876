"""Model preparation: from a resolved source to the frozen plan its worker pool is built from.

Registration (spec §4.7 step 1 and the checks of step 3) in one synchronous function with
no trio in it: read ``serving.properties``, merge the settings (§4.6), choose the engine
(§4.4) and the entry point (§6.2; both in ``engine_choice.py``), check memory (§4.8),
resolve the devices (§5.8) and build the worker command. It reads a few small files and
stats a few more, so the registry runs it in ``trio.to_thread``; tests call it directly.
``djl.registry`` keeps endpoints, versions and lifecycles; ``wlm/`` gets a
``PreparedModel`` and never looks at a folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from djl import store
from djl.config import (
    MAX_LORAS,
    MAX_NEW_TOKENS,
    MAX_ROLLING_BATCH_SIZE,
    RAY_DEVICE,
    RESERVED_MEMORY_MB,
    ModelConfig,
    RayResources,
    RegisterParams,
    ServerConfig,
    build_model_config,
    parse_int,
)
from djl.engine_choice import (
    MODEL_FILES,
    RUNTIME_ENGINES,
    choose_engine,
    generation_mode,
    model_file,
    python_entry_point,
)
from djl.errors import (
    BadRequest,
    OutOfMemory,
    RayPlacement,
)
from djl.properties import read_properties
from djl.wlm.devices import Device, resolve_devices
from djl.wlm.worker import WorkerCommand

#: Device types the tensor engines can map to a device (cpu, cuda:N; a Ray worker is
#: either, by its option.ray_num_gpus).
TORCH_DEVICE_TYPES = ("cpu", "gpu", RAY_DEVICE)
#: The runtime engine of a Hugging Face causal LM (djl/runtime/generation/).
GENERATION = "Generation"
#: The engines whose device rule and intra-op threads are the tensor engines'.
TORCH_RUNTIMES = (*MODEL_FILES, GENERATION)
#: How the PyTorch engine batches (the ``batchifier`` key DJL uses); ``stack`` is our
#: default, where DJL's is ``none``: see torch_engine.py.
BATCHIFIERS = ("stack", "none")


@dataclass(frozen=True)
class PreparedModel:
    """Everything a WorkerPool needs to run one model, decided once at registration."""

    config: ModelConfig
    #: The engine as named (``Python``, ``MPI``, ``PyTorch``).
    engine: str
    command: WorkerCommand
    devices: tuple[Device, ...]
    #: True when the model's ``requirements.txt`` must be installed before its first worker
    #: (Python engines only: a TorchScript file imports nothing; never for a Ray placement:
    #: the nodes' Python is not this one).
    install_requirements: bool
    #: Set when the workers run on Ray (load_on_devices=ray): what each one asks for.
    ray: RayResources | None = None


def prepare_model(
    server: ServerConfig,
    source: store.ModelSource,
    params: RegisterParams,
    *,
    options: Mapping[str, str] | None = None,
    arguments: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> PreparedModel:
    """The plan for ``source``; raises the DjlError a client should see when it cannot run.

    ``options`` and ``arguments`` are a workflow file's per-model maps (below
    ``serving.properties``); ``cores`` defaults to the CPUs this process may use.
    """
    properties_file = source.model_dir / "serving.properties"
    properties = read_properties(properties_file) if properties_file.is_file() else {}
    properties = {**{f"option.{k}": v for k, v in (options or {}).items()},
                  **(arguments or {}), **properties}
    config = build_model_config(server, properties, params, source.arguments)
    engine = choose_engine(source, config)
    runtime = RUNTIME_ENGINES[engine]
    rolling_batch = generation_mode(source, config) if runtime == "Python" else None
    rolling_batch_size = 0
    if rolling_batch is not None:
        runtime, entry_point = GENERATION, "djl.runtime.generation"
        rolling_batch_size = 1 if rolling_batch == "disable" else parse_int(
            config.options.get("max_rolling_batch_size"), MAX_ROLLING_BATCH_SIZE) or 1
        if config.explicit_max_workers is None and not any(
                config.arguments.get(k) for k in ("maxWorkers", "cpu.maxWorkers")):
            # One worker holds the whole rolling batch; a second copy of the model on the
            # same cores only halves each one's threads.
            config = replace(config, explicit_max_workers=1)
    elif runtime in MODEL_FILES:
        entry_point = model_file(source, config, runtime)
    else:
        entry_point = python_entry_point(source, config, server)
    check_memory(config)
    devices = tuple(resolve_devices(config.load_on_devices,
                                    visible_devices=server.cuda_visible_devices))
    ray = ray_placement(server, config, devices)
    threads = 0
    if runtime in TORCH_RUNTIMES:
        unsupported = [str(d) for d in devices if d.device_type not in TORCH_DEVICE_TYPES]
        if unsupported:
            raise BadRequest(
                f"The {runtime} engine runs on cpu and gpu<N> devices, not "
                f"{', '.join(unsupported)}"
            )
        threads = intra_op_threads(config, server, devices, cores)
        if (runtime == GENERATION and not config.options.get("num_threads")
                and server.omp_num_threads <= 0):
            # A decode step is many small ops: on a busy 2-core machine two torch threads
            # made a step 6x slower (15 -> 99 ms) and a 32-sequence step 25x (bench/llm.py's
            # note); option.num_threads asks for more.
            threads = 1
        if ray is not None and not config.options.get("num_threads"):
            threads = max(1, int(ray.num_cpus))  # the CPUs Ray gave the worker, not ours
        batchifier = str(config.arguments.get("batchifier") or "stack").lower()
        if batchifier not in BATCHIFIERS:
            raise BadRequest(f"Unknown batchifier {batchifier}: use stack or none")
    init = {k: str(v) for k, v in config.options.items()}
    init.update({k: str(v) for k, v in config.arguments.items()})
    init.update({k: str(v) for k, v in source.arguments.items()})
    if runtime == GENERATION:  # the runtime reads no server configuration: send defaults
        init.setdefault("max_new_tokens", str(MAX_NEW_TOKENS))
        init.setdefault("max_rolling_batch_size", str(MAX_ROLLING_BATCH_SIZE))
        init.setdefault("max_loras", str(MAX_LORAS))
    command = WorkerCommand(
        python=config.python_executable,
        model_dir=source.model_dir,
        entry_point=entry_point,
        init_properties=init,
        handler=config.options.get("handler", "handle"),
        env=parse_env(config.options.get("env", "")),
        log_level=server.log_level,
        # A response may be as large as a request may be (an echo must not kill it).
        max_item_bytes=max(server.max_worker_item_bytes, server.max_request_size),
        pipeline_depth=server.pipeline_depth,
        stream_send_timeout_s=server.chunked_read_timeout_s,
        engine=runtime,
        num_threads=threads,
        rolling_batch_size=rolling_batch_size,
    )
    return PreparedModel(config, engine, command, devices,
                         install_requirements=runtime == "Python" and ray is None, ray=ray)


def ray_placement(server: ServerConfig, config: ModelConfig, devices: tuple[Device, ...]
                  ) -> RayResources | None:
    """The resources of each Ray worker when the model is placed on Ray, else None; 400
    without a ``ray_address``, for a mix of Ray and local devices, or a bad option."""
    if not any(d.device_type == RAY_DEVICE for d in devices):
        return None
    if not server.ray_address:
        raise RayPlacement.not_configured()
    if len(devices) > 1:
        raise RayPlacement.mixed()
    return RayResources.from_options(config.options)


def intra_op_threads(
    config: ModelConfig, server: ServerConfig, devices: tuple[Device, ...],
    cores: int | None = None,
) -> int:
    """torch's intra-op threads per worker: ``option.num_threads``, else
    ``OMP_NUM_THREADS``, else as many as keep workers × threads within the cores (every
    worker of every group may run at once, and oversubscribed torch threads spin against
    each other: STACK_NOTES measured 6× slower stacking with 2 threads on a busy 2-core box).
    """
    explicit = parse_int(config.options.get("num_threads"), 0) or 0
    if explicit > 0:
        return explicit
    if server.omp_num_threads > 0:
        return server.omp_num_threads
    cores = cores or len(os.sched_getaffinity(0)) or 1
    workers = sum(config.workers_for(d.device_type, cores)[1] for d in devices)
    return max(1, cores // max(workers, 1))


def parse_env(text: str) -> dict[str, str]:
    """``option.env``: ``K1=V1,K2=V2`` extra environment for the worker (spec §4.6)."""
    env: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            env[key.strip()] = value.strip()
    return env


def check_memory(config: ModelConfig, meminfo: Path = Path("/proc/meminfo")) -> None:
    """Memory admission (spec §4.8): free - required must stay above reserved."""
    required_mb = parse_int(config.arguments.get("required_memory_mb"), 0) or 0
    reserved_mb = parse_int(config.arguments.get("reserved_memory_mb"), RESERVED_MEMORY_MB) or 0
    try:
        text = meminfo.read_text()
    except OSError:
        return
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    if not m:
        return
    free_mb = int(m.group(1)) // 1024
    if free_mb - required_mb < reserved_mb:
        raise OutOfMemory.admission()
