#!/bin/bash
# Tiny runs of four jobs (distill --method deepinversion, distill --method dafl, distill --pool with
# fast, quantize W4A8 with 1 epoch of fine-tuning) in one code tree; prints each model's sha256.
# Run it in two trees (e.g. one from `git archive REV | tar -x -C DIR`) to see whether a refactor
# changed any number: usage: bench/refactor_equivalence.sh CODE_DIR OUT_DIR
set -u
C=$1; O=$2; rm -rf $O; mkdir -p $O
cd $C
export PYTHONPATH=$C OMP_WAIT_POLICY=PASSIVE
PY=/work/main/.venv/bin/python
$PY -m cli distill --method deepinversion -n 16 --set iterations=3 --set batch_size=8 --out $O/di --epochs 1 --steps-per-epoch 2 --kd-batch-size 16 --threads 1 -q >/dev/null 2>&1 || echo "di failed"
$PY -m cli distill --method dafl --out $O/dafl --epochs 1 --kd-batch-size 16 --steps-per-epoch 10 --threads 1 -q >/dev/null 2>&1 || echo "dafl failed"
$PY -m cli distill --method fast --pool --out $O/pool --epochs 1 --steps-per-epoch 20 --set iterations=2 --threads 1 -q >/dev/null 2>&1 || echo "pool failed"
$PY -m cli quantize --calib noise --calib-images 16 --finetune-epochs 1 -w 4 -a 8 --out $O/q --threads 1 -q >/dev/null 2>&1 || echo "q failed"
for d in di dafl pool q; do echo "$d $(sha256sum $O/$d/model.safetensors | cut -c1-16)"; done
