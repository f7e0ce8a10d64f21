#!/bin/bash
# usage: wcell.sh METHOD  (wrn40_2_32 at compress defaults, session 11)
cd /work/main
m=$1
DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/fidelity.py --teachers wrn40_2_32 --methods $m --no-baseline --threads 1 --seed 0 --out bench/results/s11_wrn --tag ${m}_wrn40_2_32 > /tmp/s11/wrn_$m.log 2>&1
echo "rc=$?" >> /tmp/s11/wrn_$m.log
