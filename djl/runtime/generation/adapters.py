"""The text-generation engine's LoRA adapters: registering, updating, unregistering (the
server's ``register_adapter`` / ``update_adapter`` / ``unregister_adapter`` jobs, spec §2.10)
and which adapter each request's prompts use.

An update makes a new version under the same name: requests from then on use it, while the
sequences already running finish with the weights they started with (the old version's
slot is freed when its last one leaves). Unregistering takes the name away at once (a new
request naming it is refused 424) and answers once every request accepted for it is over.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from djl.adapter_calls import UNREGISTER, UPDATE, flag
from djl.errors import AdapterError as Refused
from djl.runtime.generation.lora import Adapter, AdapterError, MultiLora, check_folder

#: (code, message) of an answered adapter job.
Answer = tuple[int, str]


class AdapterTable:
    """The registered adapters of one engine and its LoRA slots."""

    def __init__(self, lora: MultiLora | None) -> None:
        self.lora = lora
        self.adapters: dict[str, Adapter] = {}
        #: Unregister jobs waiting for their adapter's requests to end: (seq id, adapter).
        self.deferred: list[tuple[int, Adapter]] = []

    # -- the server's jobs ----------------------------------------------------------
    def operate(self, seq_id: int, handler: str, props: dict[str, str],
                options: dict[str, str]) -> Answer | None:
        """Run one adapter job; its answer, or None when it answers later (``settle``)."""
        lora = self.lora
        if lora is None:
            return 400, Refused.lora_disabled().message
        name = props.get("name") or options.get("name") or ""
        if not name:
            return 400, Refused.parameter_required("name").message
        current = self.adapters.get(name)
        if handler == UNREGISTER:
            if current is None:
                return 404, Refused.not_found(name).message
            del self.adapters[name]
            self._retire(current)
            if current.refs:
                self.deferred.append((seq_id, current))
                return None
            return 200, f"Adapter {name} unregistered"
        if handler == UPDATE and current is None:
            return 404, Refused.not_found(name).message
        src = props.get("src") or options.get("src") or (
            str(current.src) if current is not None else "")
        if not src:
            return 400, Refused.parameter_required("src").message
        old_pin = current.pin if current is not None else False
        adapter = Adapter(name, Path(src), pin=flag(options.get("pin"), old_pin))
        try:
            check_folder(adapter.src)
            if flag(options.get("preload"), True) or adapter.pin:
                lora.read(adapter)
            if adapter.pin:
                pinned = lora.pinned() - (1 if current is not None and current.pin else 0)
                if pinned >= lora.max_loras:
                    return 400, (f"All {lora.max_loras} LoRA slots (option.max_loras) hold "
                                 "pinned adapters")
        except AdapterError as exc:
            return 400, str(exc)
        if current is not None:
            self._retire(current)
        self.adapters[name] = adapter
        if adapter.pin:
            lora.acquire(adapter)
            lora.release(adapter)  # the slot stays: pinned adapters are never evicted
        return 200, f"Adapter {name} {'updated' if handler == UPDATE else 'registered'}"

    def settle(self) -> list[tuple[int, Answer]]:
        """The deferred unregister jobs whose adapter has no request left."""
        done = [(seq_id, a) for seq_id, a in self.deferred if a.refs == 0]
        if not done:
            return []
        self.deferred = [(s, a) for s, a in self.deferred if a.refs]
        return [(seq_id, (200, f"Adapter {a.name} unregistered")) for seq_id, a in done]

    # -- requests ---------------------------------------------------------------------
    def select(self, names: Iterable[str]) -> list[Adapter | None]:
        """The adapter of each prompt ("" the base model); Refused (424) for a name not
        registered or one that cannot be read."""
        chosen: list[Adapter | None] = []
        for name in names:
            if not name:
                chosen.append(None)
                continue
            adapter = self.adapters.get(name)
            if adapter is None:
                raise Refused.not_registered(name)
            if adapter.weights is None:  # preload=false: read at its first use
                assert self.lora is not None
                try:
                    self.lora.read(adapter)
                except AdapterError as exc:
                    raise Refused(f"The adapter {name} cannot be loaded: {exc}",
                                  status=424) from None
            chosen.append(adapter)
        return chosen

    @staticmethod
    def hold(adapters: Iterable[Adapter | None]) -> None:
        """A request for these adapters is accepted (unregister waits for it)."""
        for adapter in set(adapters):
            if adapter is not None:
                adapter.refs += 1

    @staticmethod
    def drop(adapters: Iterable[Adapter | None]) -> None:
        for adapter in set(adapters):
            if adapter is not None:
                adapter.refs -= 1

    def _retire(self, adapter: Adapter) -> None:
        adapter.retired = True
        if adapter.users == 0 and self.lora is not None:
            self.lora.unload(adapter)

