#!/usr/bin/env bash
# The prepared GPU check (issue 13): one run on an H100/H200 machine, under 8 minutes, everything logged.
#
#   bench/gpu_check.sh [OUT_DIR]                  # default OUT_DIR: gpu_check_out/
#
# Needs python3 with a CUDA build of torch, transformers, tokenizers, sentencepiece, safetensors, pillow
# (onnx/onnxscript/onnxruntime-gpu optional; no ROS). Uses ./env.sh when present, else the checkout on
# PYTHONPATH. The fixtures come from ../shared or $EVF_SAM_SHARED_DIR. With this workplace's device tool
# (../shared does not travel), first, on the developer machine, in the repository root (.gitignore has it):
#   mkdir -p .gpu_shared && cp -r ../shared/fixtures ../shared/reference .gpu_shared/     # ~25 MB
# then run with carry [".gpu_shared"] and a timeout of 600 s:
#   EVF_SAM_SHARED_DIR=.gpu_shared bench/gpu_check.sh $OUT
#
# Steps (each under its own time limit, so one slow step cannot eat the others'):
#   1. the CUDA-marked tests (fp32/fp16/bf16 vs CPU fp32 masks; ORT CUDA EP if installed)      ~1 min
#   2. bench_model: full-size EVF-SAM2 and EVF-SAM at 1280x720, 1/4/16 prompts, fp16           ~2 min
#   3. the same for bf16 (EVF-SAM2)                                                            ~1 min
#   4. torch.compile (inductor, default mode) fp16, EVF-SAM2                                   ~2 min
#   5. onnxruntime CUDA / TensorRT EPs on the exported EVF-SAM2 graphs, where installed        ~1 min
#   6. trtexec on the exported image encoder (fp16), where trtexec exists
# GPU memory: the "peak GiB" column of bench_model (torch.cuda.max_memory_allocated).
# The official EVF-SAM code is not part of this repository, so its fp16-autocast numbers are not measured here.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${1:-gpu_check_out}" && cd "${1:-gpu_check_out}" && pwd)"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 EVF_SAM_FAIL_ON_SKIP=0
if [ -f env.sh ]; then . ./env.sh; else export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; fi
PY="${PYTHON:-python3}"
START=$(date +%s)

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo -e "\n===== $name (limit ${limit}s, at +$(( $(date +%s) - START ))s) =====" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -e '^W[0-9]* ' -e 'torchvision is not installed' | tee -a "$LOG"
  echo "----- $name: exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}

{ date -u; nvidia-smi; "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
"gpu", torch.cuda.get_device_name(0), "transformers", transformers.__version__)'
  "$PY" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' 2>&1 | tail -1
  command -v trtexec || echo "trtexec: not installed"; } 2>&1 | tee "$LOG"

"$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
  || { echo "gpu_check: torch sees no CUDA GPU; nothing to measure" | tee -a "$LOG"; exit 2; }
step "1 CUDA tests" 80 "$PY" -m pytest test/test_model_cuda.py -m cuda -q -s -p no:cacheprovider
step "2 torch eager fp16, full size" 180 "$PY" bench/bench_model.py --models evf-sam2,evf-sam --device cuda \
  --dtype fp16 --prompts 1,4,16 --repeats 20 --warmup 3
step "3 torch eager bf16, EVF-SAM2" 60 "$PY" bench/bench_model.py --models evf-sam2 --device cuda --dtype bf16 \
  --prompts 1,4,16 --repeats 20 --warmup 3
step "4 torch.compile fp16, EVF-SAM2" 110 "$PY" bench/bench_model.py --models evf-sam2 --device cuda --dtype fp16 \
  --prompts 1,4 --repeats 20 --warmup 3 --compile default

if "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' \
    2>/dev/null; then
  step "5 onnxruntime CUDA/TensorRT EP, EVF-SAM2" 150 "$PY" bench/bench_backends.py --models evf_sam2_hieral \
    --variants ort-cuda,ort-trt --prompts 1,4,16 --repeats 10 --threads 8 --work-dir "$OUT/work"
else
  echo -e "\n===== 5 onnxruntime CUDA/TensorRT EP: skipped (no CUDAExecutionProvider; install onnxruntime-gpu)" \
    | tee -a "$LOG"
fi
if command -v trtexec >/dev/null && [ -f "$OUT/work/evf_sam2_hieral-onnx/image_encoder.onnx" ]; then
  step "6 trtexec image encoder fp16" 120 trtexec --onnx="$OUT/work/evf_sam2_hieral-onnx/image_encoder.onnx" \
    --fp16 --saveEngine="$OUT/work/image_encoder.plan"
fi
rm -rf "$OUT/work/"*/model.safetensors 2>/dev/null
echo -e "\ngpu_check: done in $(( $(date +%s) - START )) s; log: $LOG" | tee -a "$LOG"
