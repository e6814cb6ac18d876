"""Echo: the bundled example model. Returns the request body, batch by batch.

Query ``?stream=true`` streams the body back word by word instead.
"""

from djl_python import Input, Output


def handle(inputs: Input) -> Output | None:
    if inputs.is_empty():
        return None  # the init call: nothing to load
    outputs = Output()
    batch = inputs.get_batches()
    for i, item in enumerate(batch):
        content_type = item.get_property("content-type")
        if content_type:
            outputs.add_property("content-type", content_type)
        body = item.get_as_bytes()
        if len(batch) == 1 and item.contains_key("stream"):
            words = bytes(body).decode("utf-8").split()
            outputs.add_stream_content(iter(words), output_formatter=lambda w: w + "\n")
            return outputs
        outputs.add(body, key="data", batch_index=i if len(batch) > 1 else None)
    return outputs
