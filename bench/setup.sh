#!/bin/sh
# What the benchmarks need beyond the project's venv. Root, or sudo, for apt-get.
#   * wrk, the load generator (apt-get);
#   * TorchServe 0.12 for the comparison rows, in a venv of its own (bench/.venv-ts,
#     git-ignored) so its dependencies never touch the project's: torchserve,
#     torch-model-archiver, pyyaml, onnxruntime (its ONNX handler), torch through the same
#     constraints file (the CPU build on disk), and Java 17 for its frontend (openjdk-17-jre-headless when java is missing).
#
#   sh bench/setup.sh            # both
#   sh bench/setup.sh wrk        # wrk only (what the djl-only benches need)
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
WHAT=${1:-all}
PY=${PY:-python3}
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi

apt_install() {
    if ! $SUDO apt-get install -y "$@"; then
        $SUDO apt-get update
        $SUDO apt-get install -y "$@"
    fi
}

if command -v wrk >/dev/null 2>&1; then
    echo "wrk: $(command -v wrk)"
else
    apt_install wrk
    command -v wrk
fi
[ "$WHAT" = "wrk" ] && exit 0

if ! command -v java >/dev/null 2>&1; then
    apt_install openjdk-17-jre-headless
fi
echo "java: $(java -version 2>&1 | head -n 1)"

VENV="$HERE/.venv-ts"
if [ ! -x "$VENV/bin/torchserve" ]; then
    test -d "$VENV" || "$PY" -m venv "$VENV"
    export PIP_CONSTRAINT="$REPO/constraints.txt"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c "$REPO/constraints.txt" \
        torch torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml
fi
# TorchServe's BaseHandler serves an .onnx through onnxruntime (and psutil) when they import.
if ! "$VENV/bin/python" -c "import onnxruntime, psutil" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q -c "$REPO/constraints.txt" onnxruntime psutil
fi
echo "torchserve: $VENV/bin/torchserve"
