"""Continuous batching over a causal LM's forward: iteration-level scheduling.

``RollingBatch`` holds the sequences being decoded together and their key/value cache
(one ``DynamicCache`` for the batch, left-padded to a common length, with the 2-D
attention mask that hides the padding and explicit position ids per sequence: a row's
positions count its own tokens, never its padding, as ``generate`` counts them for a
left-padded batch). Each ``step`` decodes one token for every running sequence, then
prefills every waiting sequence that has a place in one forward (left-padded together;
one alone runs exactly the forward ``generate`` runs) and joins them to the batch, so new
requests cost their running neighbours one prefill per step, not one each, nor a wait for
the batch to drain. A sequence
that finished or was cancelled is ``remove``d before the next step: its rows leave the
cache at once, and padding columns no sequence needs any more are trimmed.

Why this rather than transformers' own continuous-batching manager (paged attention,
``init_continuous_batching``): that one runs its loop in a thread of its own and shares one
generation config, where a request here brings its own sampling parameters, seed, stop
texts and cancellation, all applied between two steps of the worker's single loop; and a
sequence alone in the batch runs the very forward ``generate`` runs, so greedy decoding
equals it token for token. See bench/llm.py for the numbers.

Sampling follows transformers' logits processors (repetition penalty, temperature, top-k,
top-p) row by row; each sequence draws from its own ``torch.Generator``.

LoRA (lora.py): a sequence may name an adapter; it is admitted once its adapter holds a
slot (else it waits, and sequences behind it may go first), and before each forward the
batch tells the adapters which slot each row uses, so one forward serves any mix.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence as Seq
from typing import Any

import torch
from transformers import DynamicCache

from djl.runtime.generation.lora import Adapter, MultiLora
from djl.runtime.generation.params import SamplingParams


class Sequence:
    """One prompt being continued."""

    __slots__ = ("adapter", "generator", "ids", "owner", "params", "prompt_ids", "index")

    def __init__(self, prompt_ids: list[int], params: SamplingParams, owner: Any = None,
                 index: int = 0, adapter: Adapter | None = None) -> None:
        self.prompt_ids = prompt_ids
        #: The tokens generated so far.
        self.ids: list[int] = []
        self.params = params
        #: Whatever the caller hangs on it (the request it answers).
        self.owner = owner
        #: Its place among its request's sequences (a list of inputs).
        self.index = index
        #: Its LoRA adapter (None: the base model).
        self.adapter = adapter
        self.generator: torch.Generator | None = None
        if params.do_sample:
            seed = params.seed if params.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator().manual_seed(seed)


class RollingBatch:
    """The running sequences of one model and their cache; see the module docstring."""

    def __init__(self, model: Any, max_size: int, lora: MultiLora | None = None) -> None:
        self.model = model
        self.lora = lora
        #: What the adapters' rows were last set for: (rows version, lora version).
        self._rows_set: tuple[int, int] | None = None
        self._rows_version = 0
        self.device = next(model.parameters()).device
        self.max_size = max(1, max_size)
        #: Decoding together, in cache row order.
        self.running: list[Sequence] = []
        #: Added and not yet prefilled (the batch was full).
        self.waiting: deque[Sequence] = deque()
        self._cache: DynamicCache | None = None
        #: [batch, cache length]: 1 where a cache column holds one of the row's tokens.
        self._mask: torch.Tensor | None = None
        #: [batch]: each row's next position id, and the token it feeds next.
        self._positions: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.running) + len(self.waiting)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @torch.inference_mode()
    def step(self) -> list[tuple[Sequence, int, float]]:
        """One token for every running sequence, then the first token of each sequence
        admitted now: (sequence, token id, its log probability) each. The caller appends
        nothing: ``seq.ids`` already holds the token."""
        made: list[tuple[Sequence, int, float]] = []
        if self.running:
            assert self._mask is not None and self._positions is not None
            batch = len(self.running)
            if self.lora is not None:
                self._set_rows()
            self._mask = torch.cat(
                [self._mask, self._mask.new_ones((batch, 1))], dim=1)
            out = self.model(
                input_ids=self._last.view(batch, 1), attention_mask=self._mask,
                position_ids=self._positions.view(batch, 1), cache=self._cache,
                use_cache=True,
            )
            self._positions += 1
            tokens, logprobs = self._sample(self.running, out.logits[:, -1, :])
            self._last = torch.tensor(tokens, dtype=torch.long, device=self.device)
            made.extend(zip(self.running, tokens, logprobs, strict=True))
        if self.waiting and len(self.running) < self.max_size:
            self._admit(made)
        for seq, token, _ in made:
            seq.ids.append(token)
        return made

    def remove(self, gone: Seq[Sequence]) -> None:
        """Drop sequences (finished or cancelled), running or waiting."""
        if not gone:
            return
        drop = set(map(id, gone))
        self.waiting = deque(s for s in self.waiting if id(s) not in drop)
        keep = [i for i, s in enumerate(self.running) if id(s) not in drop]
        if len(keep) == len(self.running):
            return
        if self.lora is not None:
            for seq in self.running:
                if seq.adapter is not None and id(seq) in drop:
                    self.lora.release(seq.adapter)
        self._rows_version += 1
        self.running = [self.running[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._positions = self._last = None
            return
        assert self._mask is not None and self._cache is not None
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self._mask.index_select(0, rows)
        # Columns of padding only (the left part that only a departed sequence used).
        first = int(mask.any(dim=0).to(torch.int8).argmax())
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, rows)[:, :, first:, :]
            layer.values = layer.values.index_select(0, rows)[:, :, first:, :]
        self._positions = self._positions.index_select(0, rows)
        self._last = self._last.index_select(0, rows)

    # -- internals ----------------------------------------------------------------------
    def _admit(self, made: list[tuple[Sequence, int, float]]) -> None:
        """Prefill waiting sequences while there is room; one whose adapter finds no free
        slot keeps its place in line, and those behind it may go first."""
        held: list[Sequence] = []
        lora = self.lora
        admitted: list[Sequence] = []
        while self.waiting and len(self.running) + len(admitted) < self.max_size:
            seq = self.waiting.popleft()
            if seq.adapter is not None and lora is not None and not lora.acquire(seq.adapter):
                held.append(seq)
                continue
            admitted.append(seq)
        self.waiting.extendleft(reversed(held))
        if admitted:
            made.extend(self._prefill(admitted))

    def _set_rows(self) -> None:
        assert self.lora is not None
        key = (self._rows_version, self.lora.version)
        if key != self._rows_set:
            self.lora.set_rows([s.adapter.slot if s.adapter is not None else 0
                                for s in self.running])
            self._rows_set = key

    def _prefill(self, seqs: list[Sequence]) -> list[tuple[Sequence, int, float]]:
        """One forward over the newcomers' prompts, left-padded to the longest, and their
        first tokens; then they join the running batch."""
        device = self.device
        lengths = [len(seq.prompt_ids) for seq in seqs]
        width = max(lengths)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (seq, length) in enumerate(zip(seqs, lengths, strict=True)):
            ids[row, width - length:] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[row, width - length:] = 1
        # Positions count each row's tokens from 0 at its first one (padding: 0, unseen).
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = DynamicCache(config=self.model.config)
        if self.lora is not None:
            self.lora.set_rows([s.adapter.slot if s.adapter is not None else 0 for s in seqs])
            self._rows_set = None
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         cache=cache, use_cache=True, logits_to_keep=1)
        tokens, logprobs = self._sample(seqs, out.logits[:, -1, :])
        self._join(seqs, cache, mask, lengths, tokens)
        return list(zip(seqs, tokens, logprobs, strict=True))

    def _join(self, seqs: list[Sequence], cache: DynamicCache, mask: torch.Tensor,
              lengths: list[int], tokens: list[int]) -> None:
        device = self.device
        positions = torch.tensor(lengths, dtype=torch.long, device=device)
        last = torch.tensor(tokens, dtype=torch.long, device=device)
        self._rows_version += 1
        if not self.running:
            self.running = list(seqs)
            self._cache, self._mask, self._positions, self._last = cache, mask, positions, last
            return
        assert self._mask is not None and self._cache is not None
        width, new_width = self._mask.shape[1], mask.shape[1]
        if new_width > width:  # the newcomers are longer: pad the batch on the left
            self._mask = _pad_left(self._mask, new_width - width, dim=1)
            for layer in self._cache.layers:
                layer.keys = _pad_left(layer.keys, new_width - width)
                layer.values = _pad_left(layer.values, new_width - width)
            width = new_width
        pad = width - new_width
        self._mask = torch.cat([self._mask, _pad_left(mask, pad, dim=1)], dim=0)
        for mine, new in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, _pad_left(new.keys, pad)], dim=0)
            mine.values = torch.cat([mine.values, _pad_left(new.values, pad)], dim=0)
        self._positions = torch.cat([self._positions, positions])
        self._last = torch.cat([self._last, last])
        self.running.extend(seqs)

    def _sample(self, seqs: Seq[Sequence], logits: torch.Tensor
                ) -> tuple[list[int], list[float]]:
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1).tolist()
        for row, seq in enumerate(seqs):
            p = seq.params
            if p.do_sample or p.repetition_penalty != 1.0:
                tokens[row] = _pick(logits[row], seq, p)
        picked = logprobs[torch.arange(len(seqs)), torch.tensor(tokens)].tolist()
        return tokens, picked


def _pick(row: torch.Tensor, seq: Sequence, p: SamplingParams) -> int:
    """One row's token under its parameters (transformers' processors, in their order)."""
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(seq.prompt_ids + seq.ids, dtype=torch.long)
        score = row.gather(0, seen)
        score = torch.where(score < 0, score * p.repetition_penalty,
                            score / p.repetition_penalty)
        row = row.scatter(0, seen, score)
    if not p.do_sample:
        return int(row.argmax())
    row = row / p.temperature
    if 0 < p.top_k < row.numel():
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if p.top_p < 1.0:
        ordered, order = torch.sort(row)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= 1 - p.top_p
        remove[-1] = False
        row = row.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    probs = torch.softmax(row, dim=-1)
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def _pad_left(tensor: torch.Tensor, count: int, dim: int = 2) -> torch.Tensor:
    if count <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = count
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
