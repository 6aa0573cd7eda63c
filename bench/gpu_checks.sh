#!/usr/bin/env bash
# Issue 16's GPU checks in one call of a lent GPU machine (under 10 minutes on an H100/H200):
# the training-speed bench on the GPU, the GPU tests, the default 99% recipe trained on the
# GPU, and the sparsity ladder on the GPU engines. A lent machine has no package registry, so
# this runs from the working tree on the machine's own torch, numpy and onnxruntime (the
# current-stack profile: no sparseml, no DeepSparse). Results and one log go to $OUT
# (default runs/gpu): at most 8 files, flat, as the device tool brings back. Each step has its
# own time limit, so one that hangs or fails leaves the others' results.
#
#   bash bench/gpu_checks.sh                  # all four; then record $OUT/* in bench/results/ (training.md)
#   bash bench/gpu_checks.sh tests ladder     # some of: speed tests compress ladder
#   LADDER_LIMIT=560 bash bench/gpu_checks.sh ladder   # the ladder alone, with a 10-minute call's time
set -u
all_steps="speed tests compress ladder"
steps=${*:-$all_steps}
for s in $steps; do
    [[ " $all_steps " == *" $s "* ]] || { echo "bench/gpu_checks.sh: unknown step '$s' (one of: $all_steps)" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if ! $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "bench/gpu_checks.sh: $py has no torch that sees a CUDA GPU (PYTHON=... picks another)" >&2
    exit 2
fi
out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NM_DISABLE_ANALYTICS=1
export SPARSEBIAS_CACHE=${SPARSEBIAS_CACHE:-/tmp/sparsebias-cache}
log=$out/gpu_checks.log
work=$(mktemp -d)
{ nvidia-smi; $py -c "import platform, numpy, onnx, onnxruntime, torch
print('python', platform.python_version(), '| torch', torch.__version__, 'CUDA', torch.version.cuda,
      '| numpy', numpy.__version__, '| onnx', onnx.__version__, '| onnxruntime', onnxruntime.__version__,
      onnxruntime.get_available_providers(), '| GPU', torch.cuda.get_device_name(), '| cores', __import__('os').cpu_count())"
} >"$out/env.txt" 2>&1

step() {   # step KEY LIMIT_S NAME COMMAND...: run (when KEY was asked for), log, and say how it ended
    local key=$1 limit=$2 name=$3 started=$SECONDS
    [[ " $steps " == *" $key "* ]] || return 0
    shift 3
    echo "== $name (limit ${limit} s)" | tee -a "$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    echo "== $name: exit $?, $((SECONDS - started)) s" | tee -a "$log"
}

step speed 80 "training speed" $py bench/training_speed.py --device cuda --precisions fp32,bf16,fp16 --sizes 64,128 \
    --batches 256,512 --rounds 2 --steps 10 --out "$out/training_speed_cuda.json"
step tests 130 "GPU tests" $py -m pytest -q -p no:cacheprovider -o addopts=-ra \
    tests/test_devices.py tests/test_engines.py tests/test_semistructured.py
step compress 100 "compress, default 99% recipe, on the GPU" $py -m sparsebias compress --recipe recipes/resnet18_99.yaml \
    --device cuda --out "$work"
[ -f "$work/resnet18_99/manifest.json" ] && cp "$work/resnet18_99/manifest.json" "$out/compress_99_cuda_manifest.json"
# the GPU engines; bench also times every rung on its onnxruntime baseline, on the CPU, which at
# 224 px and batch 256 takes most of this step (on the H200: 64 px in 68 s, 224 px unfinished in
# 100 s, then at step 55 of 128 after 103 s). Alone in a call, give it the call: LADDER_LIMIT=560.
step ladder "${LADDER_LIMIT:-280}" "ladder, GPU engines" $py bench/ladder.py --arch resnet18 --size 64 224 --batch 256 --duration 1 \
    --warmup 0.5 --engines torch-cuda,torch-cuda-bf16,torch-cuda-sparse --models "$work/models" --out "$out/ladder_gpu"
rm -rf "$work"
