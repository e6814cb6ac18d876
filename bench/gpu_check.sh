#!/bin/sh
# The checks that need an NVIDIA GPU, for a machine that has one (CI and the development
# machines have none, so there these tests skip). Run from anywhere:
#
#     sh bench/gpu_check.sh            # PY=python3 by default: a python whose torch has CUDA
#     ONNX=0 sh bench/gpu_check.sh     # without the ONNX Runtime checks (says so)
#
# It builds djl's extension in place for that python, then runs, with DJL_GPU_CHECK=1 (a
# missing GPU fails instead of skipping):
#   1. the PyTorch engine on every cuda:N torch sees: a batch of 4 goes through one
#      forward on that device and each request gets its own answer; a device index past
#      the GPU count fails to load, naming the count (tests/runtime -m gpu);
#   2. the same engine with CUDA hidden (CUDA_VISIBLE_DEVICES=""): loading on gpu0 is the
#      load failure "CUDA is not available";
#   3. the ONNX Runtime engine on every GPU: its session on CUDAExecutionProvider with
#      that device_id (not quietly fallen back to the CPU), a batch of 4 as one forward,
#      each request its own rows; and with CUDA hidden, loading on gpu0 a load failure.
#      This needs onnxruntime-gpu (and onnx, which writes the test graphs) installed in
#      that python beforehand: a device machine reaches no package index. Without its
#      CUDA provider the script fails, unless ONNX=0.
# Only djl's runtime side is imported (torch, numpy, onnxruntime, the extension): the
# server's packages need not be installed. Exit status 0 only if every check that ran
# passed, none skipped.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
ONNX=${ONNX:-1}

"$PY" -c 'import torch; assert torch.cuda.is_available(), "this torch sees no GPU"; \
print("torch", torch.__version__, "GPUs:", [torch.cuda.get_device_name(i) for i in \
range(torch.cuda.device_count())])'
if [ "$ONNX" != "0" ]; then
    "$PY" -c 'import onnx, onnxruntime as ort; p = ort.get_available_providers(); \
print("onnxruntime", ort.__version__, p); assert "CUDAExecutionProvider" in p, \
"this onnxruntime has no CUDA provider: install onnxruntime-gpu, or ONNX=0"'
fi
"$PY" setup.py -q build_ext --inplace

# -p no:trio: the server's test plugin is not needed (nor perhaps installed) here.
run() {
    file=$1
    shift
    log=$(mktemp)
    status=0
    "$PY" -m pytest -q -p no:cacheprovider -p no:trio -o addopts="" -rs "$@" \
        "$file" >"$log" 2>&1 || status=$?
    cat "$log"
    if [ "$status" -ne 0 ]; then
        echo "gpu_check: failed ($file $*)" >&2
        exit "$status"
    fi
    if grep -q "skipped" "$log"; then
        echo "gpu_check: a check was skipped ($file $*)" >&2
        exit 1
    fi
}

TORCH=tests/runtime/test_torch_engine.py
DJL_GPU_CHECK=1 run "$TORCH" -m gpu
CUDA_VISIBLE_DEVICES="" run "$TORCH" -k "gpu_without_cuda"
if [ "$ONNX" != "0" ]; then
    ONNX_TESTS=tests/runtime/test_onnx_engine.py
    DJL_GPU_CHECK=1 run "$ONNX_TESTS" -m gpu
    CUDA_VISIBLE_DEVICES="" run "$ONNX_TESTS" -k "gpu_without_cuda"
    echo "gpu_check: all passed (PyTorch and ONNX Runtime)"
else
    echo "gpu_check: all passed (PyTorch); the ONNX Runtime checks did not run (ONNX=0)"
fi
