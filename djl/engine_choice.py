"""Which engine serves a model folder (spec §4.4) and what it loads: the tensor engines' model
file, the Python engine's entry point (§6.2), or the text-generation mode. Part of
``djl.prepare``; synchronous, a few ``stat`` calls and small reads."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path

from djl import store
from djl.config import ROLLING_BATCH_DEFAULT, ROLLING_BATCH_VALUES, ModelConfig, ServerConfig
from djl.errors import BadRequest, ModelLoadError, ModelNotFound, SourceError
from djl.runtime.generation import loader

#: Engine names a model may have (spec §4.4), mapped to the runtime engine that serves it.
#: ``MPI`` is the Python engine in MPI mode; any other name is refused with DJL's 400.
RUNTIME_ENGINES = {"Python": "Python", "MPI": "Python", "PyTorch": "PyTorch",
                   "OnnxRuntime": "OnnxRuntime"}
#: The engines that serve one model file with the tensor translator
#: (djl/runtime/tensor_engine.py), and the file extensions each loads, preferred first.
MODEL_FILES = {"PyTorch": (".pt", ".pt2"), "OnnxRuntime": (".onnx",)}


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
