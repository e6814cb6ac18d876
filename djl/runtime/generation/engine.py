"""The text-generation engine: a Hugging Face causal LM served with continuous batching.

``python -m djl.runtime --engine Generation`` runs ``GenerationEngine.serve`` instead of the
request → response frame loop: many requests are in flight (djl/rolling.py), so the loop
reads whatever frames have arrived without blocking while sequences run, takes new
requests and cancellations into the batch, runs one decode step, and sends one step record
with every sequence's news. Idle, it blocks on the socket.

Loading (``option.*``): ``dtype`` (fp32 on CPU by default; bf16, fp16), ``trust_remote_code``
(false: code in a model folder never runs unless set), ``max_rolling_batch_size`` (32),
``max_new_tokens`` (30, a request's default), ``output_formatter`` (``sse`` streams
``text/event-stream``), ``enable_lora`` and ``max_loras`` (LoRA adapters, several in one
batch: adapters.py, lora.py). Everything is read from the folder; nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from djl import _batch, adapter_calls, rolling
from djl.errors import ERROR_BAD_MODEL, ERROR_LOAD, ERROR_OOM, AdapterError, BadInput, FrameError
from djl.runtime.generation import formats, loader
from djl.runtime.generation.adapters import AdapterTable
from djl.runtime.generation.detokenize import Detokenizer
from djl.runtime.generation.params import (
    CHAT,
    LMI,
    OPENAI_CHAT,
    GenerationRequest,
    parse_body,
)
from djl.runtime.python_engine import is_out_of_memory

log = logging.getLogger("djl.runtime")

#: What a started stream's last line says when its worker dies (sent by the server then).
WORKER_DIED = "The model worker stopped while generating"


@dataclass(slots=True)
class Text:
    """One prompt's continuation as it grows (formats.Text)."""

    prompt: str
    prompt_tokens: int
    detokenizer: Detokenizer
    text: str = ""
    tokens: list[tuple[int, str, float]] = field(default_factory=list)
    finish: str | None = None
    #: Where the text's stop check resumes (a stop text may straddle two tokens).
    checked: int = 0


@dataclass(slots=True)
class Call:
    """One job of the server: a request and its prompts' sequences (formats.Call)."""

    seq_id: int
    request: GenerationRequest
    id: str
    created: int
    sse: bool
    texts: list[Text] = field(default_factory=list)
    sequences: list[Any] = field(default_factory=list)
    #: Prompts not finished yet.
    running: int = 0
    #: Each prompt's LoRA adapter (None: the base model).
    adapters: list[Any] = field(default_factory=list)


