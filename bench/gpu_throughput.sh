#!/usr/bin/env bash
# The GPU figures of the README's throughput table, in one run on a CUDA machine
# (each bench prints one JSON line; the README quotes them with the machine and date):
#   bash bench/gpu_throughput.sh 2>&1 | tee gpu_throughput.log
# Needs the project's dependencies importable (make install, or PYTHONPATH with them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
CORES="$(nproc)"
nvidia-smi -L
# NVDEC through ffmpeg: does it decode here, and how fast against software
"$PY" bench/hwdecode_check.py
# the scan against its stages: ViT-B-32 on the GPU fed by every core, exact then key frames
for sampler in exact keyframes; do
  "$PY" bench/mine_throughput.py --device cuda --embedder open_clip:ViT-B-32 \
    --videos "$((CORES * 2))" --seconds 120 --batch-size 256 --scan-workers "$CORES" \
    --sampler "$sampler" --hwaccel auto --no-fixed-cost
done
# the trainer's real loop (mel cache warm) against its in-memory step
"$PY" bench/train_throughput.py --config small --device cuda --precision bf16 \
  --batch-size 128 --clips 2048 --num-workers "$((CORES / 2))"
