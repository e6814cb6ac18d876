"""Model preparation: from a resolved source to the frozen plan its worker pool is built from.

Registration (spec §4.7 step 1 and the checks of step 3) in one synchronous function with
no trio in it: read ``serving.properties``, merge the settings (§4.6), choose the engine
(§4.4) and the entry point (§6.2), check memory (§4.8), resolve the devices (§5.8) and
build the worker command. It reads a few small files and stats a few more, so the registry
runs it in ``trio.to_thread``; tests call it directly. ``registry.py`` keeps endpoints,
versions and lifecycles; ``wlm/`` gets a ``PreparedModel`` and never looks at a folder.
"""

from __future__ import annotations

import importlib.util
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
    ROLLING_BATCH_DEFAULT,
    ROLLING_BATCH_VALUES,
    ModelConfig,
    RayResources,
    RegisterParams,
    ServerConfig,
    build_model_config,
    parse_int,
)
from djl.errors import (
    BadRequest,
    ModelLoadError,
    ModelNotFound,
    OutOfMemory,
    RayPlacement,
    SourceError,
)
from djl.properties import read_properties
from djl.runtime.generation import loader
from djl.wlm.devices import Device, resolve_devices
from djl.wlm.worker import WorkerCommand

#: Engine names a model may have (spec §4.4), mapped to the runtime engine that serves it.
#: ``MPI`` is the Python engine in MPI mode; any other name is refused with DJL's 400.
RUNTIME_ENGINES = {"Python": "Python", "MPI": "Python", "PyTorch": "PyTorch",
                   "OnnxRuntime": "OnnxRuntime"}
#: The engines that serve one model file with the tensor translator
#: (djl/runtime/tensor_engine.py), and the file extensions each loads, preferred first.
MODEL_FILES = {"PyTorch": (".pt", ".pt2"), "OnnxRuntime": (".onnx",)}
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


def choose_engine(source: store.ModelSource, config: ModelConfig) -> str:
    """The engine given (register parameter, ``-m name::Engine=url``, serving.properties,
    ``OPTION_ENGINE``), else the one the folder implies (spec §4.4); 400 if we lack it."""
    engine = config.engine or infer_engine(
        source.model_dir, source.artifact_name, config.options, config.arguments
    )
    if engine not in RUNTIME_ENGINES:
        raise BadRequest(f"{engine} is not supported")
    return engine


def generation_mode(source: store.ModelSource, config: ModelConfig) -> str | None:
    """``option.rolling_batch`` when djl's text-generation engine serves this Python model:
    a folder with a Hugging Face ``config.json`` (spec §4.4 rule 10), or ``engine=Python``
    with ``option.rolling_batch``, and no handler of its own. None: a model.py serves it.
    400 for a value we do not serve, a load error naming what ``vllm`` lacks here."""
    model_dir = source.model_dir
    model_name = config.options.get("modelName")
    if (config.options.get("entryPoint") or source.entry_point
            or (model_dir / "model.py").is_file()
            or (model_name and (model_dir / model_name).is_file())):
        return None
    mode = (config.options.get("rolling_batch") or "").strip().lower()
    if not mode and not (model_dir / "config.json").is_file():
        return None
    mode = mode or ROLLING_BATCH_DEFAULT
    if mode not in ROLLING_BATCH_VALUES:
        raise BadRequest(f"option.rolling_batch={mode} is not supported: use "
                         f"{', '.join(ROLLING_BATCH_VALUES)}")
    if mode == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ModelLoadError.bad_model(
                "option.rolling_batch=vllm needs the vllm package, which is not installed")
        if not Path("/dev/nvidiactl").exists():
            raise ModelLoadError.bad_model(
                "option.rolling_batch=vllm needs a CUDA GPU, and none is visible")
        raise ModelLoadError.bad_model(
            "option.rolling_batch=vllm: serving through vLLM's engine is not implemented "
            "yet; use auto")
    # What a folder needs is checked here, before a worker spends seconds importing
    # transformers to find out; the worker checks again (the same function) at load.
    try:
        loader.check_folder(model_dir, config.options)
    except loader.NotLoadable as exc:
        raise ModelLoadError.bad_model(str(exc)) from None
    return mode


def model_file(source: store.ModelSource, config: ModelConfig, runtime: str) -> str:
    """The model file a tensor engine loads, relative to the model's folder.

    For each of the engine's extensions in turn (``.pt`` then ``.pt2``; ``.onnx``):
    ``<option.modelName><ext>`` (else ``<artifact name><ext>``), then ``model<ext>``; then
    the folder's only file with one of them. ``option.modelName`` must stay inside the
    folder.
    """
    exts = MODEL_FILES[runtime]
    model_name = config.options.get("modelName")
    if model_name:
        check_confined(source.model_dir, f"{model_name}{exts[0]}", "option.modelName")
    if model_name and model_name.endswith(exts) and (source.model_dir / model_name).is_file():
        return model_name  # named with its extension: model.pt2 beside a model.pt
    prefix = model_name or source.artifact_name
    for name in (f"{p}{ext}" for ext in exts for p in (prefix, "model")):
        if (source.model_dir / name).is_file():
            return name
    found = sorted(p.name for p in source.model_dir.iterdir()
                   if p.suffix in exts and p.is_file())
    if len(found) == 1:
        return found[0]
    kind = "TorchScript" if runtime == "PyTorch" else "ONNX"
    detail = f"several model files ({', '.join(found)}): set option.modelName" if found else (
        f"no {prefix}{exts[0]} or model{exts[0]}")
    err = ModelLoadError(f"{kind} file not found in: {source.model_dir}: {detail}")
    err.type = "FileNotFoundException"
    raise err


