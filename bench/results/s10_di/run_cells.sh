#!/bin/bash
# Session 10: the DeepInversion cells on the 32 px teachers, one process at a time (1 thread, nice 10).
cd "$(dirname "$0")/../../.." || exit 1
for T in "$@"; do
  DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE nice -n 10 \
    /work/main/.venv/bin/python bench/fidelity.py --teachers "$T" --methods deepinversion --no-baseline \
    --threads 1 --seed 0 --out bench/results/s10_di --tag "di_$T" > "bench/results/s10_di/fidelity_di_$T.log" 2>&1
done
