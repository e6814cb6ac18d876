"""LoRA adapters on a causal LM, many in one batch: each row of a forward has its own.

An adapter is a PEFT folder (``adapter_config.json``, ``adapter_model.safetensors``): for
each target ``nn.Linear`` a pair A ``[r, in]``, B ``[out, r]`` and a scale (``lora_alpha /
r``, or ``/ sqrt(r)`` with ``use_rslora``), so the layer computes
``base(x) + (x Aᵀ) Bᵀ · scale``, as PEFT's ``LoraLayer`` does.

Multi-LoRA batching (the idea of punica and vLLM): ``max_loras`` *slots*; each target module
keeps the slots' A and B stacked, ``Aᵀ [in, slots·R]`` and ``Bᵀ [slots·R, out]`` (R the
largest rank loaded, smaller ones zero-padded), and a forward hook adds, for the whole
batch at once, ``((x Aᵀ) ⊙ mask) Bᵀ`` onto the base output: ``mask [rows, 1, slots·R]``
holds, on each row, its adapter's scale in the columns of its slot and 0 elsewhere, so a
row with no adapter (slot 0) gets an exact zero and the others their own adapter's delta.
Three ops per module for any mix of adapters (a matmul, a multiply and an ``addmm_`` in
place); no weights are swapped between steps. The row → slot map changes only when a
sequence joins or leaves, so ``set_rows`` rebuilds the masks then, not per step. With no
adapter row in a forward the hooks return at once.

The slots are changed in place, so always under ``torch.inference_mode`` (the scheduler's
forward runs in it, and tensors made there may only be changed there). Slots are taken
when a sequence is admitted and given back when it leaves; an adapter not used by a
running sequence may be evicted (least recently used first) unless pinned.
A sequence whose adapter finds no free slot waits (the scheduler admits it later).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


class AdapterError(Exception):
    """The folder is not an adapter this model can use; the message says why."""


@dataclass(eq=False)
class Adapter:
    """One registered adapter (one version of it: an update makes a new one)."""

    name: str
    src: Path
    pin: bool = False
    #: Module name → (A [r, in], B [out, r], scale); None until read (preload=false).
    weights: dict[str, tuple[torch.Tensor, torch.Tensor, float]] | None = None
    rank: int = 0
    #: Its slot (1..max_loras), 0 when it holds none.
    slot: int = 0
    #: Running sequences using it (its slot is theirs while > 0).
    users: int = 0
    #: Requests accepted for it and not answered yet (unregister waits for 0).
    refs: int = 0
    #: No longer the adapter its name selects (updated or unregistered): its slot is
    #: freed once its last user leaves.
    retired: bool = False
    last_used: int = field(default=0)


def check_folder(src: Path) -> dict[str, Any]:
    """The folder's adapter config, if it is a LoRA adapter we can apply; else AdapterError."""
    if not src.is_dir():
        raise AdapterError(f"The adapter folder {src} does not exist")
    try:
        config = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"No {CONFIG_FILE} in {src}") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{CONFIG_FILE} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{CONFIG_FILE} is not a JSON object")
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise AdapterError(f"Only LoRA adapters are served, not peft_type {kind}")
    if config.get("use_dora"):
        raise AdapterError("DoRA adapters (use_dora) are not supported")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"LoRA bias={config.get('bias')} is not supported")
    if config.get("modules_to_save"):
        raise AdapterError("Adapters with modules_to_save are not supported")
    if not (src / WEIGHTS_FILE).is_file():
        raise AdapterError(f"No {WEIGHTS_FILE} in {src}")
    return config


def _pattern_value(patterns: dict[str, Any], module: str, default: float) -> float:
    """PEFT's rank/alpha pattern rule: a key matches the module name or its dotted tail."""
    for key, value in (patterns or {}).items():
        if module == key or re.match(rf"(.*\.)?({key})$", module):
            return float(value)
    return default


