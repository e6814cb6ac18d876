"""A Python model's ``requirements.txt``, installed once before its first worker (spec §6.1).

``<python> -m pip install -q -r requirements.txt``, with ``-f requirements/`` when the model
ships wheels there; with ``DJL_OFFLINE=true`` also ``--no-index`` (wheels folder present) or
``--no-deps`` (absent). A failure is logged, never raised: as in DJL, the model then fails
(or not) on its own imports, with its own error.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import trio

log = logging.getLogger("djl.wlm")

REQUIREMENTS_FILE = "requirements.txt"
WHEELS_DIR = "requirements"


def pip_command(model_dir: Path, python: str, offline: bool) -> list[str] | None:
    """The pip command line for ``model_dir``, or None when it has no requirements file."""
    if not (model_dir / REQUIREMENTS_FILE).is_file():
        return None
    command = [python or sys.executable, "-m", "pip", "install", "-q",
               "-r", REQUIREMENTS_FILE, "--disable-pip-version-check"]
    wheels = model_dir / WHEELS_DIR
    if wheels.is_dir():
        command += ["-f", str(wheels)]
        if offline:
            command.append("--no-index")
    elif offline:
        command.append("--no-deps")
    return command


async def install_requirements(
    model_id: str, model_dir: Path, python: str, offline: bool, timeout_s: float
) -> None:
    """Run pip for ``model_dir`` if it has a requirements file; log the outcome."""
    command = await trio.to_thread.run_sync(pip_command, model_dir, python, offline)
    if command is None:
        return
    log.info("installing the requirements of %s: %s", model_id, " ".join(command))
    try:
        with trio.fail_after(timeout_s):
            result = await trio.run_process(
                command, cwd=str(model_dir), stdin=subprocess.DEVNULL,
                capture_stdout=True, capture_stderr=True, check=False,
            )
    except trio.TooSlowError:
        log.error("installing the requirements of %s timed out after %gs", model_id, timeout_s)
        return
    except OSError as exc:
        log.error("cannot run pip for %s: %s", model_id, exc)
        return
    output = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
    if result.returncode != 0:
        log.error("pip failed for %s (exit %d):\n%s", model_id, result.returncode, output)
    elif output:
        log.info("pip for %s:\n%s", model_id, output)
