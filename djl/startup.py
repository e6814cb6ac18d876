"""Models loaded at start-up (spec §4.5): ``load_models`` / ``-m`` and the model store.

Entries load one after another in the listed order (the spec's [REC]); any failure
aborts start-up, which the CLI turns into one line and exit status 1.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from djl.archive import ARCHIVE_SUFFIXES
from djl.config import ConfigError, RegisterParams, ServerConfig
from djl.registry import ModelManager
from djl.store import infer_model_name

log = logging.getLogger("djl.startup")


@dataclass(frozen=True)
class StartupEntry:
    """One ``[name[:version[:engine[:devices]]]=]url`` item."""

    url: str
    name: str | None = None
    version: str | None = None
    engine: str | None = None
    devices: str | None = None

    @classmethod
    def parse(cls, text: str) -> StartupEntry:
        query_at = text.find("?")
        eq = text.find("=")
        if eq <= 0 or (query_at != -1 and eq > query_at):
            return cls(url=text)
        endpoint, url = text[:eq], text[eq + 1 :]
        if endpoint.startswith("[") and endpoint.endswith("]"):
            endpoint = endpoint[1:-1]
        parts = endpoint.split(":", 3) + [""] * 3
        return cls(url=url, name=parts[0] or None, version=parts[1] or None,
                   engine=parts[2] or None, devices=parts[3] or None)


def startup_entries(config: ServerConfig) -> list[StartupEntry]:
    entries = _listed_entries(config)
    if config.hf_model_id:
        entries.append(_hf_entry(config.hf_model_id))
    return entries


def _hf_entry(model_id: str) -> StartupEntry:
    """Spec §4.5: ``HF_MODEL_ID`` adds one entry: a URL as it is, a local path like a store
    folder. A hub id would need a Hugging Face handler, which this server does not have."""
    if re.match(r"(?i)[a-z][a-z0-9+.-]*://", model_id):
        return StartupEntry(url=model_id, name=None)
    path = Path(model_id).expanduser()
    if path.is_dir():
        return _store_entry(path)
    if path.is_file():  # an archive or a single .py file
        url = f"file:{path.resolve()}"
        return StartupEntry(url=url, name=infer_model_name(url))
    raise ConfigError(
        f"HF_MODEL_ID={model_id}: only a local path or a URL is supported (no Hugging Face "
        "hub handler in this server)"
    )


def _listed_entries(config: ServerConfig) -> list[StartupEntry]:
    spec = config.load_models.strip()
    if spec.upper() == "NONE":
        return []
    if spec and spec.upper() != "ALL":
        return [StartupEntry.parse(item) for item in re.split(r"[,\s]+", spec) if item]
    if not config.model_store:
        log.warning("Model store is not configured.")
        return []
    store = Path(config.model_store)
    if not store.is_dir():
        log.warning("Model store %s does not exist.", store)
        return []
    children = sorted(p for p in store.iterdir() if not p.name.startswith("."))
    candidates = [p for p in children if p.is_dir() or p.name.lower().endswith(ARCHIVE_SUFFIXES)]
    # Spec §4.5: a store entry maps to `<inferred name>=file:<dir>/`, so the folder names
    # a workflow folder's endpoint too (not the "name" inside its workflow.json).
    if len(candidates) != len(children):
        return [_store_entry(store)]
    entries = []
    for path in candidates:
        if path.is_dir() and any(path.iterdir()):
            entries.append(_store_entry(path))
        else:
            log.warning("Skipping %s in the model store: only non-empty folders load", path)
    return entries


def _store_entry(path: Path) -> StartupEntry:
    url = f"file:{path.resolve()}/"
    return StartupEntry(url=url, name=infer_model_name(url))


async def load_startup_models(manager: ModelManager, config: ServerConfig) -> None:
    for entry in startup_entries(config):
        log.info("loading start-up model %s", entry.url)
        await manager.register(
            RegisterParams(url=entry.url, model_name=entry.name, model_version=entry.version,
                           engine=entry.engine, device=entry.devices),
            startup=True,
        )
