"""Every bench/ script still runs: each in a subprocess with the smallest settings it
takes (about a second of load, no TorchServe peer), its JSON written to a temporary
folder (DJL_BENCH_RESULTS), never over a measured result. A script that calls a private
API that changed fails here, not the next time someone measures. Nothing is timed.

The three that start a Ray cluster or several torch servers cost a minute or more of
CPU between them; ``make test`` leaves them to ``make bench-check`` (DJL_BENCH_SMOKE=all),
which runs all of them, and says so in its skip lines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: script, arguments, the JSON it writes, and what it needs beyond the test extras
#: ("heavy": only under DJL_BENCH_SMOKE=all).
RUNS = [
    ("collate.py", ["--rounds", "1", "--min-time", "0.02"], "collate.json", None),
    ("engine_worker.py", ["--batch-sizes", "1", "--rounds", "1", "--batches", "3"],
     "engine_worker.json", None),
    ("echo.py", ["--targets", "djl", "bare", "--concurrency", "2", "--duration", "1",
                 "--warmup", "0", "--rounds", "1"], "echo.json", None),
    ("batching.py", ["--concurrency", "2", "--batch-sizes", "2", "--duration", "1",
                     "--warmup", "0"], "batching.json", None),
    ("torch_mlp.py", ["--no-torchserve", "--concurrency", "2", "--duration", "1",
                      "--warmup", "0"], "torch_mlp.json", "heavy"),
    ("lora.py", ["--quick", "--streams", "4"], "lora.json", None),
    ("operability.py", ["--rounds", "1", "--duration", "1", "--concurrency", "2"],
     "operability.json", None),
    ("profile_hotpath.py", ["--requests", "200", "--profile-requests", "100",
                            "--concurrency", "4", "--http-duration", "1",
                            "--http-warmup", "0"], "hotpath.json", None),
    ("profile_front.py", ["--concurrency", "2", "--duration", "1", "--rate", "50"],
     "profile_front.json", "py-spy"),
    ("ray_datapath.py", ["--rounds", "20"], "ray_datapath.json", "heavy ray"),
    ("ray_vs_local.py", ["--concurrency", "2", "--duration", "1", "--warmup", "0", "--rounds", "1"],
     "ray.json", "heavy ray"),
]


def _missing(need: str | None) -> str | None:
    need = need or ""
    if "heavy" in need and os.environ.get("DJL_BENCH_SMOKE") != "all":
        return "make bench-check (DJL_BENCH_SMOKE=all): a heavy smoke run"
    if "py-spy" in need and shutil.which("py-spy", path=str(Path(sys.executable).parent)
                                         + os.pathsep + os.environ.get("PATH", "")) is None:
        return "py-spy (pip install -r bench/requirements.txt)"
    if "ray" in need.split() and importlib.util.find_spec("ray") is None:
        return "ray (the [ray] extra)"
    return None


@pytest.mark.parametrize(("script", "args", "result", "need"), RUNS,
                         ids=[run[0] for run in RUNS])
def test_the_bench_script_runs(tmp_path, script, args, result, need):
    if missing := _missing(need):
        pytest.skip(f"runs under {missing}" if "heavy" in missing else f"needs {missing}")
    env = {**os.environ, "DJL_BENCH_RESULTS": str(tmp_path)}
    env = {k: v for k, v in env.items() if not k.startswith("SERVING_")}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], env=env,
                          cwd=BENCH.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if result is not None:
        data = json.loads((tmp_path / result).read_text())
        assert data, result


def test_each_torchserve_run_keeps_its_pid_file_and_tmpdir_apart(tmp_path):
    """TorchServe's launcher finds its pid file through ``tempfile.gettempdir()`` and its
    Java front unpacks archives under ``java.io.tmpdir``; two runs must see two folders,
    each inside the run's own home, or a concurrent bench finds the other's server."""
    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    seen = []
    for run in ("a", "b"):
        home = tmp_path / run / "torchserve"
        env = {**os.environ, **_common.torchserve_environment(home, tmp_path / "bin" / "ts")}
        # What TorchServe's model_server.py computes the pid file's folder with.
        where = subprocess.run([sys.executable, "-c", "import tempfile; "
                                "print(tempfile.gettempdir())"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        assert Path(where).is_relative_to(home) and Path(where).is_dir(), where
        assert f"-Djava.io.tmpdir={where}" in env["JAVA_TOOL_OPTIONS"].split()
        if java := shutil.which("java"):  # what TorchServe's front sees
            shown = subprocess.run([java, "-XshowSettings:properties", "-version"], env=env,
                                   capture_output=True, text=True, timeout=60).stderr
            assert f"java.io.tmpdir = {where}" in shown, shown
        seen.append(where)
    assert seen[0] != seen[1]
