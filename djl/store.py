"""Model sources: a model URL becomes a local model directory, safely (spec §4.1, §4.2, §4.4).

Accepted URLs:

* no scheme or ``file:`` (``file:rel/x``, ``file:/abs``, ``file:///abs``): a local path,
  relative to the working directory. A directory is used in place; an archive
  (``.zip .mar .tgz .tar.gz .tar.z .tar``, any case) is extracted once into
  ``<cache_dir>/cache/repo/<hash>``; any other regular file means its parent directory (and
  a ``.py`` file becomes the entry point). A plain path is taken literally except that
  ``?`` starts the query; a ``file:`` URL is percent-decoded.
* ``http(s)://`` whose last path segment is an archive: downloaded (``djl.download``) and
  extracted the same way, keyed by the hash of the normalised URL (query included: it is
  sent). A path with a ``.`` or ``..`` segment (also percent-encoded) is refused (400).
* anything else (``s3:``, ``djl:``, ``gs:``, ``jar:``, other http URLs): 400 "not supported".

Then spec §4.1 steps 3-4: a directory whose only non-hidden entry is a directory is
replaced by it, and one whose only non-hidden entry is an archive is replaced by that
archive extracted into ``<cache_dir>/download/<hash>``; an inner archive shares its outer
archive's extraction limits (``djl.archive.Budget``). The URL's query arguments become
model arguments (``model_name`` also names the artifact).

Safety: whether a URL may be used at all is decided by ``djl.url_policy`` alone, before
any I/O, and the store then opens the canonical path it returns, never the text. Local
paths are checked a second time in symlink-free form (``url_policy.check_resolved``), so
a symlink cannot step out of an allowed directory, and so is the folder or archive that
steps 3-4 pick inside a local directory; redirects are checked as they are followed.
Extraction rules are in ``djl.archive``, download rules in ``djl.download``.

The folders archives are extracted into are shared and counted by ``djl.source_cache``;
``release`` gives a registration's share back. All blocking work runs in worker threads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from djl import source_cache, url_policy
from djl.archive import (
    ARCHIVE_SUFFIXES,
    Budget,
    Limits,
    archive_kind,
    extract_archive,
    strip_archive_suffix,
)
from djl.config import ServerConfig
from djl.download import StopEvent, downloaded, fetch_bytes
from djl.errors import BadRequest, IllegalArgument, ModelNotFound, SourceError
from djl.url_policy import ModelUrl

log = logging.getLogger("djl.store")

#: Name-inference suffixes (spec §4.2 step 4), in the order they are tried.
_NAME_SUFFIXES = (".tar.z", ".tgz", ".zip", ".tar", ".mar", ".gz", ".z")


@dataclass(frozen=True)
class ModelSource:
    """A model URL resolved to a local directory (what registration needs from a URL)."""

    url: str  # the URL as registered
    model_dir: Path  # absolute; after the nested-folder and single-inner-archive rules
    artifact_name: str  # URL file name without archive extension: the §4.4 prefix
    arguments: Mapping[str, str]  # the URL's query arguments, decoded
    entry_point: str | None  # the .py file the URL names, absolute; else None
    owned_paths: tuple[Path, ...]  # cache dirs release() deletes; never a user's own dir


def url_hash(text: str) -> str:
    """Spec §4.1: lower-case hex of the first 20 bytes of SHA-256 (40 characters)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:40]


# -- names and the allow-list ---------------------------------------------------------------


def infer_model_name(url: str) -> str:
    """The model name a URL implies when none is given (spec §4.2, examples there).

    Raises ``IllegalArgument`` (409, as the spec's URI syntax error) if ``url`` cannot be
    parsed as a URL.
    """
    try:
        path = urlsplit(url).path
    except ValueError:
        raise IllegalArgument.invalid_url(url) from None
    is_dir = path.endswith("/")
    if is_dir:
        path = path[:-1]
    name = unquote(path.rsplit("/", 1)[-1])
    if not is_dir:
        if name.lower().endswith(".tar.gz"):
            name = name[: -len(".tar.gz")]
        else:
            for suffix in _NAME_SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _local_info(url: ModelUrl, config: ServerConfig) -> tuple[str, str]:
    """(absolute path, kind) with kind "dir", "file" or a 4xx; blocking."""
    path = url.location
    try:
        if not path:
            raise FileNotFoundError(url.text)
        st = os.stat(path)
        real = os.path.realpath(path)
    except ValueError:
        raise BadRequest(f"Invalid model url: {url.text}") from None
    except OSError:
        raise ModelNotFound.invalid_url(url.text) from None
    url_policy.check_resolved(url, real, config)
    if stat.S_ISDIR(st.st_mode):
        return path, "dir"
    if stat.S_ISREG(st.st_mode):
        return path, "file"
    raise SourceError(f"Not a regular file or directory: {url.text}", status=400)