class GenerationEngine:
    def __init__(self, model_dir: Path, device_id: str, num_threads: int = 0) -> None:
        self.model_dir = model_dir
        self.device_id = int(device_id)
        self.num_threads = num_threads
        self.model: Any = None
        self.tokenizer: Any = None
        self.batch: Any = None
        self.calls: dict[int, Call] = {}
        self.max_new_tokens = 0  # the model's option.max_new_tokens, once loaded
        self.context = 0
        self.eos: frozenset[int] = frozenset()
        self.sse = False
        self.model_name = model_dir.name
        self.adapters = AdapterTable(None)

    # -- loading ------------------------------------------------------------------------
    def load(self, properties: dict[str, str]) -> None:
        from djl.runtime.generation.scheduler import RollingBatch

        loaded = loader.load(self.model_dir, properties, self.device_id, self.num_threads)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.context, self.eos = loaded.context, loaded.eos
        self.max_new_tokens = loaded.max_new_tokens
        self.sse = loaded.output_formatter == "sse"
        lora = None
        if loaded.max_loras:
            from djl.runtime.generation.lora import MultiLora

            lora = MultiLora(self.model, loaded.max_loras)
        self.adapters = AdapterTable(lora)
        self.batch = RollingBatch(self.model, loaded.max_rolling_batch_size, lora)

    # -- the loop -----------------------------------------------------------------------
    def serve(self, sock: socket.socket, max_frame: int = _batch.MAX_FRAME) -> None:
        decoder = _batch.FrameDecoder()
        if not self._initialise(sock, decoder):
            return
        items: list[rolling.Item] = []
        while True:
            busy = len(self.batch) > 0
            try:
                data = sock.recv(_batch.RECV_SIZE, socket.MSG_DONTWAIT if busy else 0)
            except BlockingIOError:
                data = None
            if data is not None:
                if not data:
                    return  # the server closed the channel
                decoder.feed(data)
                for kind, payload in decoder:
                    if kind != _batch.REQUEST:
                        raise FrameError(f"unexpected frame kind {kind}")
                    self._receive(payload, items)
            decoded = 0
            if len(self.batch):
                decoded = len(self.batch.running)
                self._step(items)
            if items:
                sock.sendall(_batch.encode_chunk(True, rolling.encode_step(decoded, items)))
                items = []

    def _initialise(self, sock: socket.socket, decoder: _batch.FrameDecoder) -> bool:
        while True:
            data = sock.recv(_batch.RECV_SIZE)
            if not data:
                return False
            decoder.feed(data)
            for kind, payload in decoder:
                if kind != _batch.REQUEST:
                    raise FrameError(f"unexpected frame kind {kind}")
                props, _keys, _values = _batch.decode_request(payload)
                try:
                    self.load(props)
                except loader.NotLoadable as exc:
                    sock.sendall(_batch.encode_error(ERROR_BAD_MODEL, str(exc)))
                    return False
                except Exception as exc:  # noqa: BLE001 — the model failed to load
                    log.error("model failed to load:\n%s", traceback.format_exc())
                    kind_name = ERROR_OOM if is_out_of_memory(exc) else ERROR_LOAD
                    sock.sendall(_batch.encode_error(kind_name, f"{type(exc).__name__}: {exc}"))
                    return False
                sock.sendall(_batch.encode_response(200, "OK", {}, [], []))
                return True

    def _receive(self, payload: bytes, items: list[rolling.Item]) -> None:
        props, keys, values = _batch.decode_request(payload)
        seq_id = int(props[rolling.SEQ])
        if props.get(rolling.CANCEL):
            call = self.calls.pop(seq_id, None)
            if call is not None:
                self.batch.remove(call.sequences)
                items.append((seq_id, rolling.GONE, 0, b""))
                self._ended(call, items)
            return
        handler = props.get("handler")
        if handler in adapter_calls.HANDLERS:
            options = {k: bytes(v).decode("utf-8", "replace")
                       for k, v in zip(keys, values, strict=True) if k}
            answer = self.adapters.operate(seq_id, handler, props, options)
            if answer is not None:
                items.append(_answer(seq_id, *answer))
            return
        api = props.get(rolling.API, LMI)
        try:
            # The body is the ``data`` item (query parameters come before it, spec §3.3).
            body = values[keys.index("data")] if "data" in keys else (
                values[-1] if values else b"")
            call = self._call(seq_id, api, body, props.get(adapter_calls.ADAPTER, ""))
        except (BadInput, AdapterError) as exc:
            code = 400 if isinstance(exc, BadInput) else exc.status
            response = _batch.encode_response(
                code, "Bad Request", {"content-type": formats.JSON}, [None],
                [formats.error_body(api, exc.message, code)])
            items.append((seq_id, rolling.FULL, 0, bytes(response[5:])))
            return
        self.calls[seq_id] = call
        for seq in call.sequences:
            self.batch.add(seq)
        items.append((seq_id, rolling.ADMIT, sum(t.prompt_tokens for t in call.texts), b""))
        if call.request.stream:
            head = _batch.encode_response(
                200, "OK", {"content-type": formats.content_type(call)}, None, None)
            items.append((seq_id, rolling.HEAD, 0, rolling.encode_head(
                bytes(head[5:]), formats.error_line(call, WORKER_DIED))))

    def _call(self, seq_id: int, api: str, body: bytes, adapter: str) -> Call:
        from djl.runtime.generation.scheduler import Sequence

        request = parse_body(body, api, self.max_new_tokens, self.model_name)
        # The body's "adapters" first, else what the query or a header selected.
        names = request.adapters or [adapter] * len(request.prompts)
        adapters = self.adapters.select(names) if any(names) else [None] * len(names)
        if request.api in (CHAT, OPENAI_CHAT):
            try:
                request.prompts = [self.tokenizer.apply_chat_template(
                    request.messages, tokenize=False, add_generation_prompt=True)]
            except Exception as exc:  # noqa: BLE001 — the template refused these messages
                raise BadInput(f"The chat template cannot render these messages: {exc}"
                               ) from None
        prefix = "chatcmpl-" if request.api in (CHAT, OPENAI_CHAT) else "cmpl-"
        call = Call(seq_id, request, prefix + uuid.uuid4().hex, int(time.time()), self.sse)
        for index, prompt in enumerate(request.prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if not ids:
                raise BadInput("The prompt is empty: it encodes to no token")
            if len(ids) >= self.context:
                raise BadInput(f"The prompt is {len(ids)} tokens long; the model's context "
                               f"holds {self.context}")
            call.texts.append(Text(prompt, len(ids), Detokenizer(self.tokenizer, ids)))
            call.sequences.append(Sequence(ids, request.params, call, index, adapters[index]))
        call.running = len(call.sequences)
        call.adapters = adapters
        self.adapters.hold(adapters)
        return call

    # -- one decode step ----------------------------------------------------------------
    def _step(self, items: list[rolling.Item]) -> None:
        made = self.batch.step()
        news: dict[int, list[bytes]] = {}
        tokens: dict[int, int] = {}
        finished = []
        for seq, token, logprob in made:
            call: Call = seq.owner
            text = call.texts[seq.index]
            piece = self._grow(seq, text, token, logprob)
            tokens[call.seq_id] = tokens.get(call.seq_id, 0) + 1
            if text.finish is not None:
                finished.append(seq)
                call.running -= 1
            if call.request.stream:
                news.setdefault(call.seq_id, []).append(
                    formats.chunk(call, text, token, piece, logprob))
        self.batch.remove(finished)
        for seq_id, count in tokens.items():
            call = self.calls[seq_id]
            data = b"".join(news.get(seq_id, ()))
            if call.running:
                kind = rolling.DATA if call.request.stream else rolling.PROGRESS
            else:
                del self.calls[seq_id]
                self._ended(call, items)
                if call.request.stream:
                    kind = rolling.END
                else:
                    kind = rolling.FULL
                    data = bytes(_batch.encode_response(
                        200, "OK", {"content-type": formats.JSON}, [None],
                        [formats.body(call)])[5:])
            items.append((seq_id, kind, count, data))

    def _ended(self, call: Call, items: list[rolling.Item]) -> None:
        """A request is over: an unregister that waited for it may answer now."""
        if call.adapters and any(call.adapters):
            self.adapters.drop(call.adapters)
            for seq_id, answer in self.adapters.settle():
                items.append(_answer(seq_id, *answer))

    def _grow(self, seq: Any, text: Text, token: int, logprob: float) -> str:
        """Append ``token`` to the text and decide whether the sequence is over."""
        params = seq.params
        if token in self.eos:
            piece = ""
            text.finish = "eos_token"
        else:
            piece = text.detokenizer.add(token)
            text.text += piece
        text.tokens.append((token, piece, logprob))
        if text.finish is None and params.stop:
            longest = max(map(len, params.stop))
            window_start = max(0, text.checked - longest + 1)
            hits = [i for i in (text.text.find(s, window_start) for s in params.stop)
                    if i >= 0]
            text.checked = len(text.text)
            if hits:
                text.text = text.text[:min(hits)]
                text.finish = "stop_sequence"
        if text.finish is None and (len(seq.ids) >= params.max_new_tokens
                                    or len(seq.prompt_ids) + len(seq.ids) >= self.context):
            text.finish = "length"
        return piece


def _answer(seq_id: int, code: int, message: str) -> rolling.Item:
    """An adapter job's answer: DJL's reply is built from the Output's code and message."""
    return seq_id, rolling.FULL, 0, bytes(_batch.encode_response(code, message, {}, [], [])[5:])


def main_serve(sock: socket.socket, model_dir: Path, device_id: str, num_threads: int,
               max_frame: int) -> None:
    """``python -m djl.runtime --engine Generation``'s whole life on its channel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder is served as is: no hub calls
    GenerationEngine(model_dir, device_id, num_threads).serve(sock, max_frame)
