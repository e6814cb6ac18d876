"""djl/prepare.py: engine, entry point, devices, threads and the memory check, without trio."""

from __future__ import annotations

from pathlib import Path

import pytest

from djl.config import RegisterParams, load_server_config
from djl.errors import BadRequest, ModelLoadError, ModelNotFound, OutOfMemory
from djl.prepare import check_memory, prepare_model
from djl.store import ModelSource
from djl.wlm.devices import Device


def folder(tmp_path: Path, *files: str, properties: str = "", name: str = "m") -> ModelSource:
    d = tmp_path / name
    d.mkdir()
    for f in files:
        (d / f).write_bytes(b"")
    if properties:
        (d / "serving.properties").write_text(properties)
    return ModelSource(f"file:{d}/", d, name, {}, None, ())


def prepare(source: ModelSource, env: dict[str, str] | None = None, cores: int = 2,
            **params: object):
    server = load_server_config(env=env or {}, overrides={"load_models": "NONE"})
    return prepare_model(server, source, RegisterParams(url=source.url, **params), cores=cores)


def test_a_pt_file_is_the_pytorch_engine(tmp_path: Path) -> None:
    plan = prepare(folder(tmp_path, "model.pt", "requirements.txt"))
    assert plan.engine == "PyTorch"
    assert plan.command.engine == "PyTorch"
    assert plan.command.entry_point == "model.pt"
    assert plan.devices == (Device("cpu", -1),)
    assert not plan.install_requirements  # a TorchScript file imports nothing
    argv = plan.command.argv(7, -1, max_frame=1 << 20)
    assert argv[argv.index("--engine") + 1] == "PyTorch"


def test_name_pt_is_found_by_the_artifact_name(tmp_path: Path) -> None:
    plan = prepare(folder(tmp_path, "resnet.pt", name="resnet"))
    assert (plan.engine, plan.command.entry_point) == ("PyTorch", "resnet.pt")


def test_model_py_next_to_model_pt_is_python(tmp_path: Path) -> None:
    """Spec §4.4 [REC]: the handler wins; DJL itself would pick PyTorch."""
    plan = prepare(folder(tmp_path, "model.py", "model.pt"))
    assert (plan.engine, plan.command.engine, plan.command.entry_point) == (
        "Python", "Python", "model.py")
    assert plan.install_requirements


@pytest.mark.parametrize("how", ["param", "properties", "env"])
def test_engine_pytorch_given_explicitly(tmp_path: Path, how: str) -> None:
    """engine=PyTorch (register parameter, serving.properties, OPTION_ENGINE) beats model.py."""
    source = folder(tmp_path, "model.py", "weights.pt",
                    properties="engine=PyTorch\n" if how == "properties" else "")
    plan = prepare(source, env={"OPTION_ENGINE": "PyTorch"} if how == "env" else None,
                   engine="PyTorch" if how == "param" else None)
    # The folder's only .pt file, whatever its name.
    assert (plan.engine, plan.command.entry_point) == ("PyTorch", "weights.pt")


def test_model_name_picks_among_several_pt_files(tmp_path: Path) -> None:
    source = folder(tmp_path, "a.pt", "b.pt", properties="engine=PyTorch\n")
    with pytest.raises(ModelLoadError, match=r"several model files \(a\.pt, b\.pt\)"):
        prepare(source)
    (source.model_dir / "serving.properties").write_text("engine=PyTorch\noption.modelName=b\n")
    assert prepare(source).command.entry_point == "b.pt"


def test_pytorch_without_a_pt_file_fails_to_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="TorchScript file not found"):
        prepare(folder(tmp_path, "notes.txt"), engine="PyTorch")


def test_model_name_must_stay_inside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "outside.pt").write_bytes(b"")
    source = folder(tmp_path, "model.pt", properties="option.modelName=../outside\n")
    with pytest.raises(BadRequest, match="outside the model directory"):
        prepare(source)


@pytest.mark.parametrize("engine", ["TensorFlow", "onnxruntime", "pytorch"])
def test_other_engines_keep_their_400(tmp_path: Path, engine: str) -> None:
    with pytest.raises(BadRequest, match=f"^{engine} is not supported$"):
        prepare(folder(tmp_path, "model.pt"), engine=engine)