def read_weights(src: Path, modules: dict[str, nn.Linear], dtype: torch.dtype,
                 device: torch.device
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Each target module's (A, B, scale), checked against the model's layers."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = check_folder(src)
    try:
        tensors = load_file(str(src / WEIGHTS_FILE))
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"{WEIGHTS_FILE} cannot be read: {exc}") from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None or not key.startswith(_PREFIX):
            raise AdapterError(f"Unsupported tensor {key} in {WEIGHTS_FILE}: only LoRA A/B "
                               "weights of linear layers are served")
        module = key[len(_PREFIX):-len(suffix)]
        pairs.setdefault(module, {})[suffix[1:7]] = tensor
    if not pairs:
        raise AdapterError(f"{WEIGHTS_FILE} holds no LoRA weights")
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    alpha = float(config.get("lora_alpha", 8))
    rslora = bool(config.get("use_rslora"))
    weights = {}
    for module, pair in pairs.items():
        layer = modules.get(module)
        if layer is None:
            raise AdapterError(f"The adapter targets {module}, which is not a linear layer "
                               "of this model")
        if set(pair) != {"lora_A", "lora_B"}:
            raise AdapterError(f"{module} lacks its lora_A or lora_B weight")
        a, b = pair["lora_A"], pair["lora_B"]
        if fan_in_fan_out:
            a, b = a.T, b.T
        rank = a.shape[0]
        if a.shape != (rank, layer.in_features) or b.shape != (layer.out_features, rank):
            raise AdapterError(
                f"{module}: LoRA shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit a "
                f"{layer.in_features}→{layer.out_features} layer")
        module_alpha = _pattern_value(config.get("alpha_pattern") or {}, module, alpha)
        scale = module_alpha / (math.sqrt(rank) if rslora else rank)
        weights[module] = (a.to(device=device, dtype=dtype).contiguous(),
                           b.to(device=device, dtype=dtype).contiguous(), scale)
    return weights


class _Stack:
    """One module's slots: Aᵀ ``[in, slots·R]`` and Bᵀ ``[slots·R, out]`` stacked, each
    column's scale (its slot's), and the next forward's per-row mask of columns."""

    __slots__ = ("a_t", "b_t", "columns", "mask")

    def __init__(self, layer: nn.Linear, slots: int, rank: int) -> None:
        weight = layer.weight
        self.a_t = weight.new_zeros((layer.in_features, slots * rank))
        self.b_t = weight.new_zeros((slots * rank, layer.out_features))
        self.columns = weight.new_zeros((slots * rank,))
        #: [rows, 1, slots·R]: on each row its slot's scale in its slot's columns, else 0.
        self.mask: torch.Tensor | None = None