# -- resolution -----------------------------------------------------------------------------


async def resolve_model(url: str, config: ServerConfig) -> ModelSource:
    """Resolve a model URL to a local directory (spec §4.1; module docstring for the rules).

    ``url_policy.check`` comes first, before any I/O. Raises a ``DjlError``
    with a 4xx status for anything wrong with the URL or what it names: ``Forbidden``
    (allowed_urls), ``ModelNotFound`` (404: missing local path),
    ``SourceError`` (400 unsupported, corrupt or unsafe; 404 remote missing; 413 too large;
    502/504 remote failures and timeouts). Whatever this call extracted or downloaded
    before failing (or being cancelled) is released again, so nothing is left behind.
    """
    parsed = url_policy.check(url, config)
    arguments = dict(parse_qsl(parsed.query, keep_blank_values=True))
    owned: list[Path] = []
    try:
        entry_point = None
        if parsed.scheme in ("", "file"):
            path, kind = await trio.to_thread.run_sync(_local_info, parsed, config)
            name = os.path.basename(path)
            archive = archive_kind(name) if kind == "file" else None
            if kind == "dir":
                artifact = name
                model_dir = await _unwrap(Path(path), config, owned, origin=parsed)
            elif archive is not None:
                target = _repo_dir(config) / url_hash(path)
                job = _extract_job(Path(path), target, archive, url, config)
                artifact = strip_archive_suffix(name)
                model_dir = await _extracted(target, job, url, config, owned)
            else:
                artifact, model_dir = Path(name).stem, Path(path).parent
                entry_point = path if name.endswith(".py") else None
        else:
            name = unquote(parsed.location.rsplit("/", 1)[-1])
            archive = archive_kind(name)
            if archive is None:
                raise SourceError(
                    f"Only archive URLs ({' '.join(ARCHIVE_SUFFIXES)}) are supported over http(s): "
                    f"{url}",
                    status=400,
                )
            target = _repo_dir(config) / url_hash(parsed.fetch)
            job = _download_job(parsed.fetch, target, archive, config)
            artifact = strip_archive_suffix(name)
            model_dir = await _extracted(target, job, url, config, owned)
    except BaseException:
        with trio.CancelScope(shield=True):
            await source_cache.release_paths(owned)
        raise
    return ModelSource(
        url=url,
        model_dir=model_dir,
        artifact_name=arguments.get("model_name") or artifact,
        arguments=MappingProxyType(arguments),
        entry_point=entry_point,
        owned_paths=tuple(owned),
    )


def _repo_dir(config: ServerConfig) -> Path:
    return Path(os.path.abspath(config.cache_dir)) / "cache" / "repo"


def _limits(config: ServerConfig) -> Limits:
    return Limits(config.archive_max_bytes, config.archive_max_entries, config.archive_max_ratio)


class _BudgetUnknown(Exception):
    """An inner archive needs extracting, but its outer layer was extracted by an earlier
    run, so what that layer spent (``Budget``) is not known here."""


async def _extracted(
    target: Path,
    produce: Callable[[StopEvent], Budget],
    url: str,
    config: ServerConfig,
    owned: list[Path],
) -> Path:
    """The archive directory ``target`` (made by ``produce`` unless it exists), unwrapped."""
    spent = await source_cache.acquire(target, produce)
    owned.append(target)
    try:
        return await _unwrap(target, config, owned, spent=spent, layered=url)
    except _BudgetUnknown:
        pass
    spent = await _remeasure(target, produce)
    return await _unwrap(target, config, owned, spent=spent, layered=url)


async def _remeasure(target: Path, produce: Callable[[StopEvent], Budget]) -> Budget:
    """Extract ``target``'s archive again (once, whoever asks first) to learn what it spends.

    The directory in place stays (extract_archive keeps a complete target it finds there and
    discards its own copy): others may be reading it right now.
    """
    entry = source_cache.CACHE[str(target)]
    async with entry.lock:
        if entry.budget is None:
            try:
                entry.budget = await source_cache.in_thread(produce)
            except OSError as exc:
                raise SourceError.cache_unwritable(target, exc) from exc
        return entry.budget


