"""The model cache: directories that archives are extracted (or downloaded) into, shared
by every registration of one URL, counted, and deleted with their last user.

A cache directory exists only once complete (it is renamed into place), and is renamed
away before it is deleted, so a crash never leaves a partial one behind to be reused;
``remove_stale_temps`` deletes what such a crash leaves at the next start. Per-directory
locks make concurrent registrations of one URL produce it once. Blocking work runs in
worker threads (``in_thread``), which stop early when their registration is cancelled.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from djl.archive import Budget, locked
from djl.config import ServerConfig
from djl.download import StopEvent
from djl.errors import SourceError

log = logging.getLogger("djl.store")

T = TypeVar("T")

#: Longest a cancelled registration waits for its worker thread to clean up.
_CLEANUP_WAIT_S = 5.0
#: The temps made beside a cache directory ``<hash>``: ``.<hash>.<random>.part`` (a download
#: or extraction in progress) and ``.<hash>.<random>.del`` (a deletion in progress). Only
#: these names are ever removed by ``remove_stale_temps``.
_TEMP_NAME = re.compile(r"\.[0-9a-f]{40}\.[a-z0-9_]+\.(?:part|del)")
#: A temp younger than this is never removed at start-up: another server may have created
#: it and not yet taken its lock (the two are separate steps).
_TEMP_GRACE_S = 10.0


@dataclass
class _CacheDir:
    #: Held while the directory is being produced or deleted.
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: ModelSources of this process using the directory; release() deletes it at zero.
    refs: int = 0
    #: What producing it spent (for an inner archive to continue); None if this process
    #: found it already there.
    budget: Budget | None = None


# One entry per cache directory this process has used (a handful of bytes each).
CACHE: dict[str, _CacheDir] = {}


async def acquire(target: Path, produce: Callable[[StopEvent], Budget]) -> Budget | None:
    """Make sure ``target`` exists, producing it at most once, and count one more user.

    Returns what producing it spent, None if it was there before this process looked.
    """
    entry = CACHE.setdefault(str(target), _CacheDir())
    async with entry.lock:
        if not await trio.to_thread.run_sync(target.is_dir):
            try:
                entry.budget = await in_thread(produce)
            except OSError as exc:
                raise SourceError.cache_unwritable(target, exc) from exc
        entry.refs += 1
        return entry.budget


async def release_paths(paths: list[Path]) -> None:
    for path in reversed(paths):
        entry = CACHE.setdefault(str(path), _CacheDir())
        async with entry.lock:
            entry.refs = max(entry.refs - 1, 0)
            if entry.refs == 0:
                entry.budget = None
                await trio.to_thread.run_sync(_delete, path)


def _delete(path: Path) -> None:
    # Rename first: a crash mid-delete must not leave a partial directory to be reused.
    if not path.exists():
        return
    try:
        trash = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".del", dir=path.parent)
    except OSError as exc:
        log.warning("Cannot delete %s: %s", path, exc)
        return
    try:
        with locked(trash):  # a crash mid-delete leaves it to remove_stale_temps
            os.rename(path, os.path.join(trash, "x"))
            shutil.rmtree(trash, ignore_errors=True)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("Cannot delete %s: %s", path, exc)
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale_temps(config: ServerConfig) -> list[Path]:
    """Delete the temps (``_TEMP_NAME``) that a crashed server left in the cache.

    For start-up; blocking. A temp is stale when no process holds its lock
    (``djl.archive.locked``): the kernel drops the locks of a dead process, while another
    live server sharing the cache keeps its own temps. Links and any other name are left
    alone. Returns what was removed; errors are logged, never raised.
    """
    removed: list[Path] = []
    root = Path(os.path.abspath(config.cache_dir))
    for folder in (root / "cache" / "repo", root / "download"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = folder / name
            if _TEMP_NAME.fullmatch(name) and _remove_if_unlocked(path):
                removed.append(path)
    if removed:
        log.info("Removed %d temp(s) left in the cache by an earlier run", len(removed))
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        # A link fails (ELOOP) and is left alone; a fifo must not block start-up.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: another process is using it
        info = os.fstat(fd)
        if time.time() - info.st_mtime < _TEMP_GRACE_S:
            # Possibly made an instant ago by another server that has not locked it yet.
            return False
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
        elif stat.S_ISREG(mode):
            path.unlink()
        else:
            return False
        return True
    except OSError as exc:
        log.warning("Cannot remove the stale temp %s: %s", path, exc)
        return False
    finally:
        os.close(fd)


async def in_thread(fn: Callable[[StopEvent], T]) -> T:
    """Run ``fn(stop)`` in a worker thread; on cancellation set ``stop`` and await cleanup.

    ``fn`` checks ``stop`` between chunks (a download's socket is also shut down, waking a
    blocked read) and removes its partial output before returning, so a cancelled
    registration leaves nothing behind. The wait is bounded by ``_CLEANUP_WAIT_S`` (a
    connect in progress may take up to the connect timeout); the thread still cleans up
    when it returns.
    """
    stop = StopEvent()
    finished = threading.Event()

    def run() -> T:
        try:
            return fn(stop)
        finally:
            finished.set()

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except trio.Cancelled:
        stop.set()
        with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_WAIT_S):
            await trio.to_thread.run_sync(finished.wait, _CLEANUP_WAIT_S, abandon_on_cancel=True)
        raise


__all__ = ["CACHE", "acquire", "in_thread", "release_paths", "remove_stale_temps"]
