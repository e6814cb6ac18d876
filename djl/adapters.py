"""LoRA adapters of the models (spec §2.10): each model's table of registered adapters and
the jobs that bring every change to every worker.

A model's table lives on its worker pool (``pool.adapters``). A change is one job per
live worker (``WorkerPool.post``: that worker's next job, ahead of the queue), with DJL's
handler contract (djl/adapter_calls.py), so the text-generation engine and a model.py
defining ``register_adapter`` get the same calls; it answers once every worker did. A
worker that starts later (scale-up, a crash's replacement, recycling) registers every
adapter of the table before it takes its first request (``Worker`` asks ``pending``), so
all workers know all adapters. One change at a time per model.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from djl import adapter_calls, url_policy
from djl.adapter_calls import flag
from djl.errors import AdapterError, WlmError
from djl.io import Input, Output

if TYPE_CHECKING:
    from djl.config import ServerConfig
    from djl.wlm.pool import WorkerPool

log = logging.getLogger("djl.adapters")

#: Engines whose workers take adapters: model.py handlers and the generation engine.
PYTHON_ENGINES = ("Python", "Generation")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass
class Adapter:
    """One registered adapter, as describe shows it."""

    name: str
    src: str
    alias: str | None
    #: Every single-valued query parameter of its registration (and updates).
    options: dict[str, str]
    #: Bumped by each update: a starting worker compares it with what it registered.
    version: int = 0

    @property
    def preload(self) -> bool:
        return flag(self.options.get("preload"), True)

    @property
    def pin(self) -> bool:
        return flag(self.options.get("pin"), False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "src": self.src, "preload": self.preload, "pin": self.pin}

    def job(self, handler: str, *, replay: bool = False) -> Input:
        """The job that registers, updates or unregisters it on one worker."""
        inputs = Input()
        inputs.properties.update({"handler": handler, "name": self.name,
                                  "alias": self.alias or "", "src": self.src})
        if replay:
            inputs.properties[adapter_calls.REPLAY] = "true"
        if handler != adapter_calls.UNREGISTER:
            for key, value in self.options.items():
                inputs.add(value.encode(), key)
        return inputs


@dataclass(eq=False)
class ModelAdapters:
    """One model's adapters (on its pool) and the changes to them."""

    pool: WorkerPool
    table: dict[str, Adapter] = field(default_factory=dict)
    _lock: trio.Lock = field(default_factory=trio.Lock)
    _versions: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 62)))

    def find(self, name: str) -> Adapter:
        adapter = self.table.get(name)
        if adapter is None:
            raise AdapterError.not_found(name)
        return adapter

    def pending(self, known: dict[str, int]) -> list[tuple[str, int, Input]]:
        """The jobs that bring a worker that registered ``known`` (name → version) up to
        the table, as (name, version, job): a register for each adapter it lacks or has
        an old version of, an unregister (version -1) for each it should not have."""
        jobs = [(a.name, a.version, a.job(adapter_calls.REGISTER, replay=True))
                for a in self.table.values() if known.get(a.name) != a.version]
        jobs += [(name, -1, Adapter(name, "", None, {}).job(adapter_calls.UNREGISTER))
                 for name in known if name not in self.table]
        return jobs

    async def register(self, adapter: Adapter, *, check_name: bool = True) -> Output:
        began = trio.current_time()
        async with self._lock:
            if check_name and adapter.name in self.table:
                raise AdapterError.already_registered(adapter.name)
            adapter.version = next(self._versions)
            # In the table before the jobs go out: a worker starting meanwhile gets it from
            # ``pending``, every live one by a job; out again if any worker refused it.
            self.table[adapter.name] = adapter
            try:
                output = await self._broadcast(adapter.job(adapter_calls.REGISTER))
            except BaseException:
                del self.table[adapter.name]
                raise
            if output.code >= 300:
                del self.table[adapter.name]
                with trio.CancelScope(shield=True):
                    await self._broadcast(adapter.job(adapter_calls.UNREGISTER))
            elif self.pool.metrics is not None:
                self.pool.metrics.observe_load_adapter_us((trio.current_time() - began) * 1e6)
            return output

    def by_alias(self, alias: str) -> Adapter | None:
        return next((a for a in self.table.values() if a.alias == alias), None)

    async def update(self, name: str, options: dict[str, str]) -> Output:
        async with self._lock:
            old = self.find(name)
            merged = {**old.options, **options}
            new = Adapter(name, merged.get("src", old.src), old.alias, merged,
                          next(self._versions))
            self.table[name] = new
            try:
                output = await self._broadcast(new.job(adapter_calls.UPDATE))
            except BaseException:
                self.table[name] = old
                raise
            if output.code >= 300:  # spec §2.10: on failure the adapter is unchanged
                self.table[name] = old
            return output

    async def unregister(self, name: str) -> Output:
        async with self._lock:
            adapter = self.find(name)
            del self.table[name]
            try:
                return await self._broadcast(adapter.job(adapter_calls.UNREGISTER))
            except BaseException:
                self.table[name] = adapter
                raise

    async def _broadcast(self, inputs: Input) -> Output:
        """Run the job on every live worker (each its own copy): the first refusal, else
        the first answer. A worker that stops meanwhile does not count: its replacement
        registers the table as it starts."""
        jobs = [self.pool.post(worker, _copy(inputs)) for worker in self.pool.loaded_workers()]
        for job in jobs:
            await job.done.wait()
        outputs = [job.result for job in jobs if job.result is not None]
        gone = [job.error for job in jobs if job.error is not None]
        if not outputs and gone and not isinstance(gone[0], WlmError):
            error = gone[0]
            return Output(getattr(error, "status", 500), getattr(error, "message", str(error)))
        if not outputs:
            done = {adapter_calls.REGISTER: "registered", adapter_calls.UPDATE: "updated",
                    adapter_calls.UNREGISTER: "unregistered"}[inputs.properties["handler"]]
            return Output(200, f"Adapter {inputs.properties['name']} {done}")
        return next((o for o in outputs if o.code >= 300), outputs[0])


