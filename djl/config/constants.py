"""Fixed settings (not configuration keys), here so each has one home, and the units
the defaults are written in."""

from __future__ import annotations

MIB = 1024 * 1024
SECONDS = 1.0

#: Shutdown: how long in-flight requests get to finish before their workers are stopped.
SHUTDOWN_GRACE_S = 10 * SECONDS
#: Unregister: the same grace for the workers of one model.
UNREGISTER_GRACE_S = 5 * SECONDS
#: Hypercorn: longer than the models' own grace, so their last answers still go out.
HYPERCORN_GRACEFUL_TIMEOUT_S = SHUTDOWN_GRACE_S + 3
#: djl's own server (``http_server=djl``): the same wait for in-flight answers at shutdown.
SERVER_GRACEFUL_TIMEOUT_S = HYPERCORN_GRACEFUL_TIMEOUT_S
#: djl's own server: a request line and headers longer than this are refused with 431
#: (h11's limit under hypercorn, 16 KiB).
MAX_REQUEST_HEAD_BYTES = 16 * 1024
#: djl's own server: a TLS handshake must complete within this long, or the connection closes.
TLS_HANDSHAKE_TIMEOUT_S = 10 * SECONDS
#: Hypercorn: the lifespan's shutdown (models stop inside it) may take this long.
HYPERCORN_SHUTDOWN_TIMEOUT_S = SHUTDOWN_GRACE_S * 3
#: Hypercorn: the lifespan's start-up gets at least this, or the model loading timeout + 60.
HYPERCORN_MIN_STARTUP_TIMEOUT_S = 600 * SECONDS
#: Memory admission (spec §4.8): what must stay free after a model loads, unless the model's
#: ``reserved_memory_mb`` says otherwise.
RESERVED_MEMORY_MB = 500
#: Spec §3.9: an ``error_rate_*`` rule without a duration counts errors per minute.
ERROR_RATE_WINDOW_S = 60 * SECONDS
#: Worker recycling by memory: how often a model's workers' RSS is read, unless the model's
#: ``option.worker_rss_check_interval`` says otherwise.
WORKER_RSS_CHECK_INTERVAL_S = 5 * SECONDS
#: Text generation (``option.*`` of a causal-LM folder): sequences decoded together per
#: worker, a request's max_new_tokens when it names none, and the rolling-batch values.
MAX_ROLLING_BATCH_SIZE = 32
MAX_NEW_TOKENS = 30
#: LoRA adapters applied at once per worker (``option.max_loras``, with enable_lora=true);
#: requests for more wait for a slot.
MAX_LORAS = 4
ROLLING_BATCH_DEFAULT = "auto"
#: ``option.rolling_batch`` values served here; ``vllm`` needs vllm and CUDA; ``disable``
#: sends whole requests through the dynamic batcher.
ROLLING_BATCH_VALUES = ("auto", "disable", "vllm")
#: The console's live figures (djl.figures): rates and percentiles are over at least this
#: much of the latest history, which is kept this long, sampled at most this often.
FIGURES_WINDOW_S = 10 * SECONDS
FIGURES_HISTORY_S = 300 * SECONDS
FIGURES_SAMPLE_S = 1 * SECONDS
