"""Generation requests: LMI's schema, chat ``messages`` and OpenAI's two bodies, checked.

Every shape becomes one ``GenerationRequest``: its prompts (text; chat is rendered with the
tokenizer's template by the caller), one ``SamplingParams`` and how the answer is written
(``api``, ``stream``, ``details``...). Anything wrong raises ``BadInput`` with a message
naming the field, so the request answers 400 and its batch-mates go on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from djl.errors import BadInput

#: Which answer a request wants. LMI: ``{"inputs", "parameters"}``; CHAT: ``messages`` on
#: DJL's routes (a chat.completion object); the two OpenAI routes.
LMI = "lmi"
CHAT = "chat"
OPENAI_COMPLETIONS = "completions"
OPENAI_CHAT = "chat.completions"
APIS = (LMI, CHAT, OPENAI_COMPLETIONS, OPENAI_CHAT)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one sequence picks its tokens, and when it stops."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    #: 0: no top-k filter.
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    #: Seeds this request's own generator: the same seed gives the same tokens whatever
    #: shares the batch. None: a seed drawn per request.
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class GenerationRequest:
    api: str
    prompts: list[str]
    params: SamplingParams
    #: LMI's ``inputs`` was a list: the answer is a list.
    batched: bool = False
    stream: bool = False
    details: bool = False
    return_full_text: bool = False
    #: OpenAI: return log probabilities; ``stream_options.include_usage``.
    logprobs: bool = False
    include_usage: bool = False
    #: The ``model`` a client named (OpenAI answers echo it).
    model: str = ""
    #: Chat messages, rendered into ``prompts[0]`` by the engine (its template).
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: The body's ``adapters``: one LoRA adapter name per prompt ("" the base model);
    #: None when the body names none (the request's ``adapter`` property decides).
    adapters: list[str] | None = None


def parse_body(body: bytes, api: str, default_max_new_tokens: int,
               model_name: str) -> GenerationRequest:
    """The request in ``body`` (JSON) for ``api``; BadInput when it is not one."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        raise BadInput("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadInput("The request body must be a JSON object")
    if api in (OPENAI_COMPLETIONS, OPENAI_CHAT):
        return _openai(data, api, default_max_new_tokens, model_name)
    if "messages" in data:
        request = _chat_common(data, CHAT, _lmi_params(data.get("parameters", data),
                                                       default_max_new_tokens))
        request.model = _string(data.get("model", model_name), "model")
        request.adapters = _adapters(data, 1, batched=False)
        return request
    if "inputs" not in data:
        raise BadInput('The request needs "inputs" (a string or a list of strings) '
                       'or "messages"')
    inputs = data["inputs"]
    batched = isinstance(inputs, list)
    prompts = inputs if batched else [inputs]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadInput('"inputs" must be a string or a non-empty list of strings')
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadInput('"parameters" must be a JSON object')
    stream = _flag(data.get("stream", False), "stream")
    if stream and batched:
        raise BadInput("A list of inputs cannot be streamed: send one input per request")
    return GenerationRequest(
        LMI, list(prompts), _lmi_params(parameters, default_max_new_tokens),
        batched=batched, stream=stream,
        details=_flag(parameters.get("details", False), "details"),
        return_full_text=_flag(parameters.get("return_full_text", False),
                               "return_full_text"),
        adapters=_adapters(data, len(prompts), batched=batched),
    )


def _adapters(data: dict[str, Any], count: int, *, batched: bool) -> list[str] | None:
    """LMI's ``adapters``: a name for every input, or a list of one name per input."""
    if "adapters" not in data:
        return None
    value = data["adapters"]
    if isinstance(value, str):
        return [value] * count
    if (batched and isinstance(value, list) and len(value) == count
            and all(isinstance(v, str) for v in value)):
        return list(value)
    shape = f"or a list of {count} strings, one per input" if batched else ""
    raise BadInput(f'"adapters" must be a string {shape}'.rstrip())


