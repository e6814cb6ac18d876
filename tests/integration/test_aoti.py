"""AOTInductor packages (``.pt2`` from ``torch._inductor.aoti_compile_and_package``) on the
PyTorch engine, through the real server and a real worker.

Telling a package from a ``torch.export`` program and handing it to ``aoti_load_package``
runs in every suite, on a package whose compiled library is not one. A real package needs
a C++ compiler and minutes of CPU (over two minutes for a 4→3 Linear on the shared 2-core
VM), so the tiny one below is compiled once per machine into a cache folder (``DJL_TEST_CACHE``,
default ``~/.cache/djl-tests``) keyed by torch's version, the CPU and this module's
source, and reused by every later run. A suite that finds no package compiles it only when
``DJL_AOTI_COMPILE=1`` (``make bench-check`` sets it); otherwise that test skips, saying so.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from serving import EXAMPLES, running_server
from test_torch_serving import npz_arrays, npz_bytes, post_many, register

from djl.runtime.torch_engine import is_aoti_package

JSON = {"content-type": "application/json"}
NPZ = {"content-type": "tensor/npz"}
BATCHED = "batch_size=8\nmax_batch_delay=300\n"


class Rows(torch.nn.Module):
    """x [batch, 4] → (x @ W + b [batch, 3], the batch size it saw [batch, 1])."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x[:, :1] * 0 + x.shape[0]


def _program() -> torch.export.ExportedProgram:
    return torch.export.export(Rows().eval(), (torch.zeros(2, 4),),
                               dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))


def _cache_key() -> str:
    """What the package depends on: torch, the CPU, the module and its export."""
    source = inspect.getsource(Rows) + inspect.getsource(_program)
    return hashlib.sha256("|".join((torch.__version__, platform.machine(), source)).encode()
                          ).hexdigest()[:16]


@pytest.fixture(scope="session")
def aoti_package() -> Path:
    """The compiled package of ``Rows``: from the cache, or compiled into it."""
    root = Path(os.environ.get("DJL_TEST_CACHE") or Path.home() / ".cache" / "djl-tests")
    package = root / "aoti" / _cache_key() / "model.pt2"
    if not package.is_file():
        if os.environ.get("DJL_AOTI_COMPILE") != "1":
            pytest.skip(f"no AOTInductor package at {package}: DJL_AOTI_COMPILE=1 compiles it "
                        "(minutes of CPU; make bench-check does), later runs reuse it")
        package.parent.mkdir(parents=True, exist_ok=True)
        partial = package.with_suffix(".partial.pt2")
        torch._inductor.aoti_compile_and_package(_program(), package_path=str(partial))
        partial.replace(package)  # whole or not at all: a killed compile leaves no package
    return package


def _fake_package(path: Path) -> Path:
    """A zip laid out as an AOTInductor package whose compiled library is not one."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data/aotinductor/model/model.wrapper.so", b"not a library")
        archive.writestr("model/data/aotinductor/model/model_metadata.json", "{}")
        archive.writestr("model/version", "1\n")
    return path


def test_a_package_is_told_from_an_exported_program(tmp_path: Path) -> None:
    exported = EXAMPLES / "mlp" / "model.pt2"  # make install's torch.export.save
    assert exported.is_file(), "make install writes examples/mlp/model.pt2"
    assert not is_aoti_package(exported)
    assert is_aoti_package(_fake_package(tmp_path / "aoti.pt2"))
    assert not is_aoti_package(tmp_path / "missing.pt2")


async def test_a_package_that_does_not_load_fails_its_registration(tmp_path: Path) -> None:
    """The folder's model.pt2 goes to the PyTorch engine, which takes it for an AOTInductor
    package (not a torch.export program) and hands it to aoti_load_package: its refusal
    is the registration's 500, and the model is not left registered."""
    folder = tmp_path / "broken"
    folder.mkdir()
    _fake_package(folder / "model.pt2")
    async with running_server(tmp_path) as server:
        r = await server.client.post("/models", params={"url": f"file:{folder}/",
                                                        "model_name": "broken"})
        assert r.status_code == 500, r.text
        message = r.json()["message"]
        assert message.startswith("Failed to initialize model"), message
        # aoti_load_package's own words (the compiled model's files it looked for), not
        # what torch.export.load would say of this archive.
        assert "File not found" in message and "/data/aotinductor/" in message, message
        assert (await server.client.get("/models/broken")).status_code == 404


async def test_a_compiled_package_serves_like_the_module(tmp_path: Path,
                                                         aoti_package: Path) -> None:
    """A real package: JSON and npz answers equal the eager module's within 1e-5;
    concurrent requests one dimension short are stacked into one call, each answered its
    own row."""
    assert is_aoti_package(aoti_package)
    folder = tmp_path / "aoti"
    folder.mkdir()
    (folder / "model.pt2").write_bytes(aoti_package.read_bytes())
    (folder / "serving.properties").write_text(BATCHED)
    module = Rows().eval()
    rows = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    with torch.inference_mode():
        want = module.linear(torch.from_numpy(rows)).numpy()
    async with running_server(tmp_path) as server:
        c = server.client
        await register(c, f"file:{folder}/", "aoti")
        r = await c.post("/predictions/aoti", content=json.dumps(rows[0].tolist()), headers=JSON)
        assert r.status_code == 200, r.text
        # No signature to name the outputs: the two are arr_0 and arr_1, as in an npz.
        (y_name, y), (n_name, n) = r.json()["predictions"]
        assert (y_name, n_name, n) == ("arr_0", "arr_1", [1.0])
        np.testing.assert_allclose(y, want[0], atol=1e-5)
        answers = await post_many(c, "aoti", [(npz_bytes(x), NPZ) for x in rows])
        for x, expected, r in zip(rows, want, answers, strict=True):
            assert r.status_code == 200, r.text
            got = npz_arrays(r.content)
            np.testing.assert_allclose(got["arr_0"], expected, atol=1e-5)
            assert got["arr_1"].tolist() == [4.0], x  # the four in one call
