"""How a generation answers: LMI's JSON and JSON lines (or SSE), chat.completion objects,
OpenAI's completions, and their streamed chunks. Bytes out, nothing else; no torch.

A ``Call`` (djl/runtime/generation/engine.py) holds what these read: the request, its
id and creation time, and per prompt a ``Text`` (generated text, tokens, finish reason).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from djl.runtime.generation.params import CHAT, LMI, OPENAI_CHAT, GenerationRequest

JSON = "application/json"
JSONLINES = "application/jsonlines"
EVENT_STREAM = "text/event-stream"
#: What a stream's last line says when the worker died under it (LMI's finish reason).
ERROR_FINISH = "error"
#: OpenAI's word for our finish reasons (an eos token and a stop text both "stop").
_OPENAI_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop",
                  ERROR_FINISH: ERROR_FINISH}


class Text(Protocol):
    prompt: str
    prompt_tokens: int
    text: str
    tokens: list[tuple[int, str, float]]
    finish: str | None


class Call(Protocol):
    id: str
    created: int
    request: GenerationRequest
    texts: list[Text]
    sse: bool


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _line(call: Call, value: Any) -> bytes:
    """One streamed record: a JSON line, or an SSE event (OpenAI's routes always are)."""
    if call.sse or call.request.api not in (LMI, CHAT):
        return b"data: " + _dumps(value) + b"\n\n"
    return _dumps(value) + b"\n"


def content_type(call: Call) -> str:
    if not call.request.stream:
        return JSON
    if call.sse or call.request.api not in (LMI, CHAT):
        return EVENT_STREAM
    return JSONLINES


def generated(call: Call, text: Text) -> str:
    return text.prompt + text.text if call.request.return_full_text else text.text


def _usage(call: Call) -> dict[str, int]:
    prompt = sum(t.prompt_tokens for t in call.texts)
    completion = sum(len(t.tokens) for t in call.texts)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _details(text: Text) -> dict[str, Any]:
    return {"finish_reason": text.finish, "generated_tokens": len(text.tokens),
            "inputs": text.prompt,
            "tokens": [{"id": i, "text": s, "log_prob": lp} for i, s, lp in text.tokens]}


# -- whole answers ----------------------------------------------------------------------
def body(call: Call) -> bytes:
    """The answer of a request that is not streamed, once every prompt has finished."""
    request = call.request
    if request.api == LMI:
        answers = []
        for text in call.texts:
            answer: dict[str, Any] = {"generated_text": generated(call, text)}
            if request.details:
                answer["details"] = _details(text)
            answers.append(answer)
        return _dumps(answers if request.batched else answers[0])
    text = call.texts[0]
    finish = _OPENAI_FINISH.get(text.finish or "", text.finish)
    if request.api in (CHAT, OPENAI_CHAT):
        choice: dict[str, Any] = {
            "index": 0, "message": {"role": "assistant", "content": text.text},
            "logprobs": _chat_logprobs(text.tokens) if request.logprobs else None,
            "finish_reason": finish}
        return _dumps(_envelope(call, "chat.completion", [choice], usage=True))
    choice = {"index": 0, "text": generated(call, text), "finish_reason": finish,
              "logprobs": _completion_logprobs(text.tokens) if request.logprobs else None}
    return _dumps(_envelope(call, "text_completion", [choice], usage=True))


def _envelope(call: Call, kind: str, choices: list[Any], *, usage: bool) -> dict[str, Any]:
    value: dict[str, Any] = {"id": call.id, "object": kind, "created": call.created,
                             "model": call.request.model, "choices": choices}
    if usage:
        value["usage"] = _usage(call)
    return value


def _chat_logprobs(tokens: Sequence[tuple[int, str, float]]) -> dict[str, Any]:
    return {"content": [{"token": s, "logprob": lp, "bytes": list(s.encode("utf-8")),
                         "top_logprobs": []} for _, s, lp in tokens]}


def _completion_logprobs(tokens: Sequence[tuple[int, str, float]]) -> dict[str, Any]:
    offsets, at = [], 0
    for _, s, _ in tokens:
        offsets.append(at)
        at += len(s)
    return {"tokens": [s for _, s, _ in tokens], "token_logprobs": [lp for *_, lp in tokens],
            "top_logprobs": None, "text_offset": offsets}


# -- streams ----------------------------------------------------------------------------
def chunk(call: Call, text: Text, token: int, piece: str, logprob: float) -> bytes:
    """The stream's record for one token; the last one (``text.finish`` set) also closes
    the answer: LMI's ``generated_text`` (and ``details``), OpenAI's finish reason, usage
    and ``[DONE]``."""
    request = call.request
    last = text.finish is not None
    if request.api == LMI:
        value: dict[str, Any] = {"token": {"id": token, "text": piece, "log_prob": logprob}}
        if last:
            value["generated_text"] = generated(call, text)
            if request.details:
                value["details"] = _details(text)
        return _line(call, value)
    finish = _OPENAI_FINISH.get(text.finish or "", text.finish) if last else None
    if request.api in (CHAT, OPENAI_CHAT):
        delta: dict[str, Any] = {"content": piece}
        if len(text.tokens) == 1:
            delta = {"role": "assistant", **delta}
        choice: dict[str, Any] = {
            "index": 0, "delta": delta, "finish_reason": finish,
            "logprobs": (_chat_logprobs([(token, piece, logprob)]) if request.logprobs
                         else None)}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": piece, "finish_reason": finish,
                  "logprobs": (_completion_logprobs([(token, piece, logprob)])
                               if request.logprobs else None)}
        kind = "text_completion"
    out = _line(call, _envelope(call, kind, [choice], usage=last and request.api == CHAT))
    if last:
        out += _closing(call, kind)
    return out


def _closing(call: Call, kind: str) -> bytes:
    """What follows an OpenAI stream's last chunk: the usage chunk when asked, ``[DONE]``."""
    if call.request.api == CHAT:
        return b""
    out = b""
    if call.request.include_usage:
        out += _line(call, _envelope(call, kind, [], usage=True))
    return out + b"data: [DONE]\n\n"


def error_line(call: Call, message: str) -> bytes:
    """The last record of a stream whose worker died (``finish_reason`` error)."""
    request = call.request
    if request.api == LMI:
        return _line(call, {"token": None, "generated_text": None,
                            "details": {"finish_reason": ERROR_FINISH}, "error": message})
    kind = "chat.completion.chunk" if request.api in (CHAT, OPENAI_CHAT) else "text_completion"
    choice: dict[str, Any] = {"index": 0, "finish_reason": ERROR_FINISH, "logprobs": None}
    choice.update({"delta": {}} if kind == "chat.completion.chunk" else {"text": ""})
    out = _line(call, {**_envelope(call, kind, [choice], usage=False), "error": message})
    return out + (b"data: [DONE]\n\n" if request.api != CHAT else b"")


def error_body(api: str, message: str, status: int) -> bytes:
    """A refused request's body: DJL's error shape, or OpenAI's on its routes."""
    if api in (LMI, CHAT):
        return _dumps({"code": status, "type": "TranslateException", "message": message})
    return _dumps({"error": {"message": message, "type": "invalid_request_error",
                             "param": None, "code": None}})
