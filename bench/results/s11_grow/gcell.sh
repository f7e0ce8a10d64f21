#!/bin/bash
# usage: gcell.sh TEACHER METHOD TAG ARGS...  (session 11: images the budget's room could hold)
cd /work/main
t=$1; m=$2; tag=$3; shift 3
DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/fidelity.py --teachers $t --methods $m --no-baseline --threads 1 --out bench/results/s11_grow --tag $tag "$@" > /tmp/s11/$tag.log 2>&1
echo "rc=$?" >> /tmp/s11/$tag.log