def _copy(inputs: Input) -> Input:
    copy = Input()
    copy.properties.update(inputs.properties)
    for key, value in inputs.content:
        copy.content.add(key, value)
    return copy


def source_path(src: str, config: ServerConfig) -> str:
    """A ``src`` as the workers open it: a local path or ``file:`` URL (409 for any other
    scheme), checked like a model URL (djl/url_policy.py), in its canonical form."""
    match = _SCHEME.match(src)
    if match is not None and match.group(1).lower() != "file" and len(match.group(1)) > 1:
        raise AdapterError.url_source()
    return url_policy.check_path(src, config).location


def built_in(model_dir: Path) -> list[Adapter]:
    """The adapters a model folder brings (``<model>/adapters/<name>/``), registered when
    the model loads with option.enable_lora=true."""
    folder = model_dir / "adapters"
    if not folder.is_dir():
        return []
    return [Adapter(d.name, str(d.resolve()), None, {})
            for d in sorted(folder.iterdir()) if d.is_dir()]


#: Where an inference request names its adapter (spec §2.10; SageMaker's headers).
_IDENTIFIER = "x-amzn-sagemaker-adapter-identifier"
_ALIAS = "x-amzn-sagemaker-adapter-alias"


def select(adapters: ModelAdapters | None, inputs: Input) -> None:
    """Check the adapters an inference request selects for a model, and pass the query's
    or a header's choice to the worker (``adapter_calls.ADAPTER``).

    The query item ``adapter``, else the custom attribute ``adapter=``, else the headers
    X-Amzn-SageMaker-Adapter-Identifier (a name or alias) or -Alias; and a generation body's
    ``adapters``. "" is the base model. A name not registered: 424 naming it (DJL answers
    every model so, LoRA or not). Each selection counts in AdapterRequests.
    """
    properties = inputs.properties
    item = inputs.content.get("adapter")
    if item is not None:
        name: str | None = bytes(item).decode("utf-8", "replace")
    else:  # a custom attribute, or what an OpenAI route's "model" named
        name = properties.get("adapter", properties.get(adapter_calls.ADAPTER))
    table = adapters.table if adapters is not None else {}
    if name is None:
        ident = properties.get(_IDENTIFIER)
        alias = properties.get(_ALIAS)
        if ident is not None or alias is not None:
            found = table.get(ident) if ident else None
            if found is None and adapters is not None:
                found = adapters.by_alias(ident or alias or "")
            if found is None:
                raise AdapterError.not_registered(ident or alias or "")
            name = found.name
    names = [name] if name else []
    if name and name not in table:
        raise AdapterError.not_registered(name)
    if name is not None:
        properties[adapter_calls.ADAPTER] = name
    if table:
        names += _body_adapters(inputs)
        for each in names:
            if each and each not in table:
                raise AdapterError.not_registered(each)
    metrics = adapters.pool.metrics if adapters is not None else None
    if metrics is not None:
        for each in names:
            if each:
                metrics.count_adapter_request(each)


def _body_adapters(inputs: Input) -> list[str]:
    """A generation body's ``adapters`` (a name, or one per input); the engine checks its
    shape, this only reads the names, and only when the body mentions the key."""
    body = inputs.content.get("data")
    if body is None or b'"adapters"' not in body:
        return []
    try:
        value = json.loads(bytes(body)).get("adapters")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
