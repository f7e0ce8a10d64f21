#!/bin/bash
# One cell of the Session 10 screen (docs/methods.md): cmi x TEACHER at N images x I steps per round,
# KD as the compute budget plans it for those images (or E KD epochs, a user's --epochs), seed S, no
# noise baseline, 1 thread, nice 10.
# Usage: bash bench/results/s10_cmi/run.sh TEACHER N I S [E]   (N, I empty: the budget's defaults)
set -e
T=$1; N=$2; I=$3; S=${4:-0}; E=$5
export DATAFREE_SUITE=/work/cache/suite OMP_WAIT_POLICY=PASSIVE PYTHONPATH=.
args=(); tag=cmi_${T}_default_s${S}
if [ -n "$N" ]; then args+=(--num-images "$N" --iterations "$I"); tag=cmi_${T}_n${N}_i${I}_s${S}; fi
if [ -n "$E" ]; then args+=(--epochs "$E"); tag=${tag}_e${E}; fi
nice -n 10 /work/main/.venv/bin/python bench/fidelity.py --teachers "$T" --methods cmi --no-baseline \
    --threads 1 --seed "$S" "${args[@]}" --out bench/results/s10_cmi --tag "$tag" \
    > "bench/results/s10_cmi/$tag.log" 2>&1