class MultiLora:
    """The model's LoRA slots and the hooks that apply them per row; see the module doc."""

    def __init__(self, model: nn.Module, max_loras: int) -> None:
        self.modules = {name: m for name, m in model.named_modules()
                        if isinstance(m, nn.Linear)}
        first = next(model.parameters())
        self.dtype, self.device = first.dtype, first.device
        self.max_loras = max(1, max_loras)
        #: slots[i - 1] is the adapter in slot i.
        self.slots: list[Adapter | None] = [None] * self.max_loras
        self.rank = 0
        self.stacks: dict[str, _Stack] = {}
        self._hooks: dict[str, Any] = {}
        #: [rows, 1, slots·R] for the next forward; None: no row has an adapter.
        self.mask: torch.Tensor | None = None
        self._clock = 0
        #: Bumped whenever a slot's weights or the stacks' layout change: the scheduler
        #: calls ``set_rows`` again before its next forward.
        self.version = 0

    # -- adapters -------------------------------------------------------------------
    def read(self, adapter: Adapter) -> None:
        """Read the adapter's weights (once)."""
        if adapter.weights is None:
            adapter.weights = read_weights(adapter.src, self.modules, self.dtype,
                                           self.device)
            adapter.rank = max(a.shape[0] for a, _, _ in adapter.weights.values())

    def pinned(self) -> int:
        return sum(1 for a in self.slots if a is not None and a.pin)

    @torch.inference_mode()
    def acquire(self, adapter: Adapter) -> bool:
        """A slot for one more running sequence of ``adapter``; False when every slot is
        held by an adapter in use (or pinned): the sequence waits."""
        self._clock += 1
        adapter.last_used = self._clock
        if adapter.slot:
            adapter.users += 1
            return True
        free = [i for i, a in enumerate(self.slots, 1)
                if a is None or (a.users == 0 and not a.pin)]
        if not free:
            return False
        slot = min(free, key=lambda i: -1 if self.slots[i - 1] is None
                   else self.slots[i - 1].last_used)  # type: ignore[union-attr]
        old = self.slots[slot - 1]
        if old is not None:
            old.slot = 0
        self.read(adapter)
        self._load(adapter, slot)
        adapter.users += 1
        return True

    def release(self, adapter: Adapter) -> None:
        adapter.users -= 1
        if adapter.users == 0 and adapter.retired:
            self.unload(adapter)

    @torch.inference_mode()
    def unload(self, adapter: Adapter) -> None:
        """Free the adapter's slot (it must have no running sequence)."""
        slot = adapter.slot
        if not slot:
            return
        self.slots[slot - 1] = None
        adapter.slot = 0
        for stack in self.stacks.values():
            self._clear(stack, slot)
        self.version += 1

    # -- rows -----------------------------------------------------------------------
    @torch.inference_mode()
    def set_rows(self, slots: Sequence[int]) -> None:
        """The slot of each row of the next forward (0: the base model)."""
        if not any(slots):
            self.mask = None
            return
        rows = torch.tensor(slots, dtype=torch.long, device=self.device)
        columns = torch.arange(self.max_loras * self.rank, device=self.device)
        owner = columns // self.rank + 1  # the slot each stacked column belongs to
        self.mask = (owner.view(1, -1) == rows.view(-1, 1)).to(self.dtype).unsqueeze(1)
        for stack in self.stacks.values():
            stack.mask = self.mask * stack.columns

    # -- internals ------------------------------------------------------------------
    def _load(self, adapter: Adapter, slot: int) -> None:
        assert adapter.weights is not None
        if adapter.rank > self.rank:
            self._grow(adapter.rank)
        for module in adapter.weights:
            if module not in self.stacks:
                self.stacks[module] = _Stack(self.modules[module], self.max_loras, self.rank)
                self._hooks[module] = self.modules[module].register_forward_hook(
                    self._hook(self.stacks[module]))
        for module, stack in self.stacks.items():
            self._clear(stack, slot)
            if module in adapter.weights:
                a, b, scale = adapter.weights[module]
                at = (slot - 1) * self.rank
                stack.a_t[:, at:at + a.shape[0]] = a.T
                stack.b_t[at:at + a.shape[0]] = b.T
                stack.columns[at:at + self.rank] = scale
        self.slots[slot - 1] = adapter
        adapter.slot = slot
        self.version += 1

    def _clear(self, stack: _Stack, slot: int) -> None:
        at = (slot - 1) * self.rank
        stack.a_t[:, at:at + self.rank] = 0
        stack.b_t[at:at + self.rank] = 0
        stack.columns[at:at + self.rank] = 0

    def _grow(self, rank: int) -> None:
        """A larger rank than any loaded: re-lay every stack with ``rank`` columns a slot."""
        loaded = [a for a in self.slots if a is not None]
        self.rank = rank
        for module in self.stacks:
            stack = _Stack(self.modules[module], self.max_loras, rank)
            self.stacks[module] = stack
            self._hooks[module].remove()
            self._hooks[module] = self.modules[module].register_forward_hook(
                self._hook(stack))
        for adapter in loaded:
            self._load(adapter, adapter.slot)

    def _hook(self, stack: _Stack) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...],
                 output: torch.Tensor) -> torch.Tensor | None:
            if self.mask is None:
                return None
            # Three ops for any mix of rows: x Aᵀ for every slot, each row keeps its own
            # slot's columns (times its scale), and B adds them onto the base output.
            hidden = torch.matmul(args[0], stack.a_t)
            hidden.mul_(stack.mask)
            output.view(-1, output.shape[-1]).addmm_(hidden.view(-1, hidden.shape[-1]),
                                                     stack.b_t)
            return output
        return hook
