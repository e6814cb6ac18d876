# Two commands do everything on a fresh machine: `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The constraints file pins torch to the CPU build on disk; PIP_CONSTRAINT makes pip apply
# it inside isolated build environments too.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install serve test lint bench bench-check clean browser

install: $(VENV)/.installed examples/mlp/model.pt examples/mlp/model.pt2 examples/mlp/model.onnx \
		examples/tinylm/model/config.json

$(VENV)/.installed: pyproject.toml setup.py constraints.txt djl/_batch.pyx $(wildcard djl/*.pxi)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[test,torch,ray,onnx,generation]'
	$(BIN)/python -c "import djl._batch"
	touch $@

# The example models are built, never committed (fixed seed: same weights in every form):
# TorchScript, a torch.export program and its ONNX export.
examples/mlp/model.pt examples/mlp/model.pt2 examples/mlp/model.onnx: examples/mlp/build.py $(VENV)/.installed
	$(BIN)/python examples/mlp/build.py --out $@

# The example causal LM: random weights under a fixed seed, a tokenizer trained on the
# bundled corpus; built offline, never committed.
examples/tinylm/model/config.json: examples/tinylm/build.py examples/tinylm/corpus.txt $(VENV)/.installed
	$(BIN)/python examples/tinylm/build.py --out examples/tinylm/model

# exec: the server replaces the recipe's shell, so a SIGTERM make passes on reaches it.
serve: install
	SERVING_INFERENCE_ADDRESS=http://$(HOST):$(PORT) \
	SERVING_MANAGEMENT_ADDRESS=http://$(HOST):$(PORT) \
	SERVING_PROMETHEUS=true \
	exec $(BIN)/djl-serving --models echo=file:examples/echo/ mlp=file:examples/mlp/ tinylm=file:examples/tinylm/model/

test: install browser
	$(BIN)/ruff check djl djl_python tests bench
	$(BIN)/python -m pytest -q

# The console's browser tests drive Debian's headless Chromium (CI runs this as root too).
browser:
	(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)

bench: install
	$(BIN)/python bench/echo.py

# Every bench script once with its smallest settings, the heavy ones (Ray, torch_mlp) too;
# `make test` runs the light ones. Also compiles the AOTInductor test package when this
# machine has none cached (minutes), which every later `make test` then serves.
bench-check: install
	DJL_BENCH_SMOKE=all $(BIN)/python -m pytest -q -rs tests/test_bench_scripts.py
	DJL_AOTI_COMPILE=1 $(BIN)/python -m pytest -q -rs tests/integration/test_aoti.py

clean:
	rm -rf $(VENV) build *.egg-info djl/_batch.c djl/*.so examples/mlp/model.pt examples/mlp/model.pt2 \
		examples/mlp/model.onnx examples/tinylm/model
