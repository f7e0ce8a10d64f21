#!/usr/bin/env bash
# The one script to run when a GPU is lent (under 10 minutes on one H100/H200-class GPU).
#
#   bash bench/gpu_check.sh              # from anywhere, on a machine with a GPU
#   bash bench/gpu_check.sh --dry-run    # every code path on the CPU with tiny sizes (seconds; tests use it)
#
# 1. bench/gpu_check.py: DeepInversion step vs bare teacher forward+backward in fp32/bf16/fp16 for a
#    torchvision ResNet-50 at 224 (batch 64) and a CIFAR ResNet-34 at 32 (batch 128), KD images/s and
#    peak memory per precision, and `datafree distill` under torchrun on 2 GPUs when there are 2.
#    Writes bench/results/gpu.json (GPU_CHECK_OUT overrides) and prints the tables.
# 2. (GPU only) the DeepInversion step through the real CLI at batch 128, fp32 and bf16:
#    bench/results/gpu_cli_<precision>.json.
# 3. (GPU only) the earlier all-backend overhead table: bench/results/gpu/synthesis_overhead.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export OMP_WAIT_POLICY=PASSIVE
PY="${PYTHON:-python}"
if [[ ! -x "$(command -v "$PY")" && -x .venv/bin/python ]]; then PY=.venv/bin/python; fi

if [[ "${1:-}" == "--dry-run" || "${DEVICE:-}" == "cpu" ]]; then
  timeout 240 "$PY" bench/gpu_check.py --dry-run
  exit 0
fi

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script is for GPU machines (--dry-run runs the CPU path)")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p bench/results/gpu

timeout 300 "$PY" bench/gpu_check.py
for p in fp32 bf16; do
  timeout 90 "$PY" bench/synthesis_overhead.py --cli --device cuda --teachers resnet18_32 --batches 128 \
    --reps 3 --steps 20 --threads 4 --precision "$p" --out "bench/results/gpu_cli_$p.json" || echo "CLI timing ($p) failed or timed out"
done
timeout 90 "$PY" bench/synthesis_overhead.py --device cuda --reps 20 --no-memory \
  --out bench/results/gpu/synthesis_overhead.json || echo "overhead table failed or timed out"
