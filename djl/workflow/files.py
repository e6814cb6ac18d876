"""Which model URLs are workflow files, and where a workflow's file is (spec §7.1).

:func:`workflow_file_of` says whether a model URL is really a workflow; ``spec.py`` reads
and parses the file these helpers find."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from djl import url_policy
from djl.errors import BadRequest, DjlError, IllegalArgument

FILE_TYPES = ("json", "yml", "yaml")
#: The files a workflow directory may hold, in the order they are looked for (§7.1).
DIRECTORY_FILES = ("workflow.json", "workflow.yml", "workflow.yaml")

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def local_path(url: str) -> Path | None:
    """The path of a scheme-less or ``file:`` URL (relative to the working directory);
    None for any other scheme."""
    try:
        parsed = url_policy.canonical(url)
    except DjlError:
        return None
    return Path(parsed.location) if parsed.is_local else None


def path_uri(path: Path) -> str:
    return "file:" + path.absolute().as_posix()


def _directory_file(path: Path) -> Path | None:
    for name in DIRECTORY_FILES:
        candidate = path / name
        if candidate.is_file():
            return candidate
    return None


def _child(url: str, name: str) -> str:
    """``name`` inside the directory ``url``, spelt like ``url`` (so allow-list patterns
    written for the caller's form still match)."""
    return url.rstrip("/") + "/" + name


def workflow_file_of(url: str) -> str | None:
    """§7.1: None if ``url`` names a model; else the URL of the workflow file to read.

    A workflow is an ``http*...*.json`` URL, any ``*.yml``/``*.yaml`` URL, or an existing
    local path (scheme-less or ``file:``) that ends with ``.json``/``.yml``/``.yaml`` or is
    a directory holding ``workflow.json`` (else ``.yml``, else ``.yaml``), for which the
    result is ``<url>/workflow.json`` (etc.). So a local ``model.json`` is a workflow
    [QUIRK]. Blocking: a few ``stat`` calls.
    """
    if (url.startswith("http") and url.endswith(".json")) or url.endswith((".yml", ".yaml")):
        return url
    path = local_path(url)
    if path is None or not path.exists():
        return None
    if path.as_posix().endswith((".json", ".yml", ".yaml")):
        return url
    if path.is_dir():
        found = _directory_file(path)
        return None if found is None else _child(url, found.name)
    return None


def _extension(url: str) -> str:
    """The file type a workflow URL declares: the text after the last ``.`` of its path."""
    if _SCHEME.match(url) and not url.lower().startswith("file:"):
        url = urlsplit(url).path
    last = url.rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1] if "." in last else ""


def workflow_file_type(url: str) -> str:
    file_type = _extension(url)
    if file_type.lower() not in FILE_TYPES:
        raise IllegalArgument.file_type(file_type)
    return file_type


def locate(path: Path, url: str) -> tuple[str, str]:
    """(URL of the workflow file, its ``file:`` URI) for a local file or directory URL."""
    if path.is_dir():
        found = _directory_file(path)
        if found is None:
            raise BadRequest(
                f"The directory {url} holds no workflow.json, workflow.yml or workflow.yaml"
            )
        return _child(url, found.name), path_uri(found)
    return url, path_uri(path)
