#!/bin/sh
# The checks that need an NVIDIA GPU, for a machine that has one (CI and the development
# machines have none, so there these tests skip). Run from anywhere:
#
#     sh bench/gpu_check.sh            # PY=python3 by default: a python whose torch has CUDA
#
# It builds djl's extension in place for that python, then runs, with DJL_GPU_CHECK=1 (a
# missing GPU fails instead of skipping):
#   1. the PyTorch engine on every cuda:N torch sees: a batch of 4 goes through one
#      forward on that device and each request gets its own answer; a device index past
#      the GPU count fails to load, naming the count (tests/runtime -m gpu);
#   2. the same engine with CUDA hidden (CUDA_VISIBLE_DEVICES=""): loading on gpu0 is the
#      load failure "CUDA is not available".
# Only djl's runtime side is imported (torch, numpy, the extension): the server's
# packages need not be installed. Exit status 0 only if every check passed, none skipped.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}

"$PY" -c 'import torch; assert torch.cuda.is_available(), "this torch sees no GPU"; \
print("torch", torch.__version__, "GPUs:", [torch.cuda.get_device_name(i) for i in \
range(torch.cuda.device_count())])'
"$PY" setup.py -q build_ext --inplace

# -p no:trio: the server's test plugin is not needed (nor perhaps installed) here.
run() {
    log=$(mktemp)
    status=0
    "$PY" -m pytest -q -p no:cacheprovider -p no:trio -o addopts="" -rs "$@" \
        tests/runtime/test_torch_engine.py >"$log" 2>&1 || status=$?
    cat "$log"
    if [ "$status" -ne 0 ]; then
        echo "gpu_check: failed ($*)" >&2
        exit "$status"
    fi
    if grep -q "skipped" "$log"; then
        echo "gpu_check: a check was skipped ($*)" >&2
        exit 1
    fi
}

DJL_GPU_CHECK=1 run -m gpu
CUDA_VISIBLE_DEVICES="" run -k "gpu_without_cuda"
echo "gpu_check: all passed"