def python_entry_point(
    source: store.ModelSource, config: ModelConfig, server: ServerConfig
) -> str:
    """Spec §6.2, server side.

    A file given by ``option.entryPoint`` or ``option.modelName`` must lie inside the
    model directory: whoever may register a URL must not run any other file on the
    host. Module names (``djl_python.huggingface``) import as DJL's do; an entry point
    the operator set in the environment is trusted as is.
    """
    entry = config.options.get("entryPoint")
    if entry:
        if entry != server.env_options.get("entryPoint"):
            check_confined(source.model_dir, entry, "option.entryPoint")
        return entry
    if source.entry_point:
        return source.entry_point
    model_name = config.options.get("modelName")
    if model_name:
        # Checked whether or not it exists: the answer must not reveal files elsewhere.
        check_confined(source.model_dir, model_name, "option.modelName")
        if (source.model_dir / model_name).is_file():
            return model_name
    if (source.model_dir / "model.py").is_file():
        return "model.py"
    err = ModelLoadError(f".py file not found in: {source.model_dir}")
    err.type = "FileNotFoundException"
    raise err


def check_confined(model_dir: Path, entry: str, key: str) -> None:
    """BadRequest unless ``entry``, if it names a file, resolves inside ``model_dir``.

    A file is a value ending in ``.py`` or ``.pt`` or holding a path separator; anything
    else is a module name, imported from the model directory or the installed packages.
    """
    if (not entry.lower().endswith((".py", ".pt", ".pt2", ".onnx")) and "/" not in entry
            and "\\" not in entry):
        return
    root = os.path.realpath(model_dir)
    real = os.path.realpath(os.path.join(root, entry))
    if os.path.commonpath([root, real]) != root:
        raise BadRequest(
            f"{key} {entry} is outside the model directory: only a module name or a file "
            "inside the model directory is allowed"
        )


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


# -- engine inference (spec §4.4) ------------------------------------------------------------

#: Rule 11 of spec §4.4: ``<prefix>-NNNN.params`` is DJL's (MXNet-style) parameter file.
DEFAULT_DJL_ENGINE = "MXNet"


def infer_engine(
    model_dir: Path,
    artifact_name: str,
    options: Mapping[str, str],
    arguments: Mapping[str, str],
) -> str:
    """The engine of a model directory (spec §4.4 table; the first matching rule wins).

    ``options`` are ``option.*`` keys without the prefix, ``arguments`` the other
    serving.properties keys; ``engine`` among them wins. Raises ``ModelNotFound`` (404)
    when nothing matches, ``SourceError`` (400) for a ``djl://`` model id. A handful of
    ``stat`` calls: cheap enough for the event loop.
    """
    if arguments.get("engine"):
        return arguments["engine"]
    d = Path(model_dir)
    prefix = options.get("modelName") or artifact_name
    model_id = options.get("model_id")

    def has(*exts: str) -> bool:
        return any((d / f"{p}{ext}").is_file() for ext in exts for p in (prefix, "model"))

    if _is_sagemaker_model(d / "metadata.yaml"):
        return "Python"
    if model_id and model_id.startswith("djl://"):
        raise SourceError(f"djl: URLs are not supported: {model_id}", status=400)
    if (d / "MAR-INF").is_dir():
        return "Python"
    if has(".pt", ".pt2"):  # .pt2 (torch.export, AOTInductor) is ours; DJL knows .pt
        # The spec's [REC] (§4.4): a folder that also holds its model.py is a Python model
        # that loads the .pt itself; DJL would pick PyTorch and never run the handler.
        return "Python" if has(".py") else "PyTorch"
    if (d / "config.pbtxt").is_file():
        return "TritonServer"
    if (d / "saved_model.pb").is_file():
        return "TensorFlow"
    if has(".onnx"):
        return "Python" if has(".py") else "OnnxRuntime"  # as for .pt above
    if has(".json", ".xgb", ".bst"):
        return "XGBoost"
    if has(".skops", ".joblib", ".pkl", ".pickle", ".cloudpkl"):
        return "Python"
    if has(".py") or model_id or (d / "config.json").is_file():
        return "Python"
    params = re.compile(re.escape(prefix) + r"-\d{4}\.params")
    if any(params.fullmatch(p.name) for p in store.visible_entries(d) if p.is_file()):
        return DEFAULT_DJL_ENGINE
    raise ModelNotFound.no_engine(str(model_dir))


def _is_sagemaker_model(path: Path) -> bool:
    """A SageMaker ``metadata.yaml`` with a custom schema or inference spec (spec §4.4 #1)."""
    try:
        if not path.is_file() or path.stat().st_size > 1024 * 1024:
            return False
        import yaml  # only SageMaker-format models need it

        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # an unreadable or invalid file is simply not a SageMaker spec
        return False
    required = ("Framework", "FrameworkVersion", "Model", "ModelType", "Version", "Task")
    if not isinstance(meta, dict) or not all(k in meta for k in required):
        return False
    return "Schema" in meta or "InferenceSpec" in meta