async def _unwrap(
    model_dir: Path,
    config: ServerConfig,
    owned: list[Path],
    *,
    origin: ModelUrl | None = None,
    spent: Budget | None = None,
    layered: str = "",
) -> Path:
    """Spec §4.1 steps 3-4: a single top-level folder, then a single inner archive.

    ``origin`` is the local URL when ``model_dir`` is the user's directory: a link chosen by
    these rules is checked against the allow-list as that URL was. ``layered`` is the URL
    when ``model_dir`` is that URL's extracted archive, whose budget ``spent`` an inner
    archive continues (raises ``_BudgetUnknown`` if it must and ``spent`` is None).
    """
    model_dir = await trio.to_thread.run_sync(_nested_dir, model_dir, origin, config)
    inner = await trio.to_thread.run_sync(_single_archive, model_dir, origin, config)
    if inner is None:
        return model_dir
    kind = archive_kind(inner.name)
    assert kind is not None
    target = Path(os.path.abspath(config.cache_dir)) / "download" / url_hash(str(inner))
    label = f"{layered} (its inner archive {inner.name})" if layered else str(inner)
    job = _extract_job(inner, target, kind, label, config, spent, bool(layered))
    await source_cache.acquire(target, job)
    owned.append(target)
    return await trio.to_thread.run_sync(_nested_dir, target, None, config)


def visible_entries(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []


def _nested_dir(directory: Path, origin: ModelUrl | None, config: ServerConfig) -> Path:
    entries = visible_entries(directory)
    if len(entries) == 1 and entries[0].is_dir():
        _check_unwrapped(entries[0], origin, config)
        return entries[0]
    return directory


def _single_archive(directory: Path, origin: ModelUrl | None, config: ServerConfig) -> Path | None:
    entries = visible_entries(directory)
    if len(entries) == 1 and archive_kind(entries[0].name) and entries[0].is_file():
        _check_unwrapped(entries[0], origin, config)
        return entries[0]
    return None


def _check_unwrapped(entry: Path, origin: ModelUrl | None, config: ServerConfig) -> None:
    """A link picked by steps 3-4 must not lead where the allow-list would not go."""
    real = os.path.realpath(entry)
    if real == os.path.join(os.path.realpath(entry.parent), entry.name):
        return  # no link: inside the directory that was checked
    if origin is None:
        # Extraction never creates links, so one in the cache was put there by someone else.
        raise SourceError(f"Unexpected link in the model cache: {entry}", status=400)
    url_policy.check_resolved(origin, real, config)


def _extract_job(
    archive: Path,
    target: Path,
    kind: str,
    label: str,
    config: ServerConfig,
    spent: Budget | None = None,
    layered: bool = False,
) -> Callable[[StopEvent], Budget]:
    def job(stop: StopEvent) -> Budget:
        if layered and spent is None:
            raise _BudgetUnknown()
        return extract_archive(
            archive, target, kind=kind, limits=_limits(config), label=label, stop=stop,
            spent=spent,
        )

    return job


def _download_job(
    url: str, target: Path, kind: str, config: ServerConfig
) -> Callable[[StopEvent], Budget]:
    def job(stop: StopEvent) -> Budget:
        with downloaded(
            url,
            target.parent,
            config,
            allow=lambda u: url_policy.check(u, config),
            stop=stop,
            prefix=f".{target.name}.",
        ) as tmp:
            return extract_archive(
                tmp, target, kind=kind, limits=_limits(config), label=url, stop=stop
            )

    return job


async def release(source: ModelSource) -> None:
    """Delete the cache directories ``source`` owns once no other registration uses them.

    Shielded: unregistering finishes its cleanup even when cancelled. Deletion errors are
    logged, never raised (the model is gone either way).
    """
    with trio.CancelScope(shield=True):
        await source_cache.release_paths(list(source.owned_paths))


# -- workflow files -------------------------------------------------------------------------


async def fetch_text(url: str, config: ServerConfig) -> str:
    """The text of a workflow file from a local path, ``file:`` URL or http(s) URL.

    Allow-list checked like a model URL; capped at the smaller of ``download_max_bytes``
    and ``max_request_size`` (413). Missing local file: ``ModelNotFound`` (404); not UTF-8:
    400; http errors as in ``resolve_model``.
    """
    parsed = url_policy.check(url, config)
    cap = min(config.download_max_bytes, config.max_request_size)
    if parsed.scheme in ("", "file"):
        data = await trio.to_thread.run_sync(_read_local, parsed, config, cap)
    else:
        data = await source_cache.in_thread(
            lambda stop: fetch_bytes(
                parsed.fetch,
                config,
                max_bytes=cap,
                allow=lambda u: url_policy.check(u, config),
                stop=stop,
            )
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"Not a UTF-8 text file: {url}", status=400) from None


def _read_local(url: ModelUrl, config: ServerConfig, cap: int) -> bytes:
    path, kind = _local_info(url, config)
    if kind != "file":
        raise SourceError(f"Not a file: {url.text}", status=400)
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        raise ModelNotFound.invalid_url(url.text) from None
    if len(data) > cap:
        raise SourceError(f"File exceeds {cap} bytes: {url.text}", status=413)
    return data