def _lmi_params(p: dict[str, Any], default_max_new_tokens: int) -> SamplingParams:
    stop = p.get("stop_sequences", p.get("stop", ()))
    return _sampling(
        max_new_tokens=p.get("max_new_tokens", default_max_new_tokens),
        do_sample=p.get("do_sample", False),
        temperature=p.get("temperature", 1.0),
        top_k=p.get("top_k", 0),
        top_p=p.get("top_p", 1.0),
        repetition_penalty=p.get("repetition_penalty", 1.0),
        seed=p.get("seed"),
        stop=stop,
        stop_name="stop_sequences",
    )


def _openai(data: dict[str, Any], api: str, default_max_new_tokens: int,
            model_name: str) -> GenerationRequest:
    n = data.get("n", 1)
    if n != 1:
        raise BadInput('"n" other than 1 is not supported: send one request per choice')
    # OpenAI samples by default (temperature 1); temperature 0 is greedy.
    temperature = _number(data.get("temperature", 1.0), "temperature", low=0.0)
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens",
                                                            default_max_new_tokens))
    if max_tokens is None:
        max_tokens = default_max_new_tokens
    params = _sampling(
        max_new_tokens=max_tokens, do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_k=data.get("top_k", 0), top_p=data.get("top_p", 1.0),
        repetition_penalty=data.get("repetition_penalty", 1.0),
        seed=data.get("seed"), stop=data.get("stop") or (), stop_name="stop",
        max_name="max_tokens",
    )
    stream_options = data.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise BadInput('"stream_options" must be an object')
    if api == OPENAI_CHAT:
        request = _chat_common(data, OPENAI_CHAT, params)
        logprobs = data.get("logprobs") or False
    else:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadInput('"prompt" must be a string')
        request = GenerationRequest(OPENAI_COMPLETIONS, [prompt], params,
                                    stream=_flag(data.get("stream", False), "stream"))
        logprobs = data.get("logprobs") is not None and data.get("logprobs") is not False
    request.logprobs = bool(logprobs)
    request.include_usage = _flag(stream_options.get("include_usage", False),
                                  "stream_options.include_usage")
    request.model = _string(data.get("model") or model_name, "model")
    return request


def _chat_common(data: dict[str, Any], api: str, params: SamplingParams) -> GenerationRequest:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInput('"messages" must be a non-empty list of {"role", "content"} objects')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadInput(f'messages[{i}] must be an object with a string "role"')
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: the text ones
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise BadInput(f"messages[{i}].content: only text parts are supported")
            message = {**message, "content": "".join(p["text"] for p in content)}
            messages[i] = message
        elif not isinstance(content, str):
            raise BadInput(f'messages[{i}] must have a string "content"')
    return GenerationRequest(api, [""], params,
                             stream=_flag(data.get("stream", False), "stream"),
                             messages=messages)


def _sampling(*, max_new_tokens: Any, do_sample: Any, temperature: Any, top_k: Any,
              top_p: Any, repetition_penalty: Any, seed: Any, stop: Any, stop_name: str,
              max_name: str = "max_new_tokens") -> SamplingParams:
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
        raise BadInput(f'"{stop_name}" must be a list of non-empty strings')
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadInput('"seed" must be an integer')
    return SamplingParams(
        max_new_tokens=_integer(max_new_tokens, max_name, low=1),
        do_sample=_flag(do_sample, "do_sample"),
        temperature=_number(temperature, "temperature", low=0.0, open_low=True),
        top_k=_integer(top_k, "top_k", low=0),
        top_p=_number(top_p, "top_p", low=0.0, high=1.0, open_low=True),
        repetition_penalty=_number(repetition_penalty, "repetition_penalty", low=0.0,
                                   open_low=True),
        seed=seed,
        stop=tuple(stop),
    )


def _integer(value: Any, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f'"{name}" must be an integer, not {json.dumps(value)}')
    if value < low:
        raise BadInput(f'"{name}" must be at least {low}, not {value}')
    return value


def _number(value: Any, name: str, *, low: float, high: float = math.inf,
            open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise BadInput(f'"{name}" must be a number, not {json.dumps(value)}')
    if value < low or (open_low and value == low) or value > high:
        bound = f"greater than {low:g}" if open_low else f"at least {low:g}"
        if high != math.inf:
            bound += f" and at most {high:g}"
        raise BadInput(f'"{name}" must be {bound}, not {value:g}')
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f'"{name}" must be true or false, not {json.dumps(value)}')
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadInput(f'"{name}" must be a string')
    return value