@pytest.mark.parametrize(
    ("files", "properties", "engine", "entry_point"),
    [
        (["model.onnx"], "", "OnnxRuntime", "model.onnx"),
        (["m.onnx", "other.onnx"], "", "OnnxRuntime", "m.onnx"),  # the artifact name's
        (["model.py", "model.onnx"], "", "Python", "model.py"),  # the handler wins, as for .pt
        (["model.onnx", "model.py"], "engine=OnnxRuntime\n", "OnnxRuntime", "model.onnx"),
        (["model.pt2"], "", "PyTorch", "model.pt2"),
        (["model.pt", "model.pt2"], "", "PyTorch", "model.pt"),
        (["model.pt", "model.pt2"], "option.modelName=model.pt2\n", "PyTorch", "model.pt2"),
        (["model.pt", "model.onnx"], "engine=OnnxRuntime\n", "OnnxRuntime", "model.onnx"),
    ],
)
def test_tensor_engines_and_their_files(tmp_path: Path, files: list[str], properties: str,
                                        engine: str, entry_point: str) -> None:
    plan = prepare(folder(tmp_path, *files, properties=properties))
    assert (plan.engine, plan.command.engine, plan.command.entry_point) == (
        engine, engine, entry_point)
    if engine != "Python":
        assert plan.command.num_threads == 1  # chosen as for torch: 2 cores, 2 workers
        assert not plan.install_requirements


def test_onnx_without_an_onnx_file_fails_to_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="ONNX file not found in: .*: no m.onnx or model"):
        prepare(folder(tmp_path, "model.pt"), engine="OnnxRuntime")


def test_an_empty_folder_has_no_engine(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="Failed to detect engine"):
        prepare(folder(tmp_path))


@pytest.mark.parametrize(
    ("properties", "env", "cores", "threads"),
    [
        ("", {}, 2, 1),  # default max workers = cores: one thread each
        ("maxWorkers=2\n", {}, 8, 4),  # 2 workers x 4 threads = 8 cores
        ("maxWorkers=1\n", {}, 8, 8),
        ("maxWorkers=16\n", {}, 8, 1),  # never 0
        ("option.num_threads=3\n", {}, 2, 3),
        ("", {"OMP_NUM_THREADS": "2"}, 8, 2),
        ("option.num_threads=5\n", {"OMP_NUM_THREADS": "2"}, 8, 5),  # the model's own wins
    ],
)
def test_intra_op_threads(tmp_path: Path, properties: str, env: dict[str, str], cores: int,
                          threads: int) -> None:
    plan = prepare(folder(tmp_path, "model.pt", properties=properties), env=env, cores=cores)
    assert plan.command.num_threads == threads
    argv = plan.command.argv(7, -1, max_frame=1 << 20)
    assert argv[argv.index("--num-threads") + 1] == str(threads)


def test_python_models_leave_threads_alone(tmp_path: Path) -> None:
    assert prepare(folder(tmp_path, "model.py")).command.num_threads == 0


def test_devices(tmp_path: Path) -> None:
    source = folder(tmp_path, "model.pt")
    assert prepare(source, device="gpu1").devices == (Device("gpu", 1),)
    assert prepare(source, device="cpu;gpu0").devices == (Device("cpu", -1), Device("gpu", 0))
    with pytest.raises(BadRequest, match="cpu and gpu<N> devices, not nc0"):
        prepare(source, device="nc0")


def test_batchifier_is_checked_at_registration(tmp_path: Path) -> None:
    assert prepare(folder(tmp_path, "model.pt", properties="batchifier=none\n")).engine
    with pytest.raises(BadRequest, match="Unknown batchifier padding: use stack or none"):
        prepare(folder(tmp_path, "model.pt", properties="batchifier=padding\n", name="n"))


def test_memory_admission(tmp_path: Path) -> None:
    """Spec §4.8: free - required must stay above reserved (default 500 MiB)."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 4096000 kB\nMemAvailable:     1024000 kB\n")  # 1000 MiB
    source = folder(tmp_path, "model.pt", properties="required_memory_mb=400\n")
    config = prepare(source).config
    check_memory(config, meminfo)  # 1000 - 400 >= 500
    (source.model_dir / "serving.properties").write_text("required_memory_mb=600\n")
    with pytest.raises(OutOfMemory, match="No enough memory to load the model."):
        check_memory(prepare(source).config, meminfo)
    check_memory(prepare(source).config, tmp_path / "no-such-file")  # not Linux: no check


def test_the_worker_gets_the_models_settings(tmp_path: Path) -> None:
    source = folder(tmp_path, "model.py",
                    properties="option.env=A=1, B = 2\nbatch_size=4\noption.handler=run\n")
    command = prepare(source).command
    assert command.env == {"A": "1", "B": "2"}
    assert command.handler == "run"
    assert command.init_properties["batch_size"] == "4"
