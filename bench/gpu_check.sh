#!/usr/bin/env bash
# One-GPU check of stage-1 pretraining, under 8 minutes: BYOL ResNet-50 at 224 px (bf16, channels-last,
# 8 loader workers) with transform.device cpu and accelerator (images/s, data wait), MoCo v3 ViT-S/16
# images/s, a 1-GPU DDP smoke run, and the peak GPU memory of each; ONE markdown table on stdout and in
# bench/results/gpu_check.md. Needs only the checkout: it makes .venv (`make venv`) when missing and
# draws the sample shards at 256 px in a temporary folder. Without a GPU it stops at once with one line
# and exit status 2. CI does not run it.
#
#     bash bench/gpu_check.sh [--steps 60 --workers 8 ...]   # options: .venv/bin/python bench/gpu_check.py -h
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
    echo "gpu_check: no GPU: nvidia-smi is missing or lists no GPU; run this on a GPU machine" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    make venv
fi
export PYTHONHASHSEED=0 HF_HUB_OFFLINE=1
exec .venv/bin/python bench/gpu_check.py "$@"
