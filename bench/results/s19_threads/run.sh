#!/bin/bash
# Session 19: what a second thread buys the budgeted backends' steps, per suite teacher (idle machine, one
# process at a time, 1 and 2 threads alternated per teacher). bench/cell_cost.py --clock wall.
cd "$(dirname "$0")/../../.." || exit 2
D=bench/results/s19_threads
for t in resnet18_32 mobilenetv2_32 vgg8_bn_32 wrn40_2_32; do
  for n in 1 2; do
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/cell_cost.py --teachers $t --methods nayer,cmi,deepinversion,fast \
      --suite "${DATAFREE_SUITE:-/work/cache/suite}" --steps 3 --threads $n --clock wall --out $D/${t}_t$n.json
  done
done
