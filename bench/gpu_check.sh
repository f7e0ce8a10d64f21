#!/usr/bin/env bash
# Run the speed benchmarks on CUDA with small budgets (under 5 minutes on one H100-class GPU).
#
#   bash bench/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# Writes bench/results/gpu/{synthesis_overhead.json, time_to_accuracy.{csv,json,png}} and prints
# both markdown tables. Not run in CI (no GPU there).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export OMP_WAIT_POLICY=PASSIVE
PY="${PYTHON:-python}"
OUT=bench/results/gpu
mkdir -p "$OUT"

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script is for GPU machines")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. Step overhead against a bare teacher forward+backward: every backend, 30 interleaved rounds.
timeout 100 "$PY" bench/synthesis_overhead.py --device cuda --reps 30 --out "$OUT/synthesis_overhead.json"

# 2. Time to 95% / 98% of the teacher's accuracy, capped at 20 s of clock per backend (about 6 backends).
timeout 180 "$PY" bench/time_to_accuracy.py --device cuda --time-cap 20 --out "$OUT/time_to_accuracy"
