"""A model's files on their way to a Ray node: packed into one tar by the server, unpacked
by the worker's actor into a temp dir it locks, and swept by the next actor on that node
when one died without cleaning up. Nothing here imports ray: the actor
(``djl.wlm.ray_launcher``) calls these.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from djl.archive import Limits, extract_archive
from djl.errors import SourceError

#: Prefix of an actor's model copy in its node's temp dir (stale ones are swept by it).
TEMP_PREFIX = "djl-ray-"
#: A copy younger than this is never swept: its actor may not have locked it yet.
SWEEP_MIN_AGE_S = 60.0


def pack_model_dir(model_dir: Path, max_bytes: int) -> bytes:
    """The prepared model directory as one uncompressed tar (weights hardly compress),
    refused (413) past ``archive_max_bytes`` before a node would refuse it.

    Symlinks are packed as what they point at: a local worker reads through them (a
    Hugging Face snapshot is links into its blob store), and a link leaving the folder
    would be refused by the node's extraction. A directory seen twice (a link loop) is
    packed once.
    """
    buffer = io.BytesIO()
    total = 0
    seen: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as tar:
        for root, dirs, files in os.walk(model_dir, followlinks=True):
            real = os.path.realpath(root)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                if not os.path.isfile(path):
                    continue  # a dangling link, a fifo: nothing a model can load
                total += os.path.getsize(path)
                if total > max_bytes:
                    raise SourceError(
                        f"The model directory exceeds archive_max_bytes ({max_bytes}): it "
                        "cannot be shipped to a Ray node", status=413)
                tar.add(path, arcname=os.path.relpath(path, model_dir), recursive=False)
    return buffer.getvalue()


class ModelCopy:
    """The model's files in a temp dir of the node, ``flock``-ed while the actor lives; an
    actor killed without cleaning up leaves it unlocked, and the next actor removes it."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self._lock: int | None = None

    def unpack(self, archive: bytes, limits: tuple[int, int, int]) -> Path:
        """Extract ``archive`` (from ``pack_model_dir``) with djl.archive's limits; the
        model folder."""
        root = Path(tempfile.gettempdir())
        sweep(root)
        self.dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
        self._lock = os.open(self.dir, os.O_RDONLY)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        tar = self.dir / "model.tar"
        tar.write_bytes(archive)
        try:
            extract_archive(tar, self.dir / "model", kind="tar", limits=Limits(*limits),
                            label="the model files from the server")
        finally:
            tar.unlink()
        return self.dir / "model"

    def remove(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def sweep(root: Path) -> None:
    """Remove the model copies of actors that died without cleaning up (unlocked)."""
    for path in root.glob(f"{TEMP_PREFIX}*"):
        try:
            if time.time() - path.stat().st_mtime < SWEEP_MIN_AGE_S:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live actor holds it
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
