"""A test model whose behaviour each request picks with its ``action`` query parameter.

``big``: a body of ``size`` bytes; ``many``: ``count`` items of ``size`` bytes.
``stream``: ``n`` chunks of ``size`` bytes (default 1), the first one after ``delay``
seconds (default none), ``every`` seconds between chunks (default none), ``before``
seconds spent in ``handle`` first; with ``exit_after``
the process exits after that many chunks. ``sleep``: ``seconds`` in ``handle``, after
creating the file ``mark`` (holding the pid) if given. ``where``: this file's path,
the cwd and the pid.
"""

import os
import sys
import time

from djl_python import Input, Output


def handle(inputs: Input):
    if inputs.is_empty():
        return None
    batch = inputs.get_batches()
    first = batch[0]
    action = first.get_as_string("action") if first.contains_key("action") else "echo"
    if action == "raise":
        raise ValueError("model error")
    if action == "none":
        return None
    if action == "string":
        return "not an Output"
    if action == "memory":
        raise MemoryError("out of memory in handler")
    if action == "exit":
        os._exit(3)
    if action == "die_loudly":
        sys.stderr.write("Traceback: last words before dying\n")
        sys.stderr.flush()
        os._exit(4)
    if action == "sleep":
        if first.contains_key("mark"):  # a file the test waits for: the sleep has begun
            with open(first.get_as_string("mark"), "w") as mark:
                mark.write(str(os.getpid()))
        time.sleep(float(first.get_as_string("seconds")))
    if action == "header":
        out = Output()
        out.add_property("x-model", "behave")
        out.add_property("content-type", "text/plain")
        out.add("with header")
        return out
    if action == "headers_in_case":
        out = Output()
        out.add_property("X-Request-Id", "from-the-model")
        out.add_property("pragma", "cache-me")
        out.add_property("CACHE-CONTROL", "max-age=3600")
        out.add_property("x-model", "behave")
        out.add("ok")
        return out
    if action == "pid":
        return Output().add(str(os.getpid()))
    if action == "where":  # where this copy of the model runs from (the Ray tests)
        return Output().add_as_json({"file": __file__, "cwd": os.getcwd(), "pid": os.getpid()})
    if action == "big":
        return Output().add(b"x" * int(first.get_as_string("size")))
    if action == "many":
        out = Output()
        for i in range(int(first.get_as_string("count"))):
            out.add(b"x" * int(first.get_as_string("size")), key=f"item{i}")
        return out
    if action == "stream":
        if first.contains_key("before"):  # seconds in handle(), before the stream exists
            time.sleep(float(first.get_as_string("before")))
        return Output().add_stream_content(_chunks(first), output_formatter=None)
    out = Output()
    for i, item in enumerate(batch):
        body = item.get_as_bytes("data") if item.contains_key("data") else b""
        if len(batch) == 1:
            out.add(body)
        else:
            out.add(body, key="data", batch_index=i)
    return out


def _chunks(item):
    n = int(item.get_as_string("n"))
    size = int(item.get_as_string("size")) if item.contains_key("size") else 1
    delay = float(item.get_as_string("delay")) if item.contains_key("delay") else 0.0
    if delay:
        time.sleep(delay)
    every = float(item.get_as_string("every")) if item.contains_key("every") else 0.0
    exit_after = int(item.get_as_string("exit_after")) if item.contains_key("exit_after") else -1
    chunk = b"x" * size
    for i in range(n):
        if i == exit_after:
            sys.stdout.flush()
            os._exit(5)
        if every and i:
            time.sleep(every)
        yield chunk
