"""Safe extraction of model archives (zip/mar, tar, tar.gz/tgz, tar.bz2, tar.xz).

A model server that unpacks whatever a caller names is an obvious target (TorchServe's
2023 "ShellTorch" advisories), so extraction trusts nothing in the archive (spec §9 item 5):

* Entry names must be relative paths without ``..`` components, NUL bytes or a drive
  prefix; a backslash counts as a separator. Anything else is refused with a 400 naming
  the entry, before a byte of it is written.
* No link is ever created on disk. A symlink or hardlink entry (tar, or a zip entry whose
  Unix mode says symlink) whose target leaves the archive is refused; one pointing at a
  regular file inside the archive becomes a copy of that file; any other link (to a
  directory, to nothing, a loop) is refused. With no links on disk, no later entry can be
  written through one. Device files and fifos are refused. A file name that appears twice
  is refused (different tools would disagree about which copy wins).
* ``archive_max_entries``, ``archive_max_bytes`` and ``archive_max_ratio`` (extracted bytes
  over archive bytes, enforced past the first MiB) stop archive bombs with a 413 naming the
  limit. Sizes are counted as bytes are really written, never trusted from headers.
* Zip local headers are cross-checked against the central directory and entries may not
  overlap, the trick behind non-recursive zip bombs and tools disagreeing on contents.
* An archive found inside an archive (spec §4.1 step 4) is extracted with the ``Budget``
  its outer layer left: one byte limit for both, and a ratio measured against the size of
  the outermost archive, so nesting cannot multiply the limits.
* Everything is written into a fresh ``.<target>.*.part`` directory beside the target and
  renamed into place only on success; on any failure (or a stop request) it is removed, so
  a half-extracted model can never be used. The directory is ``flock``-ed while in use, so
  that a later start-up can tell one left by a crash from one another process is filling.

Extraction is blocking; callers run it in a worker thread (``djl.store``) and may pass a
``threading.Event`` that, once set, makes it stop at the next chunk.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from djl.archive_entries import CORRUPT, Budget, Extractor, Limits, Stopped
from djl.errors import SourceError

__all__ = ["ARCHIVE_SUFFIXES", "Budget", "Limits", "Stopped", "archive_kind", "extract_archive",
           "locked", "strip_archive_suffix"]

#: Recognised archive suffixes (spec §4.1), lower case, longest first so ``.tar.gz`` wins.
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.z", ".tgz", ".zip", ".mar", ".tar")


def archive_kind(name: str) -> str | None:
    """``"zip"`` or ``"tar"`` when ``name`` ends with an archive suffix (case-insensitive)."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return "zip" if suffix in (".zip", ".mar") else "tar"
    return None


def strip_archive_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the temp file or directory ``path`` in this block.

    The lock is what marks a temp name as in use: the kernel drops it when the process
    dies, so start-up clean-up (``djl.store``) removes exactly the temps nobody holds.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def extract_archive(
    archive: Path,
    target: Path,
    *,
    kind: str,
    limits: Limits,
    label: str,
    stop: threading.Event | None = None,
    spent: Budget | None = None,
) -> Budget:
    """Extract ``archive`` into ``target``, which must not exist yet; all or nothing.

    ``label`` (the URL) names the archive in error messages. ``spent`` is the budget an
    outer layer left when ``archive`` came out of another archive. Returns the budget spent
    including this layer. Raises ``SourceError``: 400 for a corrupt or unsafe archive (the
    message names the entry), 413 for a limit (it names the config key), 507 when the disk
    is full. If another process renamed a complete ``target`` into place first, that one is
    kept and this extraction discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        with locked(tmp):
            try:
                extractor = Extractor(tmp, archive, limits, label, stop, spent)
                if kind == "zip":
                    extractor.extract_zip()
                else:
                    extractor.extract_tar()
            except CORRUPT as exc:
                raise SourceError(f"Corrupt archive {label}: {exc}", status=400) from None
            if stop is not None and stop.is_set():
                raise Stopped()
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent extraction won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Budget(extractor.archive_bytes, extractor.written)
